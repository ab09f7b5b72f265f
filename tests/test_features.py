"""Continuous bar features (finfusion.features.bars / indicators): golden values, layout, and point-in-time."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from functools import cache

import numpy as np
import polars as pl
import pytest

from finfusion.data.sources.synthetic import SyntheticConfig, generate_market
from finfusion.errors import FinfusionError
from finfusion.features.bars import FeatureConfig, build_features, panels
from finfusion.features.exogenous import join_asof_exogenous, series_from_bars
from finfusion.features.indicators import (
    WindowSums,
    atr,
    bollinger_pct_b,
    ewm,
    linear_recurrence,
    macd,
    rolling_zscores,
    rsi,
)

CONFIG = FeatureConfig()


def _bars(closes: list[float], symbol: str = "AAA", **columns: list[float]) -> pl.DataFrame:
    """Daily bars of one symbol at 21:00 UTC on consecutive days."""
    ts = [datetime(2021, 1, 4, 21, tzinfo=UTC) + timedelta(days=i) for i in range(len(closes))]
    frame = pl.DataFrame({"symbol": [symbol] * len(closes), "ts": ts, "close": closes, **columns})
    return frame.cast({"ts": pl.Datetime("us", "UTC"), "close": pl.Float64})


def _ema_loop(x: np.ndarray, alpha: float) -> np.ndarray:
    out = np.empty_like(x)
    out[0] = x[0]
    for t in range(1, len(x)):
        out[t] = (1 - alpha) * out[t - 1] + alpha * x[t]
    return out


def _wilder_loop(x: np.ndarray, n: int) -> np.ndarray:
    """Wilder's smoothing of x [T] (no NaN): NaN, ..., mean(x[:n]), then avg += (x - avg) / n."""
    out = np.full(len(x), np.nan)
    out[n - 1] = x[:n].mean()
    for t in range(n, len(x)):
        out[t] = out[t - 1] + (x[t] - out[t - 1]) / n
    return out


# ------------------------------------------------------------------------------------------------ golden values


def test_rsi_hand_computed() -> None:
    # changes +1 -1 +2 0 -1; seed (n=2) avg gain 0.5, loss 0.5 -> 50; then gain 1.25/loss 0.25 -> 83.33, ...
    closes = np.array([[10.0, 11.0, 10.0, 12.0, 12.0, 11.0]])
    expected = [np.nan, np.nan, 50.0, 100 * 1.25 / 1.5, 100 * 0.625 / 0.75, 100 * 0.3125 / 0.875]
    np.testing.assert_allclose(rsi(closes, 2)[0], expected, rtol=1e-12)


def test_rsi_close_to_the_published_stockcharts_example() -> None:
    # StockCharts' RSI(14) worked example; its table rounds the running averages, so agreement is to ~0.1.
    closes = [44.34, 44.09, 44.15, 43.61, 44.33, 44.83, 45.10, 45.42, 45.84, 46.08, 45.89, 46.03, 45.61, 46.28]
    closes += [46.28, 46.00, 46.03, 46.41, 46.22, 45.64]
    published = [70.53, 66.32, 66.55, 69.41, 66.36, 57.97]
    np.testing.assert_allclose(rsi(np.array([closes]), 14)[0, 14:], published, atol=0.1)


def test_rsi_matches_a_loop_implementation() -> None:
    close = 50 * np.exp(np.cumsum(np.random.default_rng(1).normal(0, 0.02, 300)))
    change = np.diff(close)
    gain, loss = _wilder_loop(np.maximum(change, 0), 14), _wilder_loop(np.maximum(-change, 0), 14)
    expected = np.concatenate([[np.nan], 100 * gain / (gain + loss)])
    np.testing.assert_allclose(rsi(close[None, :], 14)[0], expected, rtol=1e-10)


def test_atr_hand_computed() -> None:
    high, low = np.array([[11.0, 12.0, 11.5, 14.0]]), np.array([[9.0, 10.0, 10.5, 12.0]])
    close = np.array([[10.0, 11.0, 11.0, 13.0]])
    # true ranges 2, 2, 1, 3 -> seed (2 + 2) / 2 = 2, then 2 + (1 - 2) / 2 = 1.5, then 1.5 + (3 - 1.5) / 2 = 2.25
    np.testing.assert_allclose(atr(high, low, close, 2)[0], [np.nan, 2.0, 1.5, 2.25], rtol=1e-12)


def test_atr_matches_a_loop_implementation() -> None:
    rng = np.random.default_rng(2)
    close = 20 * np.exp(np.cumsum(rng.normal(0, 0.02, 200)))
    high, low = close * (1 + rng.uniform(0, 0.02, 200)), close * (1 - rng.uniform(0, 0.02, 200))
    prev = np.concatenate([[np.nan], close[:-1]])
    tr = np.array(
        [
            h - lo if np.isnan(p) else max(h - lo, abs(h - p), abs(lo - p))
            for h, lo, p in zip(high, low, prev, strict=True)
        ]
    )
    np.testing.assert_allclose(atr(high[None], low[None], close[None], 14)[0], _wilder_loop(tr, 14), rtol=1e-10)


def test_macd_matches_loop_emas() -> None:
    x = np.log(30 * np.exp(np.cumsum(np.random.default_rng(3).normal(0, 0.01, 120))))
    line, signal, hist = macd(x[None, :], 12, 26, 9)
    expected_line = _ema_loop(x, 2 / 13) - _ema_loop(x, 2 / 27)
    expected_signal = np.full(120, np.nan)
    expected_signal[25:] = _ema_loop(expected_line[25:], 0.2)
    expected_line[:25] = np.nan
    expected_signal[:33] = np.nan
    np.testing.assert_allclose(line[0], expected_line, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(signal[0], expected_signal, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(hist[0], expected_line - expected_signal, rtol=1e-8, atol=1e-13)


def test_bollinger_matches_numpy_std() -> None:
    x = np.random.default_rng(4).normal(5, 0.1, 60)
    got = bollinger_pct_b(x[None, :], 20, 2.0)[0]
    for t in range(19, 60):
        window = x[t - 19 : t + 1]
        lower, upper = window.mean() - 2 * window.std(), window.mean() + 2 * window.std()
        assert got[t] == pytest.approx((x[t] - lower) / (upper - lower), abs=1e-12)
    assert np.isnan(got[:19]).all()


def test_bar_shape_features_hand_computed() -> None:
    bars = _bars(
        [10.0, 11.0, 11.0],
        open=[9.0, 10.5, 12.0],
        high=[10.0, 12.0, 12.0],
        low=[8.0, 10.0, 11.0],
        volume=[100.0, 300.0, 200.0],
    )
    config = FeatureConfig(imbalance_windows=(2,), return_horizons=(1, 2))
    got = build_features(bars, config)
    assert got["ret_1"].to_list()[1:] == pytest.approx([math.log(1.1), 0.0])
    assert got["ret_2"].to_list()[2] == pytest.approx(math.log(1.1))
    assert got["gap"].to_list()[1:] == pytest.approx([math.log(10.5 / 10), math.log(12 / 11)])
    assert got["body"].to_list() == pytest.approx([math.log(10 / 9), math.log(11 / 10.5), math.log(11 / 12)])
    assert got["range_hl"].to_list() == pytest.approx([math.log(10 / 8), math.log(12 / 10), math.log(12 / 11)])
    assert got["close_pos"].to_list() == pytest.approx([1.0, 0.5, 0.0])
    # up bar 100, up bar 300, down bar 200: (100 + 300) / 400 then (300 - 200) / 500
    assert got["vol_imb_2"].to_list() == [None, pytest.approx(1.0), pytest.approx(0.2)]
    assert got["ret_1"][0] is None and got["gap"][0] is None


def test_realised_volatility_and_zscores_match_a_loop() -> None:
    rng = np.random.default_rng(5)
    closes = list(40 * np.exp(np.cumsum(rng.normal(0, 0.02, 200))))
    got = build_features(_bars(closes), CONFIG)
    ret = np.diff(np.log(closes))
    for t in (20, 77, 199):
        window = ret[t - 20 : t]  # returns of bars t-19 .. t
        assert got["rv_20"][t] == pytest.approx(math.sqrt(np.mean(window**2)), rel=1e-10)
        assert got["ret_z_20"][t] == pytest.approx((ret[t - 1] - window.mean()) / window.std(ddof=1), rel=1e-9)
    assert got["rv_20"][19] is None and got["rv_20"][20] is not None
    assert got["rv_z_20"][138] is None and got["rv_z_20"][139] is not None


# ------------------------------------------------------------------------------------------------ kernels


def test_linear_recurrence_across_many_blocks_matches_a_loop() -> None:
    u = np.random.default_rng(6).normal(size=(3, 700))
    b = 0.05  # blocks of int(300 / -ln 0.05) = 100 columns
    expected = u.copy()
    for t in range(1, 700):
        expected[:, t] += b * expected[:, t - 1]
    np.testing.assert_allclose(linear_recurrence(u.copy(), b), expected, rtol=1e-12, atol=1e-12)


def test_ewm_starts_late_and_reports_after_min_samples() -> None:
    x = np.array([[np.nan, np.nan, 2.0, 4.0, 8.0]])
    np.testing.assert_allclose(ewm(x, 0.5, start=2, min_samples=2)[0], [np.nan, np.nan, np.nan, 3.0, 5.5])


def test_window_sums_skip_windows_with_missing_values() -> None:
    x = np.array([[1.0, 2.0, np.nan, 4.0, 5.0, 6.0]])
    np.testing.assert_allclose(WindowSums(x).sum(2)[0], [np.nan, 3.0, np.nan, np.nan, 9.0, 11.0])


def test_rolling_zscores_match_brute_force_across_slabs_and_gaps() -> None:
    rng = np.random.default_rng(7)
    x = 1000 + np.cumsum(rng.normal(0, 1, (2, 700)), axis=1)  # a level far from zero, drifting
    x[0, 300] = np.nan
    got = rolling_zscores(x, [5, 40], ddof=1, start=3)
    for w in (5, 40):
        for t in range(700):
            window = x[:, t - w + 1 : t + 1]
            for row in range(2):
                if t - w + 1 < 3 or np.isnan(window[row]).any():
                    assert np.isnan(got[w][row, t])
                else:
                    z = (x[row, t] - window[row].mean()) / window[row].std(ddof=1)
                    assert got[w][row, t] == pytest.approx(z, rel=1e-9, abs=1e-9)


def test_panels_cover_every_row_once_with_bounded_padding() -> None:
    lengths = np.array([5, 5, 3, 9, 1, 6])
    layout = panels(lengths, parts=2)
    rows = np.concatenate(
        [np.arange(p.rows.start, p.rows.stop) if isinstance(p.rows, slice) else p.rows for p in layout]
    )
    assert sorted(rows.tolist()) == list(range(lengths.sum()))
    assert sum(p.shape[0] * p.shape[1] for p in layout) <= 2 * lengths.sum()
    column = np.arange(lengths.sum(), dtype=np.float64)
    for panel in layout:
        grid = panel.grid(column)
        assert np.isfinite(grid).all()  # padding repeats the last bar
        np.testing.assert_array_equal(panel.values(grid), column[panel.rows])


# ------------------------------------------------------------------------------------------------ the frame


@pytest.fixture(scope="module")
def market_bars() -> pl.DataFrame:
    config = SyntheticConfig(n_symbols=5, start="2018-01-01", end="2019-06-30", missing_bar_prob=0.02, seed=11)
    return generate_market(config).bars


def test_output_columns_rows_and_types(market_bars: pl.DataFrame) -> None:
    got = build_features(market_bars.sample(fraction=1.0, shuffle=True, seed=1))
    assert got.columns == ["symbol", "ts", *CONFIG.names]
    assert got.select("symbol", "ts").equals(market_bars.select("symbol", "ts"))
    assert all(got.schema[name] == pl.Float64 for name in CONFIG.names)
    assert len(CONFIG.names) == len(set(CONFIG.names))


def test_each_symbol_is_computed_alone(market_bars: pl.DataFrame) -> None:
    together = build_features(market_bars)
    for symbol in ("COMN", market_bars["symbol"][-1]):
        alone = build_features(market_bars.filter(pl.col("symbol") == symbol))
        assert alone.equals(together.filter(pl.col("symbol") == symbol))


def test_a_split_is_not_a_return() -> None:
    closes, factor = [100.0, 102.0, 51.5, 52.0], [0.5, 0.5, 1.0, 1.0]  # 2:1 split before bar 2
    got = build_features(_bars(closes, adj_factor=factor), CONFIG)
    assert got["ret_1"][2] == pytest.approx(math.log(51.5 / 51.0))
    from_adj_close = build_features(_bars(closes, adj_close=[50.0, 51.0, 51.5, 52.0]), CONFIG)
    assert from_adj_close["ret_1"].equals(got["ret_1"])
    raw = build_features(_bars(closes), CONFIG)
    assert raw["ret_1"][2] == pytest.approx(math.log(51.5 / 102.0))


def test_flat_prices_give_null_zscores_not_rounding_noise() -> None:
    closes = [10.0] * 10 + [10.0 * 1.01**i for i in range(30)] + [7.3] * 40  # ends flat, far from the start
    got = build_features(_bars(closes, volume=[1e6] * 80), CONFIG)
    for column in ("ret_z_20", "bb_pos_20", "volume_z_20"):
        assert got[column][-1] is None, column
    assert got["bb_pos_20"][45] is not None and got["rv_20"][-1] == 0.0


def test_close_only_bars_give_price_features_and_null_ohlv_ones() -> None:
    got = build_features(_bars(list(np.linspace(10, 12, 40))), CONFIG)
    assert got["ret_1"].null_count() == 1 and got["ma_ratio_20"].null_count() == 19
    assert got["body"].null_count() == 40 and got["vol_imb_5"].null_count() == 40


def test_duplicate_bars_and_missing_columns_are_errors() -> None:
    bars = _bars([1.0, 2.0])
    with pytest.raises(FinfusionError, match="same ts"):
        build_features(pl.concat([bars, bars]))
    with pytest.raises(FinfusionError, match="close"):
        build_features(bars.drop("close"))
    with pytest.raises(FinfusionError, match="window"):
        FeatureConfig(zscore_windows=(1,))
    with pytest.raises(FinfusionError, match="repeated"):
        FeatureConfig(ma_windows=(5, 5))
    with pytest.raises(FinfusionError, match="time zone"):
        FeatureConfig(timezone="Mars/Olympus")


def test_empty_bars_give_an_empty_frame() -> None:
    got = build_features(_bars([]))
    assert got.height == 0 and got.columns == ["symbol", "ts", *CONFIG.names]


# ------------------------------------------------------------------------------------------------ point in time

CUTS = (0.15, 0.4, 0.65, 0.9)


def _with_gaps(bars: pl.DataFrame, seed: int) -> pl.DataFrame:
    """Some missing open/high/low/volume values, so that the missing-value paths take part."""
    rng = np.random.default_rng(seed)
    return bars.with_columns(
        pl.when(pl.Series(rng.random(bars.height) < 0.01)).then(None).otherwise(pl.col(c)).alias(c)
        for c in ("open", "high", "low", "volume")
    )


@cache
def _pit_inputs() -> tuple[pl.DataFrame, pl.DataFrame]:
    config = SyntheticConfig(n_symbols=6, start="2018-01-01", end="2019-06-30", missing_bar_prob=0.02, seed=5)
    bars = _with_gaps(generate_market(config).bars, 0)
    index = bars.filter(pl.col("symbol") == bars["symbol"][0]).with_columns(symbol=pl.lit("IDX"))
    return bars.filter(pl.col("symbol") != bars["symbol"][0]), index


def _features_with_exogenous(bars: pl.DataFrame, index: pl.DataFrame) -> pl.DataFrame:
    return join_asof_exogenous(build_features(bars), series_from_bars(index), "idx", max_staleness="4d")


def _perturbed_after(bars: pl.DataFrame, cut: datetime, seed: int) -> pl.DataFrame:
    """Every value of every bar after `cut` changed (prices, volume, adjustment), and a tenth of those bars dropped."""
    rng = np.random.default_rng(seed)
    later = pl.Series(bars["ts"] > cut)
    noise = pl.Series(np.exp(rng.normal(0, 0.3, bars.height)))
    changed = bars.with_columns(
        *(pl.when(later).then(pl.col(c) * noise).otherwise(pl.col(c)).alias(c) for c in ("open", "high", "low")),
        pl.when(later).then(pl.col("close") / noise).otherwise(pl.col("close")).alias("close"),
        pl.when(later).then(pl.col("volume") * noise * 7).otherwise(pl.col("volume")).alias("volume"),
        pl.when(later).then(pl.col("adj_factor") * 3).otherwise(pl.col("adj_factor")).alias("adj_factor"),
    )
    keep = pl.Series(~(later.to_numpy() & (rng.random(bars.height) < 0.1)))
    return changed.filter(keep)


@cache
def _pit_pair(cut_quantile: float) -> tuple[pl.DataFrame, pl.DataFrame, datetime]:
    """(features of the original bars, features after perturbing every bar after the cut, the cut) at or before it."""
    bars, index = _pit_inputs()
    cut = bars["ts"].sort()[int(cut_quantile * bars.height)]
    original = _features_with_exogenous(bars, index)
    perturbed = _features_with_exogenous(_perturbed_after(bars, cut, 1), _perturbed_after(index, cut, 2))
    known = pl.col("ts") <= cut
    return original.filter(known), perturbed.filter(known), cut


PIT_COLUMNS = [*CONFIG.names, "idx_ret_1", "idx_log_close"]


@pytest.mark.parametrize("cut_quantile", CUTS)
@pytest.mark.parametrize("column", PIT_COLUMNS)
def test_point_in_time(column: str, cut_quantile: float) -> None:
    """Changing (or dropping) any bar after t changes no feature value at or before t."""
    original, perturbed, cut = _pit_pair(cut_quantile)
    assert original.select("symbol", "ts").equals(perturbed.select("symbol", "ts"))
    before, after = original[column].to_numpy(), perturbed[column].to_numpy()
    np.testing.assert_array_equal(before, after, err_msg=f"{column} at or before {cut} depends on later bars")


def test_point_in_time_compares_real_values() -> None:
    """Before the later cuts every column holds values (past its warm-up), so the comparisons are not vacuous."""
    original, _, _ = _pit_pair(CUTS[-2])
    for column in PIT_COLUMNS:
        assert original[column].drop_nulls().n_unique() > 1, column


def test_point_in_time_perturbation_does_change_later_values() -> None:
    """The perturbation is strong enough to be seen after the cut, so the point-in-time test can fail."""
    bars, index = _pit_inputs()
    cut = bars["ts"].sort()[int(0.5 * bars.height)]
    original = _features_with_exogenous(bars, index).filter(pl.col("ts") > cut)
    perturbed = _features_with_exogenous(_perturbed_after(bars, cut, 1), _perturbed_after(index, cut, 2))
    both = original.join(perturbed.filter(pl.col("ts") > cut), on=["symbol", "ts"], suffix="_p")
    for column in [c for c in PIT_COLUMNS if not c.startswith(("minute", "dow", "month"))]:
        assert not both[column].equals(both[f"{column}_p"]), column
