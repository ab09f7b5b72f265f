"""finfusion: forecast markets from price history and text together."""

__version__ = "0.1.0"
