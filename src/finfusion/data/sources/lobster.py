"""Limit-order-book snapshots in the LOBSTER format (lobsterdata.com): one trading day of one symbol is a message file
and an orderbook file, both CSV without a header, row i of one describing the event that left the book of row i of
the other.

    message:   time (seconds after midnight, local), event type (1-7), order id, size, price (dollars x 10,000),
               direction (1 buy, -1 sell)
    orderbook: ask price 1, ask size 1, bid price 1, bid size 1, ask price 2, ... (4 x levels columns, up to 100
               levels); an empty level is the dummy price 9999999999 (ask) or -9999999999 (bid) with size 0

Rows become the lake's `orderbooks` table (data/schema.py ORDERBOOKS): symbol, ts (UTC), event (row number within
the day), event_type, and per side the prices (dollars) and sizes of the levels as lists (null at an empty level).
Refused, each with one line naming file, row and field and the lake left as it was: files of different row counts,
a row of the wrong width, text that is not a number, times that go backwards, an event type outside 1-7, negative
sizes, a price that is not positive, and a crossed book (best ask at or below best bid).

Written by hand: no maintained Python package reads LOBSTER files with validation; the format is two plain CSVs.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import polars as pl

from finfusion.data.schema import ORDERBOOKS
from finfusion.errors import DataValidationError

PRICE_SCALE = 10_000.0
DUMMY_ASK = 9_999_999_999
DUMMY_BID = -9_999_999_999
MESSAGE_FIELDS = ("time", "event_type", "order_id", "size", "price", "direction")
SIDES = ("ask_price", "ask_size", "bid_price", "bid_size")
MAX_LEVELS = 100


@dataclass(frozen=True)
class LobsterDay:
    """The files of one symbol's day and how to read them (`tz`: the exchange's time zone)."""

    message: Path
    orderbook: Path
    symbol: str
    day: date
    tz: str = "America/New_York"


def _read(path: Path, width: int | None) -> np.ndarray:
    """The file's rows as a float matrix, refusing rows of another width and text that is not a number."""
    lines = path.read_text(encoding="utf-8").splitlines()
    rows = [line.split(",") for line in lines if line.strip()]
    if not rows:
        raise DataValidationError("the file has no rows", file=path)
    expected = width or len(rows[0])
    for number, fields in enumerate(rows, start=1):
        if len(fields) != expected:
            raise DataValidationError(f"{len(fields)} fields, expected {expected}", file=path, row=number)
    try:
        return np.array(rows, dtype=np.float64)
    except ValueError:
        for number, fields in enumerate(rows, start=1):
            for column, text in enumerate(fields, start=1):
                try:
                    float(text)
                except ValueError:
                    raise DataValidationError(
                        f"{text!r} is not a number", file=path, row=number, field=f"column {column}"
                    ) from None
        raise


def _first(mask: np.ndarray) -> int | None:
    hits = np.flatnonzero(mask)
    return None if hits.size == 0 else int(hits[0])


def read_lobster(day: LobsterDay) -> pl.DataFrame:
    """The day's ORDERBOOKS rows (module docstring); raises DataValidationError on the first bad row."""
    messages = _read(day.message, len(MESSAGE_FIELDS))
    book = _read(day.orderbook, None)
    if book.shape[1] % 4 or not 1 <= book.shape[1] // 4 <= MAX_LEVELS:
        raise DataValidationError(f"{book.shape[1]} columns: expected 4 per level, 1 to {MAX_LEVELS} levels",
                                  file=day.orderbook, row=1)  # fmt: skip
    if len(messages) != len(book):
        raise DataValidationError(
            f"{len(messages)} messages but {len(book)} book rows: the files must describe the same events",
            file=day.orderbook, row=min(len(messages), len(book)) + 1,
        )  # fmt: skip
    checks = [
        (day.message, np.diff(messages[:, 0], prepend=messages[0, 0]) < 0, "time", "time goes backwards"),
        (day.message, ~np.isin(messages[:, 1], np.arange(1, 8)), "event_type", "event type outside 1-7"),
        (day.message, messages[:, 3] < 0, "size", "negative size"),
    ]
    sides = {name: book[:, i::4] for i, name in enumerate(SIDES)}
    empty_ask, empty_bid = sides["ask_price"] >= DUMMY_ASK, sides["bid_price"] <= DUMMY_BID
    for name in ("ask_size", "bid_size"):
        checks.append((day.orderbook, (sides[name] < 0).any(axis=1), name, f"negative {name.replace('_', ' ')}"))
    bad_price = ((sides["ask_price"] <= 0) & ~empty_ask) | ((sides["bid_price"] <= 0) & ~empty_bid)
    checks.append((day.orderbook, bad_price.any(axis=1), "price", "a price that is not positive"))
    crossed = ~empty_ask[:, 0] & ~empty_bid[:, 0] & (sides["ask_price"][:, 0] <= sides["bid_price"][:, 0])
    checks.append((day.orderbook, crossed, "ask_price_1", "crossed book: best ask at or below best bid"))
    for path, mask, field, message in checks:
        row = _first(mask)
        if row is not None:
            raise DataValidationError(message, file=path, row=row + 1, field=field)
    midnight = pl.datetime(day.day.year, day.day.month, day.day.day, time_zone=day.tz)
    local = pl.select(midnight + pl.duration(microseconds=pl.Series(np.round(messages[:, 0] * 1e6).astype(np.int64))))
    prices = {
        "ask_price": np.where(empty_ask, np.nan, sides["ask_price"] / PRICE_SCALE),
        "bid_price": np.where(empty_bid, np.nan, sides["bid_price"] / PRICE_SCALE),
    }
    frame = pl.DataFrame(
        {
            "symbol": [day.symbol] * len(book),
            "ts": local.to_series().dt.convert_time_zone("UTC"),
            "event": np.arange(1, len(book) + 1, dtype=np.int64),
            "event_type": messages[:, 1].astype(np.int64),
            **{name: pl.Series(values.tolist(), dtype=pl.List(pl.Float64)) for name, values in prices.items()},
            "ask_size": pl.Series(sides["ask_size"].tolist(), dtype=pl.List(pl.Float64)),
            "bid_size": pl.Series(sides["bid_size"].tolist(), dtype=pl.List(pl.Float64)),
        }
    ).with_columns(pl.col("ask_price", "bid_price").list.eval(pl.element().fill_nan(None)))
    return ORDERBOOKS.conform(frame)
