"""Backtest speed: our `run_backtest` against vectorbt's `Portfolio.from_orders` (target percent, cash sharing).

The case, generated from one seed: 500 assets x 2,520 daily closes (geometric random walks, daily volatility drawn
in 1-3%), and a noisy forecast of the next bar's return (signal[t] = return[t + 1] + noise with 20x the return's
volatility; the last bar has no signal). Every bar the weights are the decile long/short of the signal (the 50
highest long, the 50 lowest short, equal weight, gross 1, net 0), traded at the close with 10 bps proportional costs
(ours: half-spread 5 + commission 3 + slippage 2 bps, no impact; vectorbt: fees=0.001). Timing: ours trades at
close t from pre-trade equity and the positions earn close t -> t + 1; vectorbt with size_type="targetpercent",
cash_sharing=True, group_by=True, call_seq="auto" and its default update_value=False does the same, so both must
end with the same total return (checked to a relative 1e-6; they agree to about 1e-13, float rounding).

Measured in the same run: ours is `run_backtest(weights, prices=close, config)` (returns from prices, the numba
per-bar recursion, and the buy-and-hold benchmark too), median of 5; vectorbt is the `from_orders` call alone (its
simulation; the equity curve is computed afterwards, outside the timing), median of 3. Both sides are first called
once on a 20 x 5 slice so that numba compilation is not timed. For information, ours is also timed with the square-
root impact on (an ADV per asset), which vectorbt cannot model. The last line is one JSON object:
{"benchmark": "backtest", "ours": s, "reference": s, "unit": "s", "ratio": reference / ours}, ratio > 1 meaning we
are faster.

    python benchmarks/backtest.py            # full size (under a minute)
    python benchmarks/backtest.py --quick    # 50 x 252, to smoke-test the script
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import numpy as np
import pandas as pd
import vectorbt as vbt

from finfusion.evaluation.backtest import BacktestConfig, BacktestResult, run_backtest
from finfusion.evaluation.costs import CostModel
from finfusion.evaluation.sizing import top_k_weights

SEED = 20240601
CAPITAL = 1_000_000.0
COSTS = CostModel(half_spread_bps=5.0, commission_bps=3.0, slippage_bps=2.0, impact_coef=0.0)
WITH_IMPACT = CostModel(half_spread_bps=5.0, commission_bps=3.0, slippage_bps=2.0, impact_coef=0.1)
TOLERANCE = 1e-6


def make_case(n_bars: int, n_assets: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Closes [T, A], decile long/short weights [T, A] (last row NaN: no decision) and an ADV [T, A] (currency)."""
    rng = np.random.default_rng(seed)
    vol = rng.uniform(0.01, 0.03, n_assets)
    log_returns = rng.normal(0.0002, 1.0, (n_bars, n_assets)) * vol
    close = 20.0 * rng.uniform(1.0, 5.0, n_assets) * np.exp(np.cumsum(log_returns, axis=0))
    simple = np.full((n_bars, n_assets), np.nan)
    simple[1:] = close[1:] / close[:-1] - 1.0
    signal = np.full((n_bars, n_assets), np.nan)
    signal[:-1] = simple[1:] + rng.normal(0.0, 20.0, (n_bars - 1, n_assets)) * vol
    weights = top_k_weights(signal, max(1, n_assets // 10))
    adv = close * rng.uniform(1e5, 1e6, n_assets)
    return close, weights, adv


def ours(close: np.ndarray, weights: np.ndarray, costs: CostModel, adv: np.ndarray | None = None) -> BacktestResult:
    return run_backtest(weights, prices=close, config=BacktestConfig(initial_capital=CAPITAL, costs=costs), adv=adv)


def vectorbt(close: pd.DataFrame, weights: pd.DataFrame) -> vbt.Portfolio:
    return vbt.Portfolio.from_orders(
        close, size=weights, size_type="targetpercent", cash_sharing=True, group_by=True,
        fees=COSTS.proportional_rate, call_seq="auto", init_cash=CAPITAL, freq="1D",
    )  # fmt: skip


def median_seconds(call: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="50 assets x 252 bars, to smoke-test the script")
    args = parser.parse_args()
    n_bars, n_assets = (252, 50) if args.quick else (2_520, 500)
    close, weights, adv = make_case(n_bars, n_assets, SEED)
    index = pd.date_range("2010-01-01", periods=n_bars, freq="D")
    close_df, weights_df = pd.DataFrame(close, index=index), pd.DataFrame(weights, index=index)

    ours(close[:20, :5], weights[:20, :5], COSTS)  # warm-up: numba compilation
    ours(close[:20, :5], weights[:20, :5], WITH_IMPACT, adv[:20, :5])
    vectorbt(close_df.iloc[:20, :5], weights_df.iloc[:20, :5]).total_return()

    ours_s = median_seconds(lambda: ours(close, weights, COSTS), 5)
    impact_s = median_seconds(lambda: ours(close, weights, WITH_IMPACT, adv), 5)
    vbt_s = median_seconds(lambda: vectorbt(close_df, weights_df), 3)

    result = ours(close, weights, COSTS)
    portfolio = vectorbt(close_df, weights_df)
    ours_total = float(result.equity[-1] / CAPITAL - 1.0)
    vbt_total = float(portfolio.total_return())
    impact_total = float(ours(close, weights, WITH_IMPACT, adv).equity[-1] / CAPITAL - 1.0)
    curve_gap = float(np.max(np.abs(result.equity / portfolio.value().to_numpy() - 1.0)))
    relative = abs(ours_total - vbt_total) / abs(vbt_total)
    assert relative <= TOLERANCE, f"total returns differ: ours {ours_total!r}, vectorbt {vbt_total!r}"

    print(f"{n_assets} assets x {n_bars:,} bars, decile long/short daily, 10 bps costs; medians of 5 (ours), 3 (vbt)")
    header = f"{'side':<28} {'seconds':>9} {'total return':>14} {'vs ours':>8}"
    print(header)
    print("-" * len(header))
    print(f"{'finfusion run_backtest':<28} {ours_s:>9.4f} {ours_total:>14.6f} {1.0:>8.2f}")
    print(f"{'finfusion + sqrt impact':<28} {impact_s:>9.4f} {impact_total:>14.6f} {impact_s / ours_s:>8.2f}")
    print(f"{'vectorbt from_orders':<28} {vbt_s:>9.4f} {vbt_total:>14.6f} {vbt_s / ours_s:>8.2f}")
    print(
        f"total return relative difference {relative:.1e}; equity curves differ by at most {curve_gap:.1e} (relative)"
    )
    print(json.dumps({"benchmark": "backtest", "ours": round(ours_s, 6), "reference": round(vbt_s, 6), "unit": "s",
                      "ratio": round(vbt_s / ours_s, 4)}))  # fmt: skip


if __name__ == "__main__":
    main()
