"""Order checks shared by validation and the lake writer."""

from __future__ import annotations

import polars as pl


def strictly_ordered(table: pl.DataFrame, columns: list[str]) -> bool:
    """True when rows strictly increase in the lexicographic order of `columns`: sorted and free of duplicate keys,
    so merging a fresh partition can skip its de-duplication and sort (the common case of a validated ingest)."""
    if table.height < 2:
        return True
    greater, equal = pl.lit(False), pl.lit(True)
    for column in columns:
        value = pl.col(column).to_physical() if table.schema[column].is_temporal() else pl.col(column)
        greater = greater | (equal & (value > value.shift(1)))
        equal = equal & (value == value.shift(1))
    return bool(table.select(greater.slice(1).all()).item())
