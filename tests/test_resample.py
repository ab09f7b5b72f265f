"""Tests of session-respecting resampling (finfusion.data.resample)."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from finfusion.data.calendar import US_PER_MINUTE, from_us, get_calendar, parse_freq, to_us
from finfusion.data.resample import resample_bars
from finfusion.data.schema import BARS
from finfusion.errors import DataValidationError, FinfusionError

CAL = get_calendar("XNYS")
FULL_DAY = "2014-11-26"  # Wednesday before Thanksgiving: a full session
HALF_DAY = "2014-11-28"  # day after Thanksgiving: closes at 13:00 New York = 18:00 UTC
NEXT_DAY = "2014-12-01"  # Monday: a full session
DAYS = (FULL_DAY, HALF_DAY, NEXT_DAY)
SYMBOLS = ("AAA", "BBB")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def session_bounds(day: str) -> tuple[int, int]:
    """(open, close) of the session on `day`, int microseconds UTC."""
    idx, is_session = CAL.session_index_of_dates(np.array([day], dtype="datetime64[D]"))
    assert is_session[0], day
    return int(CAL.opens[idx[0]]), int(CAL.closes[idx[0]])


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def us_of(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(microseconds=1)


def at_us(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=us)


def minute_bars(days: tuple[str, ...] = DAYS, symbols: tuple[str, ...] = SYMBOLS, seed: int = 0) -> pl.DataFrame:
    """Every 1-minute bar [sum of session minutes x symbols rows, all BARS columns] of the sessions on `days`."""
    rng = np.random.default_rng(seed)
    ends = np.concatenate(
        [np.arange(o + US_PER_MINUTE, c + 1, US_PER_MINUTE, dtype=np.int64) for o, c in map(session_bounds, days)]
    )
    n = len(ends) * len(symbols)
    close = 100.0 + np.round(rng.standard_normal(n).cumsum(), 2)
    open_ = close + np.round(rng.standard_normal(n) * 0.1, 2)
    return pl.DataFrame(
        {
            "symbol": np.repeat(symbols, len(ends)),
            "ts": from_us(np.tile(ends, len(symbols)), "ts"),
            "open": open_,
            "high": np.maximum(open_, close) + np.round(rng.random(n), 2),
            "low": np.minimum(open_, close) - np.round(rng.random(n), 2),
            "close": close,
            "volume": rng.integers(0, 1000, n).astype(np.float64),
            "adj_close": close * 0.5,
            "adj_factor": np.round(rng.random(n), 3),
            "filled": rng.random(n) < 0.7,
            "volume_anomaly": rng.random(n) < 0.05,
        }
    )


@pytest.fixture(scope="module")
def bars() -> pl.DataFrame:
    return minute_bars()


# --- counts and bin ends --------------------------------------------------------------------------------------------


def test_5m_counts_per_session_follow_from_open_and_close(bars: pl.DataFrame) -> None:
    out = resample_bars(bars, CAL, "5m", from_freq="1m")
    counts = {}
    for day in DAYS:
        open_us, close_us = session_bounds(day)
        in_session = out.filter((pl.col("ts") > at_us(open_us)) & (pl.col("ts") <= at_us(close_us)))
        expected = -(-(close_us - open_us) // (5 * US_PER_MINUTE))  # ceil(session length / 5 minutes)
        for symbol in SYMBOLS:
            counts[(day, symbol)] = in_session.filter(pl.col("symbol") == symbol).height
            assert counts[(day, symbol)] == expected
    assert counts[(FULL_DAY, "AAA")] == 78  # 390 minutes / 5
    assert counts[(HALF_DAY, "AAA")] == 42  # 210 minutes / 5
    assert out.height == 2 * (78 + 42 + 78)


@pytest.mark.parametrize("freq", ["3m", "5m", "7m", "30m", "1h", "1d"])
def test_bin_ends_match_calendar_expected_bar_ends(bars: pl.DataFrame, freq: str) -> None:
    out = resample_bars(bars, CAL, freq, from_freq="1m")
    first, _ = session_bounds(DAYS[0])
    _, last = session_bounds(DAYS[-1])
    expected = CAL.expected_bar_ends(parse_freq(freq), first, last)
    for symbol in SYMBOLS:
        got = to_us(out.filter(pl.col("symbol") == symbol).get_column("ts"))
        np.testing.assert_array_equal(got, expected)


def test_half_day_last_hour_bin_ends_at_early_close(bars: pl.DataFrame) -> None:
    out = resample_bars(bars, CAL, "1h").filter(pl.col("symbol") == "AAA")
    half = out.filter(pl.col("ts").dt.date() == utc("2014-11-28T00:00:00").date())
    assert half.get_column("ts").to_list() == [
        utc("2014-11-28T15:30:00"),
        utc("2014-11-28T16:30:00"),
        utc("2014-11-28T17:30:00"),
        utc("2014-11-28T18:00:00"),
    ]
    # the clipped bin holds the 30 bars 17:31 .. 18:00
    src = bars.filter(
        (pl.col("symbol") == "AAA") & pl.col("ts").is_between(utc("2014-11-28T17:31:00"), utc("2014-11-28T18:00:00"))
    )
    assert src.height == 30
    assert half.get_column("volume")[-1] == src.get_column("volume").sum()


def test_daily_bars_end_at_session_closes(bars: pl.DataFrame) -> None:
    out = resample_bars(bars, CAL, "1d", from_freq="1m")
    closes = [at_us(session_bounds(d)[1]) for d in DAYS]
    assert closes[1] == utc("2014-11-28T18:00:00")
    for symbol in SYMBOLS:
        assert out.filter(pl.col("symbol") == symbol).get_column("ts").to_list() == closes
    first_day = bars.filter((pl.col("symbol") == "BBB") & (pl.col("ts") <= closes[0]))
    row = out.filter((pl.col("symbol") == "BBB") & (pl.col("ts") == closes[0])).row(0, named=True)
    assert row["open"] == first_day.get_column("open")[0]
    assert row["close"] == first_day.get_column("close")[-1]
    assert row["high"] == first_day.get_column("high").max()
    assert row["low"] == first_day.get_column("low").min()
    assert row["volume"] == first_day.get_column("volume").sum()


# --- aggregation ----------------------------------------------------------------------------------------------------


def test_ohlcv_aggregation_by_hand() -> None:
    open_us, _ = session_bounds(NEXT_DAY)  # 14:30 UTC
    ends = open_us + US_PER_MINUTE * np.arange(1, 8)  # 14:31 .. 14:37
    bars = pl.DataFrame(
        {
            "symbol": ["X"] * 7,
            "ts": from_us(ends, "ts"),
            "open": [10.0, 11.0, 12.0, 13.0, 14.0, 20.0, 21.0],
            "high": [10.5, 15.0, 12.5, 13.5, 14.5, 22.0, 21.5],
            "low": [9.5, 10.5, 8.0, 12.5, 13.5, 19.5, 18.0],
            "close": [11.0, 12.0, 13.0, 14.0, 15.0, 21.0, 19.0],
            "volume": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0],
            "adj_close": [1.1, 1.2, 1.3, 1.4, 1.5, 2.1, 1.9],
            "adj_factor": [0.1, 0.1, 0.1, 0.1, 0.2, 0.3, 0.4],
            "filled": [True, True, True, True, True, True, False],
            "volume_anomaly": [False, False, True, False, False, False, False],
        }
    )
    out = resample_bars(bars, CAL, "5m", from_freq="1m")
    expected = pl.DataFrame(
        {
            "symbol": ["X", "X"],
            "ts": [utc("2014-12-01T14:35:00"), utc("2014-12-01T14:40:00")],
            "open": [10.0, 20.0],
            "high": [15.0, 22.0],
            "low": [8.0, 18.0],
            "close": [15.0, 19.0],
            "volume": [15.0, 13.0],
            "adj_close": [1.5, 1.9],
            "adj_factor": [0.2, 0.4],
            "filled": [True, False],
            "volume_anomaly": [True, False],
        }
    )
    assert_frame_equal(out, BARS.conform(expected).drop("label"))  # a bar's label says nothing of a coarser bar


def test_nulls_are_skipped_and_all_null_bins_stay_null() -> None:
    open_us, _ = session_bounds(NEXT_DAY)
    bars = pl.DataFrame(
        {
            "symbol": ["X"] * 3,
            "ts": from_us(open_us + US_PER_MINUTE * np.arange(1, 4), "ts"),
            "open": [None, 5.0, 6.0],
            "high": [7.0, None, 6.5],
            "low": [4.0, 4.5, None],
            "close": [5.0, 6.0, 6.2],
            "volume": [None, None, None],
            "filled": [None, True, None],
            "volume_anomaly": [None, None, None],
        },
        schema_overrides={"volume": pl.Float64, "filled": pl.Boolean, "volume_anomaly": pl.Boolean},
    )
    row = resample_bars(bars, CAL, "5m").row(0, named=True)
    assert row["open"] == 5.0
    assert row["high"] == 7.0
    assert row["low"] == 4.0
    assert row["close"] == 6.2
    assert row["volume"] is None
    assert row["filled"] is True
    assert row["volume_anomaly"] is None


def test_column_set_order_and_dtypes_follow_input(bars: pl.DataFrame) -> None:
    full = resample_bars(bars, CAL, "30m")
    assert full.columns == [c for c in BARS.names if c in bars.columns]
    assert full.schema == BARS.conform(bars).select(full.columns).schema
    required = [c.name for c in BARS.columns if c.required]
    minimal = resample_bars(bars.select(reversed(required)), CAL, "30m")
    assert minimal.columns == required
    assert_frame_equal(minimal, full.select(required))


def test_unsorted_input_gives_the_same_result(bars: pl.DataFrame) -> None:
    shuffled = bars.sample(fraction=1.0, shuffle=True, seed=7)
    assert not shuffled.equals(bars)
    for freq in ("5m", "1h", "1d"):
        assert_frame_equal(resample_bars(shuffled, CAL, freq), resample_bars(bars, CAL, freq))


def test_output_is_sorted_by_symbol_then_ts(bars: pl.DataFrame) -> None:
    out = resample_bars(bars.sample(fraction=1.0, shuffle=True, seed=3), CAL, "5m")
    assert out.equals(out.sort("symbol", "ts"))
    assert out.get_column("symbol").to_list()[0] == "AAA"
    assert out.select(pl.struct("symbol", "ts").is_unique().all()).item()


def test_empty_input_gives_empty_output(bars: pl.DataFrame) -> None:
    out = resample_bars(bars.clear(), CAL, "5m")
    assert out.height == 0
    assert out.schema == bars.schema


@pytest.mark.parametrize(("fine", "coarse"), [("5m", "30m"), ("3m", "1h"), ("30m", "1h"), ("5m", "1d"), ("1h", "1d")])
def test_resampling_composes(bars: pl.DataFrame, fine: str, coarse: str) -> None:
    direct = resample_bars(bars, CAL, coarse, from_freq="1m")
    via = resample_bars(resample_bars(bars, CAL, fine, from_freq="1m"), CAL, coarse, from_freq=fine)
    assert_frame_equal(via, direct)
    assert direct.height < resample_bars(bars, CAL, fine).height


def test_resampling_to_the_same_frequency_is_identity(bars: pl.DataFrame) -> None:
    assert_frame_equal(resample_bars(bars, CAL, "1m", from_freq="1m"), bars)


@pytest.mark.parametrize("freq", ["5m", "1h", "1d", "600m"])
def test_bins_never_cross_sessions(bars: pl.DataFrame, freq: str) -> None:
    out = resample_bars(bars, CAL, freq)
    # each input bar belongs to the first output bar of its symbol ending at or after it
    assigned = bars.sort("ts").join_asof(
        out.select("symbol", pl.col("ts").alias("bin_ts"), pl.col("volume").alias("bin_volume")).sort("bin_ts"),
        left_on="ts",
        right_on="bin_ts",
        by="symbol",
        strategy="forward",
        check_sortedness=False,
    )
    assert assigned.get_column("bin_ts").null_count() == 0
    sessions = assigned.with_columns(
        pl.Series("session", CAL.session_of_bar_end(to_us(assigned.get_column("ts")))[0]),
        pl.Series("bin_session", CAL.session_of_bar_end(to_us(assigned.get_column("bin_ts")))[0]),
    )
    per_bin = sessions.group_by("symbol", "bin_ts").agg(
        pl.col("session").n_unique().alias("n_sessions"),
        (pl.col("session") == pl.col("bin_session")).all().alias("same"),
        (pl.col("volume").sum() == pl.col("bin_volume").first()).alias("volume_matches"),
    )
    assert per_bin.height == out.height
    assert per_bin.get_column("n_sessions").max() == 1
    assert per_bin.get_column("same").all()
    assert per_bin.get_column("volume_matches").all()
    expected_bins_per_day = {"5m": 78 + 42 + 78, "1h": 7 + 4 + 7, "1d": 3, "600m": 3}[freq]
    assert out.height == len(SYMBOLS) * expected_bins_per_day


# --- errors ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad_ts",
    [
        "2014-11-26T13:00:00",  # before the open
        "2014-11-26T14:30:00",  # exactly the open: a bar ending there began before the session
        "2014-11-28T18:01:00",  # after the half day's early close
        "2014-11-27T16:00:00",  # Thanksgiving holiday
        "2014-11-29T16:00:00",  # Saturday
    ],
)
def test_bar_outside_sessions_names_first_row_and_field(bars: pl.DataFrame, bad_ts: str) -> None:
    head = bars.head(12)
    bad = head.with_columns(
        pl.when(pl.int_range(pl.len()).is_in([4, 9])).then(pl.lit(utc(bad_ts))).otherwise(pl.col("ts")).alias("ts")
    )
    with pytest.raises(DataValidationError) as info:
        resample_bars(bad, CAL, "5m")
    assert info.value.row == 5
    assert info.value.field == "ts"
    assert "session" in str(info.value)
    resample_bars(head, CAL, "5m")  # the untouched rows are fine


def test_missing_ts_names_row(bars: pl.DataFrame) -> None:
    bad = bars.head(5).with_columns(pl.when(pl.int_range(pl.len()) == 2).then(None).otherwise(pl.col("ts")).alias("ts"))
    with pytest.raises(DataValidationError) as info:
        resample_bars(bad, CAL, "5m")
    assert (info.value.row, info.value.field) == (3, "ts")


def test_missing_required_column(bars: pl.DataFrame) -> None:
    with pytest.raises(DataValidationError) as info:
        resample_bars(bars.drop("close"), CAL, "5m")
    assert info.value.field == "close"


@pytest.mark.parametrize(
    ("src", "dst", "words"),
    [
        ("5m", "3m", "finer"),
        ("5m", "1m", "finer"),
        ("5m", "12m", "not a multiple"),
        ("30m", "1h", None),
        ("30m", "45m", "not a multiple"),
        ("1d", "1h", "finer"),
        ("1d", "1d", None),
        ("5m", "1d", None),
        ("5m", "5m", None),
    ],
)
def test_frequency_compatibility(bars: pl.DataFrame, src: str, dst: str, words: str | None) -> None:
    sample = bars.head(3)
    if words is None:
        resample_bars(sample if src != "1d" else resample_bars(sample, CAL, "1d"), CAL, dst, from_freq=src)
        return
    with pytest.raises(FinfusionError, match=words):
        resample_bars(sample, CAL, dst, from_freq=src)


def test_unknown_frequency_is_rejected(bars: pl.DataFrame) -> None:
    with pytest.raises(FinfusionError, match="unknown frequency"):
        resample_bars(bars.head(3), CAL, "5x")


# --- point in time --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cut", ["2014-11-28T15:37:00", "2014-11-28T17:45:00", "2014-11-28T18:00:00", "2014-12-01T20:59:00"]
)
@pytest.mark.parametrize("freq", ["5m", "1h", "1d"])
def test_outputs_up_to_t_ignore_bars_after_t(bars: pl.DataFrame, cut: str, freq: str) -> None:
    t = utc(cut)
    later = pl.col("ts") > t
    perturbed = bars.with_columns(
        *[
            pl.when(later).then(pl.col(c) * 1.5 + 3.0).otherwise(pl.col(c)).alias(c)
            for c in ("open", "high", "low", "close", "adj_close", "adj_factor")
        ],
        pl.when(later).then(pl.col("volume") + 1000.0).otherwise(pl.col("volume")).alias("volume"),
        pl.when(later).then(~pl.col("filled")).otherwise(pl.col("filled")).alias("filled"),
        pl.when(later).then(~pl.col("volume_anomaly")).otherwise(pl.col("volume_anomaly")).alias("volume_anomaly"),
    )
    base = resample_bars(bars, CAL, freq)
    moved = resample_bars(perturbed, CAL, freq)
    assert_frame_equal(moved.filter(pl.col("ts") <= t), base.filter(pl.col("ts") <= t))
    assert base.filter(pl.col("ts") <= t).height > 0
    # the perturbation does reach every later bar, so the comparison above is not vacuous
    after_base, after_moved = base.filter(pl.col("ts") > t), moved.filter(pl.col("ts") > t)
    assert after_base.height > 0
    assert (after_moved.get_column("volume") > after_base.get_column("volume")).all()


# --- property: agrees with a naive reference ------------------------------------------------------------------------


def reference_resample(bars: pl.DataFrame, freq: str) -> list[dict[str, Any]]:
    """Naive python resampling: loop over rows, find the session by scanning, group in dicts."""
    minutes = parse_freq(freq).minutes
    sessions = [(int(o), int(c)) for o, c in (session_bounds(d) for d in DAYS)]
    groups: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for row in sorted(bars.to_dicts(), key=lambda r: (r["symbol"], r["ts"])):
        ts = us_of(row["ts"])
        open_us, close_us = next((o, c) for o, c in sessions if o < ts <= c)
        if minutes is None:
            end = close_us
        else:
            step = minutes * US_PER_MINUTE
            k = (ts - open_us) // step + (1 if (ts - open_us) % step else 0)
            end = min(open_us + k * step, close_us)
        groups[(row["symbol"], end)].append(row)

    def present(rows: list[dict[str, Any]], name: str) -> list[Any]:
        return [r[name] for r in rows if r[name] is not None]

    out = []
    for (symbol, end), rows in sorted(groups.items()):
        opens, highs, lows = present(rows, "open"), present(rows, "high"), present(rows, "low")
        volumes, filled, anomaly = present(rows, "volume"), present(rows, "filled"), present(rows, "volume_anomaly")
        out.append(
            {
                "symbol": symbol,
                "ts": at_us(end),
                "open": opens[0] if opens else None,
                "high": max(highs) if highs else None,
                "low": min(lows) if lows else None,
                "close": rows[-1]["close"],
                "volume": sum(volumes) if volumes else None,
                "adj_close": present(rows, "adj_close")[-1],
                "adj_factor": present(rows, "adj_factor")[-1],
                "filled": all(filled) if filled else None,
                "volume_anomaly": any(anomaly) if anomaly else None,
            }
        )
    return out


PROPERTY_BARS = minute_bars(days=(HALF_DAY, NEXT_DAY), seed=11)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    keep=st.floats(0.002, 1.0),
    null_rate=st.sampled_from([0.0, 0.3]),
    freq=st.sampled_from(["2m", "3m", "5m", "7m", "30m", "1h", "1d"]),
)
def test_matches_naive_reference_after_random_deletions(seed: int, keep: float, null_rate: float, freq: str) -> None:
    rng = np.random.default_rng(seed)
    n = PROPERTY_BARS.height
    kept = PROPERTY_BARS.filter(pl.Series(rng.random(n) < keep)).sample(fraction=1.0, shuffle=True, seed=seed)
    nulls = {
        c: pl.Series(rng.random(kept.height) < null_rate)
        for c in ("open", "high", "low", "volume", "filled", "volume_anomaly")
    }
    kept = kept.with_columns(pl.when(mask).then(None).otherwise(pl.col(c)).alias(c) for c, mask in nulls.items())
    got = resample_bars(kept, CAL, freq, from_freq="1m").to_dicts()
    assert got == reference_resample(kept, freq)


def test_ts_in_other_unit_or_zone_is_read_as_the_same_instant(bars: pl.DataFrame) -> None:
    expected = resample_bars(bars, CAL, "30m")
    as_ns = bars.with_columns(pl.col("ts").dt.cast_time_unit("ns"))
    in_new_york = bars.with_columns(pl.col("ts").dt.convert_time_zone("America/New_York"))
    assert in_new_york.get_column("ts").dt.hour()[0] == 9
    assert_frame_equal(resample_bars(as_ns, CAL, "30m"), expected)
    assert_frame_equal(resample_bars(in_new_york, CAL, "30m"), expected)
