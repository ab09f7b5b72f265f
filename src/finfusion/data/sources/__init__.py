"""Data sources: each turns one external layout into canonical raw frames for the ingest pipeline."""
