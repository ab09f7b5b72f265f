"""Torch datasets that build the sample contract (see contract.py) from the lake."""
