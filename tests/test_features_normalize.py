"""Fitted normalisers (finfusion.features.normalize): fit span only, stored with it, reused for inference."""

from __future__ import annotations

import json
import statistics
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from finfusion.data.lake import Lake
from finfusion.errors import FinfusionError
from finfusion.features.normalize import FittedNormalizer, normalizer_path

START, END = date(2021, 1, 10), date(2021, 1, 20)


def _features() -> pl.DataFrame:
    """Two symbols x 30 daily rows, Jan 1 .. Jan 30; f = day + offset, g = day ** 2 with one null."""
    days = list(range(1, 31))
    frame = pl.DataFrame(
        {
            "symbol": ["A"] * 30 + ["B"] * 30,
            "ts": [datetime(2021, 1, d, 21, tzinfo=UTC) for d in days] * 2,
            "f": [float(d) for d in days] + [float(d) * 10 for d in days],
            "g": [float(d * d) for d in days] * 2,
        }
    )
    return frame.with_columns(pl.when(pl.int_range(pl.len()) == 12).then(None).otherwise(pl.col("g")).alias("g"))


def _in_span(frame: pl.DataFrame, symbol: str, column: str) -> list[float]:
    ts = pl.col("ts")
    span = (ts >= datetime(2021, 1, 10, tzinfo=UTC)) & (ts < datetime(2021, 1, 20, tzinfo=UTC))
    return frame.filter(span & (pl.col("symbol") == symbol))[column].drop_nulls().to_list()


def test_zscore_statistics_come_from_the_span_only() -> None:
    frame = _features()
    fitted = FittedNormalizer.fit(frame, "zscore", START, END)
    values = _in_span(frame, "B", "f")
    assert fitted.stats["B"]["f"] == pytest.approx((statistics.mean(values), statistics.stdev(values)))
    assert fitted.columns == ("f", "g")
    assert fitted.fit_start == datetime(2021, 1, 10, tzinfo=UTC)


def test_robust_uses_median_and_interquartile_range() -> None:
    fitted = FittedNormalizer.fit(_features(), "robust", START, END, columns=["f"])
    values = _in_span(_features(), "A", "f")  # days 10 .. 19
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    assert fitted.stats["A"]["f"] == pytest.approx((statistics.median(values), q3 - q1))


def test_changing_data_outside_the_span_changes_no_statistic() -> None:
    frame = _features()
    outside = (pl.col("ts") < datetime(2021, 1, 10, tzinfo=UTC)) | (pl.col("ts") >= datetime(2021, 1, 20, tzinfo=UTC))
    changed = frame.with_columns(pl.when(outside).then(pl.col(c) * -7 + 3).otherwise(pl.col(c)).alias(c) for c in "fg")
    for method in ("zscore", "robust"):
        fitted = FittedNormalizer.fit(frame, method, START, END)
        assert FittedNormalizer.fit(changed, method, START, END).to_dict() == fitted.to_dict()
    inside = frame.with_columns(pl.col("f") * 2)
    assert FittedNormalizer.fit(inside, "zscore", START, END).stats != fitted.stats


def test_stored_statistics_are_reused_for_inference(tmp_path: Path) -> None:
    frame = _features()
    fitted = FittedNormalizer.fit(frame, "zscore", START, END)
    lake = Lake(tmp_path)
    path = fitted.save(lake, "feat", "1d")
    assert path == normalizer_path(lake, "feat", "1d")
    assert path.parent.name == "freq=1d" and json.loads(path.read_text())["fit_end"].startswith("2021-01-20")
    assert [p.name for p in path.parent.iterdir()] == ["_normalizer.json"]  # no temporary file left

    later = frame.with_columns(pl.col("ts") + timedelta(days=60), pl.col("f") + 1000)  # new bars, after the span
    loaded = FittedNormalizer.load(lake, "feat", "1d")
    assert loaded == fitted
    got = loaded.transform(later)
    centre, scale = fitted.stats["A"]["f"]
    assert got["f"][0] == pytest.approx((later["f"][0] - centre) / scale)
    assert got.columns == later.columns and got["ts"].equals(later["ts"])


def test_unseen_symbols_use_pooled_statistics_and_zero_scale_counts_as_one() -> None:
    frame = _features().with_columns(h=pl.lit(5.0))
    fitted = FittedNormalizer.fit(frame, "zscore", START, END)
    assert fitted.stats["A"]["h"] == (5.0, 1.0)
    stranger = frame.filter(pl.col("symbol") == "A").with_columns(symbol=pl.lit("C"))
    got = fitted.transform(stranger)
    pooled_centre, pooled_scale = fitted.pooled["f"]
    assert got["f"][0] == pytest.approx((stranger["f"][0] - pooled_centre) / pooled_scale)


def test_round_trip_through_a_dict() -> None:
    fitted = FittedNormalizer.fit(_features(), "robust", "2021-01-10", "2021-01-20T00:00:00+00:00")
    assert FittedNormalizer.from_dict(json.loads(json.dumps(fitted.to_dict()))) == fitted


def test_errors(tmp_path: Path) -> None:
    with pytest.raises(FinfusionError, match="unknown normaliser"):
        FittedNormalizer.fit(_features(), "minmax", START, END)
    with pytest.raises(FinfusionError, match="no feature rows"):
        FittedNormalizer.fit(_features(), "zscore", date(2022, 1, 1), date(2022, 2, 1))
    with pytest.raises(FinfusionError, match="empty"):
        FittedNormalizer.fit(_features(), "zscore", END, START)
    with pytest.raises(FinfusionError, match="no fitted normaliser"):
        FittedNormalizer.load(Lake(tmp_path), "feat", "1d")
    with pytest.raises(FinfusionError, match="not a fitted normaliser"):
        FittedNormalizer.from_dict({"method": "zscore"})
