"""Derived views of the lake: bar features, price-action tokens, text embeddings and their alignment to bars."""
