"""Experiments: config in, datasets, trained runs, forecasts and walk-forward evaluations out."""
