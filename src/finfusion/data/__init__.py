"""Data layer: schemas, the Parquet lake and its catalog, calendars, cleaning and sources."""
