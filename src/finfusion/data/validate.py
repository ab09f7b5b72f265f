"""Row-level checks of raw input frames. Every failure raises `DataValidationError` naming file, row and field.

Raw frames carry two provenance columns, `_file` and `_row` (1-based data row in that file, header not counted),
and `rename` maps canonical column names back to the user's names so messages use the names the user wrote.
"""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl

from finfusion.data.lake import SYMBOL_RE
from finfusion.data.schema import SOURCE_FILE, SOURCE_ROW
from finfusion.errors import DataValidationError

#: Spellings of a missing value in text files.
MISSING_TOKENS = ("", "null", "NULL", "None", "NA", "N/A", "-")


def fail_at(df: pl.DataFrame, mask: pl.Series | pl.Expr, field: str, message: str, rename: Mapping[str, str]) -> None:
    """Raise for the first row of `df` where `mask` is true; `message` may use {value} for that row's field value."""
    found = mask.any() if isinstance(mask, pl.Series) else df.select(mask.any()).item()
    if not found:
        return
    hits = df.filter(mask)
    first = hits.row(0, named=True)
    value = first.get(field)
    raise DataValidationError(
        message.format(value=repr(value) if isinstance(value, str) else str(value), count=hits.height),
        file=first.get(SOURCE_FILE),
        row=first.get(SOURCE_ROW),
        field=rename.get(field, field),
    )


def require_columns(df: pl.DataFrame, required: list[str], file: str, rename: Mapping[str, str]) -> None:
    missing = [c for c in required if c not in df.columns]
    if missing:
        found = [rename.get(c, c) for c in df.columns if c not in (SOURCE_FILE, SOURCE_ROW)]
        raise DataValidationError(
            f"missing required column(s) {[rename.get(c, c) for c in missing]}; the file has {found}"
            " (map other names with --map THEIRS=OURS)",
            file=file,
            field=rename.get(missing[0], missing[0]),
        )


def missing_value_mask(column: str, dtype: pl.DataType) -> pl.Expr:
    if dtype == pl.String:
        return pl.col(column).is_null() | pl.col(column).str.strip_chars().is_in(MISSING_TOKENS)
    return pl.col(column).is_null()


def parse_numbers(df: pl.DataFrame, columns: list[str], rename: Mapping[str, str]) -> pl.DataFrame:
    """Cast `columns` to Float64; missing values (empty, 'null', 'NA', ...) become null.

    Raises on text that is not a number and on columns of a non-numeric type (dates, booleans, lists).
    """
    casts = []
    for col in columns:
        if col not in df.columns:
            continue
        dtype = df.schema[col]
        if dtype == pl.String:
            parsed = df[col].cast(pl.Float64, strict=False)
            retry = parsed.is_null() & df[col].is_not_null()
            if retry.any():  # spaces around numbers, or spellings of a missing value: only on the rows that need it
                rows = df.filter(retry)
                stripped = rows[col].str.strip_chars().cast(pl.Float64, strict=False)
                missing = rows.select(missing_value_mask(col, dtype)).to_series()
                fail_at(rows, stripped.is_null() & ~missing, col, "value {value} is not a number", rename)
                parsed = parsed.scatter(retry.arg_true(), stripped)
        elif dtype.is_numeric():
            parsed = df[col].cast(pl.Float64)
        else:
            raise DataValidationError(
                f"column has type {dtype}, expected numbers", file=_first(df, SOURCE_FILE), field=rename.get(col, col)
            )
        casts.append(parsed.alias(col))
    return df.with_columns(casts)


def check_prices(df: pl.DataFrame, rename: Mapping[str, str], *, price_columns: list[str]) -> None:
    """Finite, strictly positive prices; finite non-negative volume; high >= low. Nulls are checked elsewhere."""
    for col in price_columns:
        if col in df.columns:
            fail_at(df, ~pl.col(col).is_finite(), col, "value {value} is not finite (NaN or inf)", rename)
            fail_at(df, pl.col(col) <= 0, col, "price {value} must be > 0", rename)
    if "volume" in df.columns:
        fail_at(df, ~pl.col("volume").is_finite(), "volume", "value {value} is not finite (NaN or inf)", rename)
        fail_at(df, pl.col("volume") < 0, "volume", "volume {value} is negative", rename)
    if "high" in df.columns and "low" in df.columns:
        fail_at(df, pl.col("high") < pl.col("low"), "high", "high {value} is below low", rename)


def check_symbols(df: pl.DataFrame, rename: Mapping[str, str]) -> None:
    fail_at(df, pl.col("symbol").is_null() | (pl.col("symbol") == ""), "symbol", "symbol is empty", rename)
    bad = ~pl.col("symbol").str.contains(SYMBOL_RE.pattern)
    fail_at(
        df, bad, "symbol", "symbol {value} has characters other than letters, digits, '.', '_', '-', '^', '='", rename
    )


def order_problems(df: pl.DataFrame, key: list[str], time_column: str) -> tuple[pl.Series, pl.Series]:
    """(duplicate [N], out of order [N]) masks: a row repeating an earlier row's key, or earlier in time than the
    previous row of the same key group in the same file. Both are found by stable sorts and neighbour comparisons."""
    group = [c for c in key if c != time_column]
    frame = df.select(
        SOURCE_FILE, *group, pl.col(time_column).to_physical().alias("__t"), pl.int_range(pl.len()).alias("__i")
    )

    def neighbour_flags(by: list[str], flag: pl.Expr) -> pl.Series:
        ordered = frame.sort(by, maintain_order=True)
        same = pl.all_horizontal([pl.col(c) == pl.col(c).shift(1) for c in by if c != "__t"])
        hits = ordered.select("__i", (same & flag).fill_null(False).alias("hit"))
        return hits.sort("__i")["hit"]

    unsorted = neighbour_flags([SOURCE_FILE, *group], pl.col("__t") < pl.col("__t").shift(1))
    duplicate = neighbour_flags([*group, "__t"], pl.col("__t") == pl.col("__t").shift(1))
    return duplicate, unsorted


def _first(df: pl.DataFrame, column: str) -> str | None:
    return df[column][0] if column in df.columns and df.height else None
