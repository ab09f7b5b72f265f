"""Exogenous series joined as of each bar's close (finfusion.features.exogenous): never from the future."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from finfusion.errors import FinfusionError
from finfusion.features.exogenous import join_asof_exogenous, series_from_bars


def _at(day: int, hour: int = 21) -> datetime:
    return datetime(2021, 3, day, hour, tzinfo=UTC)


FEATURES = pl.DataFrame(
    {"symbol": ["A", "A", "A", "B", "B"], "ts": [_at(1), _at(2), _at(5), _at(1), _at(3)], "x": [1.0, 2, 3, 4, 5]}
)


def test_value_known_at_or_before_the_bar_never_after() -> None:
    exo = pl.DataFrame({"ts": [_at(1, 20), _at(2), _at(2, 22), _at(4)], "vix": [10.0, 20.0, 30.0, 40.0]})
    got = join_asof_exogenous(FEATURES, exo, "exo")
    # A@1 sees 20:00 (not 21:00+); A@2 sees the value stamped at its very close; 22:00 is after it
    assert got["exo_vix"].to_list() == [10.0, 20.0, 40.0, 10.0, 30.0]
    assert got.select("symbol", "ts", "x").equals(FEATURES)


def test_no_value_before_the_first_exogenous_row() -> None:
    exo = pl.DataFrame({"ts": [_at(2)], "vix": [1.0]})
    assert join_asof_exogenous(FEATURES, exo, "exo")["exo_vix"].to_list() == [None, 1.0, 1.0, None, 1.0]


def test_stale_values_are_left_out() -> None:
    exo = pl.DataFrame({"ts": [_at(1)], "vix": [1.0]})
    got = join_asof_exogenous(FEATURES, exo, "exo", max_staleness=timedelta(days=1))
    assert got["exo_vix"].to_list() == [1.0, 1.0, None, 1.0, None]


def test_per_symbol_series_match_their_own_symbol() -> None:
    exo = pl.DataFrame({"symbol": ["B", "A"], "ts": [_at(1), _at(2)], "sentiment": [-1.0, 0.5]})
    got = join_asof_exogenous(FEATURES, exo, "news")
    assert got["news_sentiment"].to_list() == [None, 0.5, 0.5, -1.0, -1.0]
    assert got.select("symbol", "ts").equals(FEATURES.select("symbol", "ts"))


def test_later_exogenous_rows_do_not_change_earlier_bars() -> None:
    exo = pl.DataFrame({"ts": [_at(1), _at(2), _at(3), _at(4)], "v": [1.0, 2.0, 3.0, 4.0]})
    cut = _at(2)
    changed = exo.with_columns(pl.when(pl.col("ts") > cut).then(pl.col("v") * 100).otherwise(pl.col("v")))
    before = join_asof_exogenous(FEATURES, exo, "e").filter(pl.col("ts") <= cut)
    after = join_asof_exogenous(FEATURES, changed, "e").filter(pl.col("ts") <= cut)
    assert before.equals(after)
    assert not join_asof_exogenous(FEATURES, exo, "e").equals(join_asof_exogenous(FEATURES, changed, "e"))


def test_bad_series_are_errors() -> None:
    with pytest.raises(FinfusionError, match="ts"):
        join_asof_exogenous(FEATURES, pl.DataFrame({"v": [1.0]}), "e")
    with pytest.raises(FinfusionError, match="value column"):
        join_asof_exogenous(FEATURES, pl.DataFrame({"ts": [_at(1)]}), "e")
    with pytest.raises(FinfusionError, match="already exist"):
        join_asof_exogenous(FEATURES, pl.DataFrame({"ts": [_at(1)], "x": [1.0]}), "e").pipe(
            join_asof_exogenous, pl.DataFrame({"ts": [_at(1)], "x": [1.0]}), "e"
        )


def test_series_from_bars_uses_adjusted_closes() -> None:
    bars = pl.DataFrame(
        {
            "symbol": ["I"] * 3,
            "ts": [_at(3), _at(1), _at(2)],
            "close": [50.0, 100.0, 104.0],
            "adj_factor": [1.0, 0.5, 0.5],
        }
    )
    got = series_from_bars(bars)
    assert got["ts"].to_list() == [_at(1), _at(2), _at(3)]
    assert got["ret_1"].to_list() == [None, pytest.approx(math.log(1.04)), pytest.approx(math.log(50 / 52))]
    assert got["log_close"][0] == pytest.approx(math.log(50.0))
    with pytest.raises(FinfusionError, match="one symbol"):
        series_from_bars(bars.with_columns(symbol=pl.Series(["I", "J", "I"])))
