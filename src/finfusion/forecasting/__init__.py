"""The forecast family's parts (families/forecast.py): its windows from the lake (`data`, `texts`), running a model
over windows (`forecast`), prediction spans and exports (`predict`), scoring (`scoring`), walk-forward evaluation
with refit (`walk_forward`) and its results page (`results`)."""
