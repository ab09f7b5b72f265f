"""The bars' optional `label` column: the user's own class of each bar (`--map THEIRS=label`), e.g. 1 when the day
closed up and 0 (or -1) otherwise. Stored as given, never recoded: -1, 0 or 1, or null where the cell is empty.

Integers only: a text cell must be an integer (`1`, `-1`, `+1`, or `1.0` as pandas writes an integer column that has
missing values); `up`, `1.5`, `1e0` or a Boolean column are refused, naming file, row, field and the user's text.
"""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl

from finfusion.data.schema import SOURCE_FILE
from finfusion.data.validate import fail_at, missing_value_mask
from finfusion.errors import DataValidationError

LABEL = "label"
LABEL_VALUES = (-1, 0, 1)
#: An integer as text: optional sign, digits, and optionally a fraction of zeros only.
INTEGER_TEXT = r"^[+-]?\d+(?:\.0*)?$"


def parse_labels(df: pl.DataFrame, rename: Mapping[str, str]) -> pl.DataFrame:
    """`df` with its `label` column (when it has one) as Int64 in {-1, 0, 1}; missing values become null.

    Raises DataValidationError on the first value that is not an integer or not one of -1, 0, 1.
    """
    if LABEL not in df.columns:
        return df
    dtype = df.schema[LABEL]
    column = pl.col(LABEL)
    if dtype == pl.String:
        text = column.str.strip_chars()
        given = ~missing_value_mask(LABEL, dtype)
        fail_at(df, given & ~text.str.contains(INTEGER_TEXT), LABEL, "label {value} is not an integer", rename)
        parsed = pl.when(given).then(text.str.replace(r"\.0*$", "").cast(pl.Int64, strict=False))
    elif dtype.is_integer():
        parsed = column.cast(pl.Int64, strict=False)
        given = column.is_not_null()
    elif dtype.is_float():
        given = column.is_not_null()
        whole = column.is_finite() & (column == column.round(0))
        fail_at(df, given & ~whole, LABEL, "label {value} is not an integer", rename)
        parsed = column.cast(pl.Int64, strict=False)
    else:
        file = df[SOURCE_FILE][0] if SOURCE_FILE in df.columns and df.height else None
        raise DataValidationError(
            f"column has type {dtype}, expected integer labels -1, 0 or 1", file=file, field=rename.get(LABEL, LABEL)
        )
    df = df.with_columns(parsed.alias("__label"))
    outside = given & ~pl.col("__label").is_in(LABEL_VALUES).fill_null(False)
    fail_at(df, outside, LABEL, "label {value} must be -1, 0 or 1", rename)
    return df.with_columns(pl.col("__label").alias(LABEL)).drop("__label")
