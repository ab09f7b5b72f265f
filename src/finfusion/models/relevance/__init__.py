"""The dual-tower relevance model of seed 004: a context tower, a stock tower and one relevance head per horizon."""
