"""The backtester: target weights [T, A] + asset returns [T, A] -> equity, held weights, trades, turnover, costs, KPIs.

Timing (no look-ahead). Row t of every array is the close of bar t. `target_weights[t]` is decided with information
available at that close, and the trade to it executes at that same close (price[t]). The positions held after that
trade earn the asset returns of the next bar: positions[t] earn returns[t + 1], where
returns[t + 1, i] = price[t + 1, i] / price[t, i] - 1. So at every bar t, in this order:

1. Drift (t > 0): each holding's value is multiplied by 1 + returns[t, i]; cash by 1 + cash return per bar.
   Pre-trade equity E_pre[t] = cash + sum of holdings.
2. Rebalance, if t is a rebalance bar (t % rebalance_every == 0 and the target row is not entirely NaN): the target row
   (NaN entries read as 0) is first capped by the exposure limits (`sizing.apply_limits`: net cap, then gross cap);
   each holding is then set to target[t, i] * max(E_pre[t], 0) (a bankrupt book is liquidated). The signed traded
   value is trade[t, i] = target[t, i] * max(E_pre[t], 0) - holding before; cash pays the trades and their costs
   (`costs.CostModel`, charged on |trade| at this bar). Targets are fractions of pre-trade equity.
3. Equity[t] = cash + sum of holdings (after costs); weights[t] = holdings / equity[t] (the positions that earn
   returns[t + 1]).

So returns_p[t] = sum_i weights[t - 1, i] * returns[t, i] + (1 - sum_i weights[t - 1, i]) * cash_return
- costs[t] / equity[t - 1], with equity[-1] = initial capital. Cash is equity minus the holdings (it includes short
proceeds; negative cash is borrowing at the same rate). Between rebalances the weights drift with prices.

The per-bar recursion is inherently sequential (costs feed back into the equity that sizes the next trade), so it runs
as one small numba kernel over [T, A]; everything around it (returns, limits, cost rates, impact) is vectorised NumPy,
except the trailing volatility of the impact term (a numba running window, `sizing.rolling_moments`).
`finfusion.evaluation.backtest_reference` is the same semantics as a plain Python loop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from numba import njit

from finfusion.evaluation.costs import CostModel
from finfusion.evaluation.sizing import apply_limits

#: Below this per-bar standard deviation, a return series counts as riskless (ratios become +-inf, or NaN at 0).
ZERO_VOL = 1e-12


@dataclass(frozen=True)
class BacktestConfig:
    """How the book is run. `cash_rate` is annual, compounded per bar: (1 + cash_rate) ** (1 / periods_per_year) - 1."""

    initial_capital: float = 1_000_000.0
    rebalance_every: int = 1
    max_gross: float | None = None
    max_net: float | None = None
    cash_rate: float = 0.0
    periods_per_year: int = 252
    costs: CostModel = field(default_factory=CostModel)

    def __post_init__(self) -> None:
        if self.initial_capital <= 0:
            raise ValueError(f"initial_capital must be positive, got {self.initial_capital}")
        if self.rebalance_every < 1:
            raise ValueError(f"rebalance_every must be at least 1, got {self.rebalance_every}")
        if self.periods_per_year < 1:
            raise ValueError(f"periods_per_year must be at least 1, got {self.periods_per_year}")

    @property
    def cash_return(self) -> float:
        """Return of cash over one bar."""
        return (1.0 + self.cash_rate) ** (1.0 / self.periods_per_year) - 1.0


@dataclass
class Benchmark:
    """The buy-and-hold benchmark's equity, returns, turnover and costs [T] (same meaning as in `BacktestResult`)."""

    equity: np.ndarray
    returns: np.ndarray
    turnover: np.ndarray
    costs: np.ndarray


@dataclass
class BacktestResult:
    """What a backtest produced. Money is in the currency of `config.initial_capital`.

    equity [T]: post-trade, post-cost equity at each close. returns [T]: equity[t] / equity[t - 1] - 1 (equity[-1] is
    the initial capital). weights [T, A]: held positions / equity after trading at t (NaN once equity <= 0).
    trades [T, A]: signed traded value at t. turnover [T]: sum |trades[t]| / pre-trade equity (0 without a trade, NaN
    when the pre-trade equity is <= 0). costs [T]: cost paid at t. rebalanced [T]: whether t was a rebalance bar.
    benchmark: buy-and-hold equal weight of the universe (the assets with a finite price, or all with returns only),
    bought at the strategy's first rebalance bar under the same costs and never rebalanced.
    """

    equity: np.ndarray
    returns: np.ndarray
    weights: np.ndarray
    trades: np.ndarray
    turnover: np.ndarray
    costs: np.ndarray
    rebalanced: np.ndarray
    config: BacktestConfig
    benchmark: Benchmark | None = None


def returns_from_prices(prices: np.ndarray) -> np.ndarray:
    """Simple returns [T, A] from prices [T, A]: price[t] / price[t - 1] - 1; row 0 and missing prices give NaN."""
    p = np.asarray(prices, dtype=np.float64)
    if not (p > 0).all() or not np.isfinite(p).all():
        p = np.where(np.isfinite(p) & (p > 0), p, np.nan)
    out = np.empty(p.shape)
    out[:1] = np.nan
    np.divide(p[1:], p[:-1], out=out[1:])
    out[1:] -= 1.0
    return out


@njit(cache=True)
def _simulate(
    returns: np.ndarray,
    targets: np.ndarray,
    rebalance: np.ndarray,
    linear_rate: np.ndarray,
    impact: np.ndarray,
    has_impact: bool,
    cash_return: float,
    capital: float,
    equity: np.ndarray,
    weights: np.ndarray,
    trades: np.ndarray,
    turnover: np.ndarray,
    costs: np.ndarray,
    record_weights: bool,
) -> None:
    """The per-bar recursion, filling equity [T], trades [T, A] (zero-filled by the caller; only rebalance rows are
    written), turnover [T], costs [T] and, if `record_weights`, weights [T, A]. The caller allocates the outputs:
    NumPy reuses large blocks where numba's allocator faults in fresh pages. returns and targets [T, A] (non-finite
    read as 0), linear_rate and impact [T, A] (finite; may be zero-stride broadcasts), rebalance [T] bool; the impact
    cost k * |trade| ** 1.5 is a second pass over the row, run only if `has_impact`."""
    n_bars, n_assets = returns.shape
    holdings = np.zeros(n_assets)
    cash = capital
    for t in range(n_bars):
        value = cash
        if t > 0:
            cash *= 1.0 + cash_return
            value = cash
            for i in range(n_assets):
                move = returns[t, i]
                holdings[i] *= 1.0 + (move if np.isfinite(move) else 0.0)
                value += holdings[i]
        turnover[t] = 0.0
        costs[t] = 0.0
        if rebalance[t]:
            base = max(value, 0.0)
            traded = 0.0
            cost = 0.0
            invested = 0.0
            for i in range(n_assets):
                weight = targets[t, i]
                target = (weight if np.isfinite(weight) else 0.0) * base
                trade = target - holdings[i]
                size = abs(trade)
                cost += size * linear_rate[t, i]
                traded += size
                trades[t, i] = trade
                cash -= trade
                holdings[i] = target
                invested += target
            if has_impact:
                for i in range(n_assets):
                    size = abs(trades[t, i])
                    cost += impact[t, i] * size * np.sqrt(size)
            cash -= cost
            costs[t] = cost
            turnover[t] = traded / value if value > 0 else np.nan
            value = cash + invested
        equity[t] = value
        if record_weights:
            scale = 1.0 / value if value > 0 else np.nan
            for i in range(n_assets):
                weights[t, i] = holdings[i] * scale


def run_backtest(
    target_weights: np.ndarray,
    *,
    returns: np.ndarray | None = None,
    prices: np.ndarray | None = None,
    config: BacktestConfig | None = None,
    adv: np.ndarray | None = None,
) -> BacktestResult:
    """Run target weights [T, A] through the market; see the module docstring for the exact timing and costs.

    Give `returns` [T, A] (row t: the return from close t - 1 to close t) or `prices` [T, A] (returns are computed
    from them); both may be given (prices then only price the per-share commission and define the benchmark's
    universe). NaN returns count as 0 (the holding keeps its value). An all-NaN target row is no decision: no trade,
    positions drift. `adv` [T, A] is the average traded value per bar known at t (currency), for market impact.
    """
    cfg = config or BacktestConfig()
    target = np.asarray(target_weights, dtype=np.float64)
    if target.ndim != 2:
        raise ValueError(f"target_weights must be a [T, A] array, got shape {target.shape}")
    if returns is None:
        if prices is None:
            raise ValueError("give returns or prices")
        returns = returns_from_prices(prices)
    r = np.asarray(returns, dtype=np.float64)
    for name, array in (("returns", r), ("prices", prices), ("adv", adv)):
        if array is not None and np.shape(array) != target.shape:
            raise ValueError(f"{name} {np.shape(array)} must have the shape of target_weights {target.shape}")
    decided = np.isfinite(target).any(axis=1)
    rebalance = decided & (np.arange(target.shape[0]) % cfg.rebalance_every == 0)
    if cfg.max_gross is not None or cfg.max_net is not None:
        target = apply_limits(target, max_gross=cfg.max_gross, max_net=cfg.max_net)
    linear_rate = cfg.costs.linear_rate(target.shape, prices)
    impact = cfg.costs.impact_factor(r, adv) if adv is not None and cfg.costs.impact_coef > 0 else None
    result = _run(r, target, rebalance, linear_rate, impact, cfg)
    bench_target = np.zeros(target.shape)
    bench_rebalance = np.zeros_like(rebalance)
    if target.shape[0]:
        entry = int(np.argmax(rebalance)) if rebalance.any() else 0
        universe = np.ones(target.shape[1], dtype=bool) if prices is None else np.isfinite(np.asarray(prices)[entry])
        bench_target[entry] = np.where(universe, 1.0 / max(int(universe.sum()), 1), 0.0)
        bench_rebalance[entry] = True
    bench = _run(r, bench_target, bench_rebalance, linear_rate, impact, cfg, record_weights=False)
    result.benchmark = Benchmark(bench.equity, bench.returns, bench.turnover, bench.costs)
    return result


def _run(
    returns: np.ndarray,
    targets: np.ndarray,
    rebalance: np.ndarray,
    linear_rate: np.ndarray,
    impact: np.ndarray | None,
    cfg: BacktestConfig,
    *,
    record_weights: bool = True,
) -> BacktestResult:
    n_bars, n_assets = returns.shape
    impact_factor = np.broadcast_to(0.0, returns.shape) if impact is None else impact
    equity, turnover, costs = np.empty(n_bars), np.empty(n_bars), np.empty(n_bars)
    weights = np.empty((n_bars if record_weights else 0, n_assets))
    trades = np.zeros((n_bars, n_assets))
    _simulate(
        returns, targets, rebalance, linear_rate, impact_factor, impact is not None, cfg.cash_return,
        float(cfg.initial_capital), equity, weights, trades, turnover, costs, record_weights,
    )  # fmt: skip
    previous = np.concatenate([[cfg.initial_capital], equity])[:-1]
    period_returns = np.divide(equity, previous, out=np.full_like(equity, np.nan), where=previous > 0) - 1.0
    return BacktestResult(equity, period_returns, weights, trades, turnover, costs, rebalance, cfg)


def _ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator, with a (numerically) zero denominator giving +-inf, or NaN for 0 / 0."""
    if not math.isfinite(denominator) or not math.isfinite(numerator):
        return math.nan
    if denominator > ZERO_VOL:
        return numerator / denominator
    return math.copysign(math.inf, numerator) if numerator != 0 else math.nan


def drawdown_stats(equity: np.ndarray, initial: float) -> tuple[float, int]:
    """Max drawdown (fraction below the running peak, >= 0) and its duration: the longest run of consecutive bars
    spent below the running peak (the initial capital is the first peak; an unrecovered run counts to the end)."""
    curve = np.concatenate([[initial], np.asarray(equity, dtype=np.float64)])
    peak = np.maximum.accumulate(curve)
    drawdown = 1.0 - curve / peak
    below = curve < peak
    if not below.any():
        return float(drawdown.max()), 0
    index = np.arange(curve.size)
    last_peak = np.maximum.accumulate(np.where(below, 0, index))
    return float(drawdown.max()), int((index - last_peak).max())


def series_kpis(
    equity: np.ndarray,
    returns: np.ndarray,
    turnover: np.ndarray,
    costs: np.ndarray,
    *,
    initial: float,
    cash_return: float = 0.0,
    periods_per_year: int = 252,
) -> dict[str, float]:
    """KPIs of one equity curve [T] with its per-bar returns, turnover and costs [T].

    total_return = equity[-1] / initial - 1; annual_return = (equity[-1] / initial) ** (periods_per_year / T) - 1
    (-1 once equity <= 0); annual_volatility = std(returns, ddof=1) * sqrt(periods_per_year); with excess returns
    x = returns - cash_return: sharpe = mean(x) / std(x, ddof=1) * sqrt(ppy), sortino = mean(x) / sqrt(mean(min(x,
    0) ** 2)) * sqrt(ppy); max_drawdown and max_drawdown_duration (bars) as `drawdown_stats`; calmar = annual_return /
    max_drawdown; avg_turnover = mean per-bar turnover, annual_turnover = avg_turnover * ppy; hit_rate = share of bars
    with a positive return among bars with a non-zero return; total_costs = sum(costs) / initial. A (numerically) zero
    denominator gives +-inf, 0 / 0 gives NaN.
    """
    r = np.asarray(returns, dtype=np.float64)
    n = r.size
    ann = math.sqrt(periods_per_year)
    growth = equity[-1] / initial if n else 1.0
    annual_return = growth ** (periods_per_year / n) - 1.0 if n and growth > 0 else (-1.0 if n else float("nan"))
    excess = r - cash_return
    vol = float(np.std(r, ddof=1)) if n > 1 else float("nan")
    excess_vol = float(np.std(excess, ddof=1)) if n > 1 else float("nan")
    mean_excess = float(excess.mean()) if n else float("nan")
    downside = float(np.sqrt(np.mean(np.minimum(excess, 0.0) ** 2))) if n else float("nan")
    max_dd, duration = drawdown_stats(equity, initial)
    moved = r[np.isfinite(r) & (r != 0)]
    avg_turnover = float(np.nanmean(turnover)) if n and np.isfinite(turnover).any() else 0.0
    return {
        "total_return": float(growth - 1.0),
        "annual_return": float(annual_return),
        "annual_volatility": vol * ann,
        "sharpe": _ratio(mean_excess, excess_vol) * ann,
        "sortino": _ratio(mean_excess, downside) * ann,
        "calmar": _ratio(float(annual_return), max_dd),
        "max_drawdown": max_dd,
        "max_drawdown_duration": float(duration),
        "avg_turnover": avg_turnover,
        "annual_turnover": avg_turnover * periods_per_year,
        "hit_rate": float((moved > 0).mean()) if moved.size else float("nan"),
        "total_costs": float(np.sum(costs) / initial),
        "bars": float(n),
    }


def kpis(result: BacktestResult, periods_per_year: int = 252) -> dict[str, float]:
    """Strategy KPIs (`series_kpis`), the same for the buy-and-hold benchmark prefixed `benchmark_`, and the excess:
    excess_total_return, excess_annual_return (strategy minus benchmark), tracking_error = std(r - r_b, ddof=1) *
    sqrt(ppy) and information_ratio = mean(r - r_b) / std(r - r_b, ddof=1) * sqrt(ppy)."""
    cfg = result.config

    def of(res: BacktestResult | Benchmark) -> dict[str, float]:
        return series_kpis(
            res.equity, res.returns, res.turnover, res.costs, initial=cfg.initial_capital,
            cash_return=cfg.cash_return, periods_per_year=periods_per_year,
        )  # fmt: skip

    out = of(result)
    if result.benchmark is None:
        return out
    bench = of(result.benchmark)
    out.update({f"benchmark_{key}": value for key, value in bench.items() if key != "bars"})
    active = result.returns - result.benchmark.returns
    active_vol = float(np.std(active, ddof=1)) if active.size > 1 else float("nan")
    ann = math.sqrt(periods_per_year)
    out["excess_total_return"] = out["total_return"] - bench["total_return"]
    out["excess_annual_return"] = out["annual_return"] - bench["annual_return"]
    out["tracking_error"] = active_vol * ann
    out["information_ratio"] = _ratio(float(active.mean()) if active.size else float("nan"), active_vol) * ann
    return out
