"""Continuous bar features: our `build_features` against a plain pandas groupby implementation of the same features.

What is measured, on the same bars in the same run: the full default feature set (`FeatureConfig()`: returns, gap,
body, range, close position, realised volatility, return and volatility z-scores, volume z-score, volume imbalance,
RSI, MACD, ATR, Bollinger %B, moving-average ratios, calendar Fourier terms) of 500 symbols x 2,520 daily bars
(1,260,000 rows) of the seeded synthetic market (XNYS sessions, splits included, news effects off).

Ours is `build_features(bars)` on the polars frame. The reference, `pandas_features` below, computes every column the
straightforward way with `groupby("symbol")` + `shift` / `rolling` / `ewm` and `dt.tz_convert` on a pandas frame of
the same bars. Before timing, both results must agree: the same null/NaN cells and a maximum absolute difference of at
most 1e-9 over every feature column (the largest gap, a few 1e-10 in bb_pos_20, is the drift of pandas' running
rolling variance: ours restarts its sums every 256 bars and stays within about 1e-12 of exact). Each side then runs
`--repeats` times (after one warm-up run); the median seconds are reported, as a table and as the last line, one JSON
object:
{"benchmark": "features", "ours": ..., "reference": ..., "unit": "s", "ratio": reference / ours}, ratio > 1 meaning
we are faster.

    python benchmarks/features.py            # full size
    python benchmarks/features.py --quick    # 20 x 252 bars, to smoke-test the script
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import numpy as np
import pandas as pd
import polars as pl

from finfusion.data.calendar import get_calendar
from finfusion.data.sources.synthetic import SyntheticConfig, generate_market
from finfusion.features.bars import FeatureConfig, build_features

CALENDAR = "XNYS"
LAST_SESSION = np.datetime64("2019-12-31", "D")
SEED = 20240601
TOLERANCE = 1e-9


def make_bars(n_symbols: int, n_bars: int) -> pl.DataFrame:
    """Seeded synthetic daily bars: `n_symbols` symbols x the last `n_bars` XNYS sessions up to LAST_SESSION."""
    sessions = get_calendar(CALENDAR).sessions
    end = int(np.searchsorted(sessions, LAST_SESSION, side="right"))
    config = SyntheticConfig(
        n_symbols=n_symbols,
        start=str(sessions[end - n_bars]),
        end=str(LAST_SESSION),
        seed=SEED,
        missing_bar_prob=0.0,
        news_rate=0.0,
        noise_news_rate=0.0,
    )
    bars = generate_market(config).bars
    assert bars.height == n_symbols * n_bars, bars.height
    return bars


# ---------------------------------------------------------------------------------------------------- reference


def pandas_features(bars: pd.DataFrame, config: FeatureConfig) -> pd.DataFrame:
    """Every feature of `build_features`, written plainly with pandas groupby (bars sorted by symbol, ts)."""
    factor = bars["adj_factor"].fillna(1.0)
    close, open_ = bars["close"] * factor, bars["open"] * factor
    high, low = bars["high"] * factor, bars["low"] * factor
    volume = bars["volume"] / factor
    by = bars["symbol"]

    def group(s: pd.Series) -> pd.api.typing.SeriesGroupBy:
        return s.groupby(by, sort=False)

    def rolling(s: pd.Series, window: int, stat: str, **kwargs: int) -> pd.Series:
        return getattr(group(s).rolling(window), stat)(**kwargs).reset_index(level=0, drop=True)

    def ewm(s: pd.Series, **kwargs: float) -> pd.Series:
        return group(s).ewm(adjust=False, **kwargs).mean().reset_index(level=0, drop=True)

    def zscore(s: pd.Series, window: int, ddof: int = 1) -> pd.Series:
        std = rolling(s, window, "std", ddof=ddof)
        return (s - rolling(s, window, "mean")) / std.where(std != 0)

    position = group(close).cumcount()

    def wilder(s: pd.Series, n: int, start: int) -> pd.Series:
        seed_at = start + n - 1
        seeded = s.where(position > seed_at)
        seeded[position == seed_at] = rolling(s, n, "mean")[position == seed_at]
        return ewm(seeded, alpha=1.0 / n)

    out = pd.DataFrame({"symbol": bars["symbol"], "ts": bars["ts"]})
    log_close = np.log(close)
    ret = log_close - group(log_close).shift(1)
    for k in config.return_horizons:
        out[f"ret_{k}"] = log_close - group(log_close).shift(k)
    prev_close = group(close).shift(1)
    out["gap"] = np.log(open_ / prev_close)
    out["body"] = np.log(close / open_)
    out["range_hl"] = np.log(high / low)
    out["close_pos"] = ((close - low) / (high - low)).where(high != low, 0.5)
    for w in config.volatility_windows:
        out[f"rv_{w}"] = np.sqrt(rolling(ret**2, w, "mean"))
    for w in config.zscore_windows:
        out[f"ret_z_{w}"] = zscore(ret, w)
    vol_window, regime_window = config.volatility_zscore
    out[f"rv_z_{vol_window}"] = zscore(np.sqrt(rolling(ret**2, vol_window, "mean")), regime_window)
    out[f"volume_z_{config.volume_window}"] = zscore(np.log1p(volume), config.volume_window)
    for w in config.imbalance_windows:
        total = rolling(volume, w, "sum")
        out[f"vol_imb_{w}"] = rolling(np.sign(close - open_) * volume, w, "sum") / total.where(total != 0)
    change = group(close).diff()
    gain = wilder(change.clip(lower=0.0), config.rsi_window, start=1)
    loss = wilder((-change).clip(lower=0.0), config.rsi_window, start=1)
    out[f"rsi_{config.rsi_window}"] = 100.0 * gain / (gain + loss).where(gain + loss != 0)
    fast, slow, signal = config.macd_spans
    line = ewm(log_close, span=fast, min_periods=fast) - ewm(log_close, span=slow, min_periods=slow)
    out["macd"] = line
    out["macd_signal"] = ewm(line, span=signal, min_periods=signal)
    out["macd_hist"] = line - out["macd_signal"]
    top = pd.concat([high, close, prev_close], axis=1).max(axis=1)
    bottom = pd.concat([low, close, prev_close], axis=1).min(axis=1)
    out[f"atr_{config.atr_window}"] = wilder(top - bottom, config.atr_window, start=0) / close
    out[f"bb_pos_{config.bollinger_window}"] = 0.5 + zscore(log_close, config.bollinger_window, ddof=0) / (
        2.0 * config.bollinger_width
    )
    for w in config.ma_windows:
        out[f"ma_ratio_{w}"] = close / rolling(close, w, "mean") - 1.0
    local = bars["ts"].dt.tz_convert(config.timezone)
    cycles = {
        "minute": (local.dt.hour * 60 + local.dt.minute, 1440),
        "dow": (local.dt.day_of_week, 7),
        "month": (local.dt.month - 1, 12),
    }
    for name, (value, period) in cycles.items():
        for k in range(1, config.calendar_harmonics + 1):
            out[f"{name}_sin_{k}"] = np.sin(2.0 * np.pi * k * value / period)
            out[f"{name}_cos_{k}"] = np.cos(2.0 * np.pi * k * value / period)
    return out


# ---------------------------------------------------------------------------------------------------- checks


def max_difference(ours: pl.DataFrame, reference: pd.DataFrame, names: list[str]) -> float:
    """Largest |ours - reference| over every feature; raises if a column's missing cells differ."""
    worst = 0.0
    for name in names:
        a = ours[name].to_numpy()
        b = reference[name].to_numpy(dtype=np.float64)
        missing_a, missing_b = np.isnan(a), np.isnan(b)
        if not np.array_equal(missing_a, missing_b):
            raise AssertionError(
                f"{name}: missing cells differ ({int((missing_a & ~missing_b).sum())} only ours, "
                f"{int((missing_b & ~missing_a).sum())} only the reference)"
            )
        if (~missing_a).any():
            diff = float(np.max(np.abs(a[~missing_a] - b[~missing_a])))
            if diff > TOLERANCE:
                raise AssertionError(f"{name}: max |ours - reference| = {diff:.3g} > {TOLERANCE}")
            worst = max(worst, diff)
    return worst


def median_seconds(run: Callable[[], object], repeats: int) -> float:
    run()  # warm-up: imports, thread pools, first-touch memory
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# ---------------------------------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed repetitions per side (median reported)")
    parser.add_argument("--quick", action="store_true", help="20 x 252 bars, to smoke-test the script")
    args = parser.parse_args()
    n_symbols, n_bars = (20, 252) if args.quick else (500, 2_520)
    config = FeatureConfig()

    started = time.perf_counter()
    bars = make_bars(n_symbols, n_bars)
    bars_pd = bars.to_pandas()
    print(f"generated {bars.height:,} bars in {time.perf_counter() - started:.1f}s; {args.repeats} repeats per side")

    ours_frame = build_features(bars, config)
    reference_frame = pandas_features(bars_pd, config)
    same_rows = ours_frame["symbol"].to_list() == reference_frame["symbol"].tolist()
    if not same_rows or ours_frame["ts"].to_list() != reference_frame["ts"].tolist():
        raise AssertionError("rows differ between ours and the reference")
    difference = max_difference(ours_frame, reference_frame, config.names)

    ours = median_seconds(lambda: build_features(bars, config), args.repeats)
    reference = median_seconds(lambda: pandas_features(bars_pd, config), args.repeats)

    header = f"{'side':<10} {'rows':>10} {'features':>9} {'median s':>9} {'rows/s':>12}"
    print(header)
    print("-" * len(header))
    for side, seconds in (("ours", ours), ("pandas", reference)):
        print(f"{side:<10} {bars.height:>10,} {len(config.names):>9} {seconds:>9.3f} {bars.height / seconds:>12,.0f}")
    print(f"max |ours - pandas| over all features: {difference:.2e} (tolerance {TOLERANCE:g}); "
          f"speed-up {reference / ours:.2f}x")  # fmt: skip
    print(
        json.dumps(
            {
                "benchmark": "features",
                "ours": round(ours, 4),
                "reference": round(reference, 4),
                "unit": "s",
                "ratio": round(reference / ours, 4),
            }
        )
    )


if __name__ == "__main__":
    main()
