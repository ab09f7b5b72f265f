"""Evaluation: metrics and significance tests, walk-forward splits, the backtester and the HTML report."""
