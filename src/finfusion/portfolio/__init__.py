"""The portfolio family's parts (seed 002): reading its inputs from the lake (`inputs`) and turning a model's logits
into top-k weights (`predict`). The family itself, with training, prediction and evaluation through the one pipeline,
is `families/portfolio.py`; the comparison against equal weights and the price-only twin is
`families/portfolio_comparison.py`; the weights backtest is `evaluation/weights_backtest.py`.
"""
