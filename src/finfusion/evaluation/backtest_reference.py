"""The backtester's readable specification: a plain per-bar, per-asset Python loop (slow; for tests and for reading).

It implements exactly the semantics of `finfusion.evaluation.backtest.run_backtest` (see that module's docstring for
the timing) and of the top-k sizing, without sharing any of their numerical code, so the tests can hold the fast
versions to it on random cases. At each bar t:

    drift:      holding[i] *= 1 + return[t, i]  (t > 0; a NaN return counts as 0);  cash *= 1 + cash return
    pre-trade:  E_pre = cash + sum(holding)
    rebalance:  only if t % rebalance_every == 0 and row t of the targets has a finite value; targets are capped
                (net cap on the side in excess, then gross cap), then for every asset
                    trade = target[i] * max(E_pre, 0) - holding[i]
                    cost += |trade| * (proportional rate + per-share commission / price)
                            + impact_coef * sigma[t, i] * sqrt(|trade| / adv[t, i]) * |trade|
                    cash -= trade;  holding[i] = target[i] * max(E_pre, 0)
                cash -= cost
    record:     equity[t] = cash + sum(holding);  weight[t, i] = holding[i] / equity[t] (NaN if equity[t] <= 0)

The benchmark is the same loop with one rebalance: equal weights over the assets with a finite price (all assets
without prices) at the first bar that rebalances, held to the end.
"""

from __future__ import annotations

import math
import statistics

import numpy as np

from finfusion.evaluation.backtest import BacktestConfig, BacktestResult, Benchmark


def _finite(x: float) -> bool:
    return math.isfinite(x)


def reference_returns(prices: np.ndarray) -> np.ndarray:
    """price[t] / price[t - 1] - 1 per asset; NaN on row 0 and wherever either price is missing or not positive."""
    n_bars, n_assets = prices.shape
    out = np.full((n_bars, n_assets), np.nan)
    for t in range(1, n_bars):
        for i in range(n_assets):
            now, before = float(prices[t, i]), float(prices[t - 1, i])
            if _finite(now) and _finite(before) and now > 0 and before > 0:
                out[t, i] = now / before - 1.0
    return out


def reference_limits(row: list[float], max_gross: float | None, max_net: float | None) -> list[float]:
    """One target row (NaN read as 0) capped: the side in excess of the net cap is scaled, then the gross cap."""
    w = [x if _finite(x) else 0.0 for x in row]
    if max_net is not None:
        longs = sum(x for x in w if x > 0)
        shorts = -sum(x for x in w if x < 0)
        if longs - shorts > max_net:
            factor = (shorts + max_net) / longs
            w = [x * factor if x > 0 else x for x in w]
        elif shorts - longs > max_net:
            factor = (longs + max_net) / shorts
            w = [x * factor if x < 0 else x for x in w]
    if max_gross is not None:
        gross = sum(abs(x) for x in w)
        if gross > max_gross:
            w = [x * max_gross / gross for x in w]
    return w


def reference_sigma(returns: np.ndarray, t: int, i: int, window: int, default: float) -> float:
    """Sample standard deviation of the finite returns of asset i in rows t - window + 1 .. t (default if < 2)."""
    values = [float(returns[s, i]) for s in range(max(0, t - window + 1), t + 1) if _finite(float(returns[s, i]))]
    return statistics.stdev(values) if len(values) >= 2 else default


def _simulate(
    returns: np.ndarray,
    targets: list[list[float] | None],
    config: BacktestConfig,
    prices: np.ndarray | None,
    adv: np.ndarray | None,
) -> BacktestResult:
    n_bars, n_assets = returns.shape
    costs_model = config.costs
    cash_return = (1.0 + config.cash_rate) ** (1.0 / config.periods_per_year) - 1.0
    holding = [0.0] * n_assets
    cash = config.initial_capital
    equity = np.zeros(n_bars)
    weights = np.zeros((n_bars, n_assets))
    trades = np.zeros((n_bars, n_assets))
    turnover = np.zeros(n_bars)
    costs = np.zeros(n_bars)
    rebalanced = np.zeros(n_bars, dtype=bool)
    for t in range(n_bars):
        if t > 0:
            cash = cash * (1.0 + cash_return)
            for i in range(n_assets):
                r = float(returns[t, i])
                holding[i] = holding[i] * (1.0 + (r if _finite(r) else 0.0))
        row = targets[t]
        if row is not None:
            rebalanced[t] = True
            pre = cash + sum(holding)
            base = max(pre, 0.0)
            traded = 0.0
            cost = 0.0
            for i in range(n_assets):
                trade = row[i] * base - holding[i]
                size = abs(trade)
                rate = costs_model.proportional_rate
                if costs_model.commission_per_share > 0 and prices is not None:
                    price = float(prices[t, i])
                    if _finite(price) and price > 0:
                        rate += costs_model.commission_per_share / price
                cost += size * rate
                if adv is not None and costs_model.impact_coef > 0:
                    volume = float(adv[t, i])
                    if _finite(volume) and volume > 0:
                        sigma = reference_sigma(returns, t, i, costs_model.vol_window, costs_model.default_daily_vol)
                        cost += costs_model.impact_coef * sigma * math.sqrt(size / volume) * size
                traded += size
                trades[t, i] = trade
                cash -= trade
                holding[i] = row[i] * base
            cash -= cost
            costs[t] = cost
            turnover[t] = traded / pre if pre > 0 else math.nan
        value = cash + sum(holding)
        equity[t] = value
        for i in range(n_assets):
            weights[t, i] = holding[i] / value if value > 0 else math.nan
    period_returns = np.zeros(n_bars)
    previous = config.initial_capital
    for t in range(n_bars):
        period_returns[t] = equity[t] / previous - 1.0 if previous > 0 else math.nan
        previous = equity[t]
    return BacktestResult(equity, period_returns, weights, trades, turnover, costs, rebalanced, config)


def reference_backtest(
    target_weights: np.ndarray,
    *,
    returns: np.ndarray | None = None,
    prices: np.ndarray | None = None,
    config: BacktestConfig | None = None,
    adv: np.ndarray | None = None,
) -> BacktestResult:
    """Same contract as `run_backtest`, one bar and one asset at a time."""
    cfg = config or BacktestConfig()
    if returns is None:
        if prices is None:
            raise ValueError("give returns or prices")
        returns = reference_returns(prices)
    n_bars, n_assets = returns.shape
    targets: list[list[float] | None] = []
    for t in range(n_bars):
        row = [float(x) for x in target_weights[t]]
        if t % cfg.rebalance_every == 0 and any(_finite(x) for x in row):
            targets.append(reference_limits(row, cfg.max_gross, cfg.max_net))
        else:
            targets.append(None)
    result = _simulate(returns, targets, cfg, prices, adv)
    bench: list[list[float] | None] = [None] * n_bars
    entry = next((t for t in range(n_bars) if targets[t] is not None), 0)
    if n_bars:
        held = [prices is None or _finite(float(prices[entry, i])) for i in range(n_assets)]
        count = max(sum(held), 1)
        bench[entry] = [1.0 / count if keep else 0.0 for keep in held]
    held = _simulate(returns, bench, cfg, prices, adv)
    result.benchmark = Benchmark(held.equity, held.returns, held.turnover, held.costs)
    return result


def reference_top_k(scores: np.ndarray, k: int, weighting: str = "equal", long_only: bool = False) -> np.ndarray:
    """`sizing.top_k_weights`, row by row with sorted(): rank by descending score, ties by column; the first k_eff
    are long, the last k_eff short."""
    n_bars, n_assets = scores.shape
    out = np.zeros((n_bars, n_assets))
    for t in range(n_bars):
        valid = [(float(scores[t, i]), i) for i in range(n_assets) if _finite(float(scores[t, i]))]
        if not valid:
            out[t, :] = math.nan
            continue
        k_eff = min(k, len(valid) if long_only else len(valid) // 2)
        if k_eff == 0:
            continue
        median = statistics.median(s for s, _ in valid)
        ranked = sorted(valid, key=lambda pair: (-pair[0], pair[1]))
        sides = [(ranked[:k_eff], 1.0 if long_only else 0.5, 1.0)]
        if not long_only:
            sides.append((ranked[len(ranked) - k_eff :], 0.5, -1.0))
        for members, share, sign in sides:
            distances = [max(sign * (s - median), 0.0) for s, _ in members]
            total = sum(distances)
            for (_, i), distance in zip(members, distances, strict=True):
                if weighting == "score" and total > 0:
                    out[t, i] += sign * share * distance / total
                else:
                    out[t, i] += sign * share / k_eff
    return out
