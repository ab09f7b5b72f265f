"""Cleaning: gaps, missing values, corporate actions, volume anomalies, and the pipeline's point-in-time property."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import polars as pl
import pytest

from finfusion.data.calendar import from_us, get_calendar, parse_freq
from finfusion.data.clean import adjust_from_actions, count_gaps, fill_gaps, flag_volume_anomalies
from finfusion.data.ingest import BarOptions, prepare_bars
from finfusion.data.report import IngestReport
from finfusion.data.schema import SOURCE_FILE, SOURCE_ROW

XNYS = get_calendar("XNYS")
DAILY = parse_freq("1d")


def sessions(n: int, first: str = "2014-01-02") -> list[str]:
    start = int(np.searchsorted(XNYS.sessions, np.datetime64(first)))
    return [str(d) for d in XNYS.sessions[start : start + n]]


def raw_bars(
    dates: list[str], closes: list[float | None], volumes: list[float] | None = None, symbol: str = "AAA"
) -> pl.DataFrame:
    volumes = volumes or [1000.0] * len(dates)
    text = [None if c is None else str(c) for c in closes]
    return pl.DataFrame({
        "symbol": [symbol] * len(dates), "ts": dates, "open": text, "high": text, "low": text, "close": text,
        "volume": [str(v) for v in volumes], SOURCE_FILE: ["t.csv"] * len(dates),
        SOURCE_ROW: list(range(1, len(dates) + 1)),
    })  # fmt: skip


def canonical(dates: list[str], closes: list[float]) -> pl.DataFrame:
    idx, _ = XNYS.session_index_of_dates(np.array(dates, dtype="datetime64[D]"))
    return pl.DataFrame({"symbol": "AAA", "ts": from_us(XNYS.closes[idx], "ts"), "open": closes, "high": closes,
                         "low": closes, "close": closes, "volume": 100.0})  # fmt: skip


def test_gaps_are_counted_and_filled_with_previous_close() -> None:
    days = sessions(6)
    bars = canonical([days[0], days[1], days[4], days[5]], [1.0, 2.0, 5.0, 6.0])
    assert count_gaps(bars, XNYS, DAILY) == {"AAA": 2}
    filled, n = fill_gaps(bars, XNYS, DAILY)
    assert n == 2
    assert filled["close"].to_list() == [1.0, 2.0, 2.0, 2.0, 5.0, 6.0]
    assert filled["volume"].to_list() == [100.0, 100.0, 0.0, 0.0, 100.0, 100.0]
    assert filled["filled"].to_list() == [False, False, True, True, False, False]
    assert count_gaps(filled, XNYS, DAILY) == {}


@pytest.mark.parametrize(("policy", "closes", "counts"), [
    ("drop", [1.0, 2.0, 3.0], {"rows_with_missing_values_dropped": 1, "missing_bars_found": 1}),
    ("ffill", [1.0, 2.0, 2.0, 3.0], {"rows_with_missing_values_filled": 1}),
])  # fmt: skip
def test_missing_value_policies(policy: str, closes: list[float], counts: dict[str, int]) -> None:
    report = IngestReport("bars", "t", "test")
    out = prepare_bars(raw_bars(sessions(4), [1.0, 2.0, None, 3.0]), BarOptions("t", missing_bars=policy), report, {})
    assert out["close"].to_list() == closes
    assert dict(report.counts) == counts


def test_split_and_dividend_adjustment_from_actions() -> None:
    days = sessions(5)
    bars = canonical(days, [100.0, 100.0, 50.0, 50.0, 49.0])
    ex = from_us(
        XNYS.opens[XNYS.session_index_of_dates(np.array([days[2], days[4]], dtype="datetime64[D]"))[0]], "ex_ts"
    )
    actions = pl.DataFrame({"symbol": ["AAA", "AAA"], "ex_ts": ex, "split_ratio": [2.0, 1.0], "dividend": [0.0, 1.0]})
    out = adjust_from_actions(bars, actions)
    dividend_factor = 1 - 1.0 / 50.0
    assert out["adj_factor"].to_list() == pytest.approx([0.5 * dividend_factor] * 2 + [dividend_factor] * 2 + [1.0])
    assert out["adj_close"].to_list() == pytest.approx([50 * dividend_factor] * 2 + [50 * dividend_factor] * 2 + [49.0])


def test_volume_anomaly_flag_uses_only_the_past() -> None:
    rng = np.random.default_rng(0)
    n = 120
    volume = np.exp(rng.normal(10, 0.2, n))
    volume[80] *= 50
    bars = canonical(sessions(n), [10.0] * n).with_columns(pl.Series("volume", volume))
    flagged, count = flag_volume_anomalies(bars, threshold=6.0)
    assert flagged["volume_anomaly"][80] and count >= 1
    assert not flagged["volume_anomaly"][:20].any()  # not enough history yet
    perturbed = bars.with_columns(
        pl.when(pl.int_range(pl.len()) > 90).then(pl.col("volume") * 100).otherwise(pl.col("volume")).alias("volume")
    )
    again, _ = flag_volume_anomalies(perturbed, threshold=6.0)
    assert again["volume_anomaly"][:91].equals(flagged["volume_anomaly"][:91])


@pytest.mark.parametrize("cut", [5, 30, 59])
def test_prepared_bars_are_point_in_time(cut: int) -> None:
    """Changing every input row after t (prices, volumes, extra rows) leaves every output row at or before t alone."""
    rng = np.random.default_rng(cut)
    days = sessions(80)
    closes = list(np.round(10 + np.cumsum(rng.normal(0, 0.1, 80)), 4))
    volumes = list(np.exp(rng.normal(10, 0.3, 80)))
    base = prepare_bars(raw_bars(days, closes, volumes), BarOptions("t"), IngestReport("bars", "t", "test"), {})
    changed_closes = closes[: cut + 1] + [c * 2 for c in closes[cut + 1 :]]
    changed_volumes = volumes[: cut + 1] + [v * 1000 for v in volumes[cut + 1 :]]
    other = prepare_bars(
        raw_bars(days, changed_closes, changed_volumes), BarOptions("t"), IngestReport("bars", "t", "test"), {}
    )
    t = base["ts"][cut]
    assert base.filter(pl.col("ts") <= t).equals(other.filter(pl.col("ts") <= t))
    assert not base.equals(other)


def test_daily_bar_timestamps_are_session_closes() -> None:
    out = prepare_bars(
        raw_bars(["2014-11-26", "2014-11-28"], [1.0, 2.0]), BarOptions("t"), IngestReport("bars", "t", "x"), {}
    )
    assert out["ts"].to_list() == [datetime(2014, 11, 26, 21, tzinfo=UTC), datetime(2014, 11, 28, 18, tzinfo=UTC)]
