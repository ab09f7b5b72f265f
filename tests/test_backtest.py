"""The backtester: vectorised == per-bar reference loop, hand cases, KPIs, no look-ahead, vectorbt, the command."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import typer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from finfusion.commands.backtest import backtest
from finfusion.data.lake import Lake
from finfusion.data.schema import BARS
from finfusion.evaluation.backtest import (
    BacktestConfig,
    BacktestResult,
    drawdown_stats,
    kpis,
    returns_from_prices,
    run_backtest,
    series_kpis,
)
from finfusion.evaluation.backtest_reference import reference_backtest, reference_top_k
from finfusion.evaluation.costs import NO_COSTS, CostModel, trailing_adv
from finfusion.evaluation.run_layout import load_equity, load_weights
from finfusion.evaluation.sizing import (
    apply_limits,
    fixed_fraction_weights,
    kelly_weights,
    top_k_abs_weights,
    top_k_weights,
    trailing_vol,
    vol_target_weights,
)

CAPITAL = 1_000_000.0
FLAT_10BPS = CostModel(half_spread_bps=5.0, commission_bps=3.0, slippage_bps=2.0, impact_coef=0.0)


def random_walk(rng: np.random.Generator, n_bars: int, n_assets: int, sigma: float = 0.02) -> np.ndarray:
    """Positive prices [T, A]."""
    return 50.0 * np.exp(np.cumsum(rng.normal(0.0, sigma, (n_bars, n_assets)), axis=0))


def assert_same(fast: BacktestResult, slow: BacktestResult) -> None:
    """Vectorised and reference results agree to 1e-9 (money relative to the capital, ratios absolutely)."""
    capital = fast.config.initial_capital
    money = {"atol": 1e-9 * capital, "rtol": 1e-9}
    np.testing.assert_array_equal(fast.rebalanced, slow.rebalanced)
    np.testing.assert_allclose(fast.equity, slow.equity, **money)
    np.testing.assert_allclose(fast.costs, slow.costs, **money)
    np.testing.assert_allclose(fast.trades, slow.trades, **money)
    held = np.nan_to_num(fast.weights) * fast.equity[:, None]
    np.testing.assert_allclose(held, np.nan_to_num(slow.weights) * slow.equity[:, None], **money)
    pre = fast.equity + fast.costs
    usable = np.abs(pre) > 1e-6 * capital
    np.testing.assert_allclose(fast.turnover[usable], slow.turnover[usable], rtol=1e-9, atol=1e-9)
    assert fast.benchmark is not None and slow.benchmark is not None
    np.testing.assert_allclose(fast.benchmark.equity, slow.benchmark.equity, **money)
    np.testing.assert_allclose(fast.benchmark.costs, slow.benchmark.costs, **money)


# ------------------------------------------------------------------ vectorised == reference loop (hypothesis)


@st.composite
def cases(draw: st.DrawFn) -> dict:
    n_bars = draw(st.integers(2, 30))
    n_assets = draw(st.integers(1, 6))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    prices = random_walk(rng, n_bars, n_assets, sigma=draw(st.sampled_from([0.01, 0.05])))
    if draw(st.booleans()):
        prices[rng.random(prices.shape) < 0.1] = np.nan
    if draw(st.booleans()):
        k = draw(st.integers(1, 3))
        scores = rng.normal(size=(n_bars, n_assets)).round(draw(st.sampled_from([0, 3])))  # rounding makes ties
        scores[rng.random(scores.shape) < 0.15] = np.nan
        weighting = draw(st.sampled_from(["equal", "score"]))
        long_only = draw(st.booleans())
        target = top_k_weights(scores, k, weighting=weighting, long_only=long_only)
        np.testing.assert_allclose(target, reference_top_k(scores, k, weighting, long_only), atol=1e-12)
    else:
        target = rng.uniform(-1.0, 1.0, (n_bars, n_assets))
        target[rng.random(target.shape) < 0.1] = np.nan
    target[rng.random(n_bars) < 0.2] = np.nan  # bars without a decision
    inputs = draw(st.sampled_from(["prices", "returns", "both"]))
    costs = CostModel(
        half_spread_bps=draw(st.floats(0, 20)), commission_bps=draw(st.floats(0, 10)),
        commission_per_share=0.0 if inputs == "returns" else draw(st.sampled_from([0.0, 0.01])),
        slippage_bps=draw(st.floats(0, 10)),
        impact_coef=draw(st.sampled_from([0.0, 0.5])), vol_window=draw(st.integers(2, 5)),
    )  # fmt: skip
    config = BacktestConfig(
        initial_capital=CAPITAL, rebalance_every=draw(st.integers(1, 4)),
        max_gross=draw(st.one_of(st.none(), st.floats(0.1, 3.0))), max_net=draw(st.one_of(st.none(), st.floats(0, 1))),
        cash_rate=draw(st.sampled_from([0.0, 0.05])), costs=costs,
    )  # fmt: skip
    adv = None
    if draw(st.booleans()):
        adv = rng.uniform(1e5, 1e7, (n_bars, n_assets))
        adv[rng.random(adv.shape) < 0.1] = np.nan
    market = {"prices": prices} if inputs != "returns" else {}
    if inputs != "prices":
        market["returns"] = returns_from_prices(prices)
    return {"target": target, "market": market, "config": config, "adv": adv}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_vectorised_backtest_equals_the_reference_loop(case: dict) -> None:
    kwargs = {**case["market"], "config": case["config"], "adv": case["adv"]}
    assert_same(run_backtest(case["target"], **kwargs), reference_backtest(case["target"], **kwargs))


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 8), st.integers(1, 4), st.sampled_from(["equal", "score"]), st.booleans(), st.integers(0, 10_000))
def test_top_k_equals_the_reference_and_is_balanced(
    n_assets: int, k: int, weighting: str, long_only: bool, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    scores = rng.integers(-3, 4, (12, n_assets)).astype(float)  # many ties
    scores[rng.random(scores.shape) < 0.2] = np.nan
    weights = top_k_weights(scores, k, weighting=weighting, long_only=long_only)  # type: ignore[arg-type]
    np.testing.assert_allclose(weights, reference_top_k(scores, k, weighting, long_only), atol=1e-12)
    n_valid = np.isfinite(scores).sum(axis=1)
    traded = n_valid >= (1 if long_only else 2)
    np.testing.assert_allclose(np.abs(weights[traded]).sum(axis=1), 1.0)
    np.testing.assert_allclose(weights[traded].sum(axis=1), 1.0 if long_only else 0.0, atol=1e-12)
    assert np.isnan(weights[n_valid == 0]).all()
    assert (weights[np.isnan(scores) & (n_valid > 0)[:, None]] == 0).all()


# ------------------------------------------------------------------ hand cases: timing and costs


def test_weights_at_t_earn_the_return_from_t_to_t_plus_1() -> None:
    prices = np.array([[100.0], [110.0], [121.0], [60.5]])
    target = np.array([[1.0], [0.0], [0.0], [0.0]])
    result = run_backtest(target, prices=prices, config=BacktestConfig(costs=NO_COSTS))
    np.testing.assert_allclose(result.equity, [1.0e6, 1.1e6, 1.1e6, 1.1e6])
    np.testing.assert_allclose(result.returns, [0.0, 0.1, 0.0, 0.0])
    np.testing.assert_allclose(result.weights[:, 0], [1.0, 0.0, 0.0, 0.0])
    np.testing.assert_allclose(result.trades[:, 0], [1.0e6, -1.1e6, 0.0, 0.0])
    np.testing.assert_allclose(result.turnover, [1.0, 1.0, 0.0, 0.0])


def test_proportional_costs_by_hand() -> None:
    prices = np.array([[100.0], [110.0], [110.0]])
    target = np.array([[1.0], [1.0], [0.5]])
    result = run_backtest(target, prices=prices, config=BacktestConfig(costs=FLAT_10BPS))
    # bar 0: buy 1e6, pay 1,000 -> cash -1,000. bar 1: holding 1.1e6, pre 1,099,000, sell 1,000 (cost 1).
    # bar 2: pre 1,098,999, target 549,499.5: sell 549,500.5 (cost 549.5005).
    np.testing.assert_allclose(result.costs, [1000.0, 1.0, 549.5005])
    np.testing.assert_allclose(result.equity, [999_000.0, 1_098_999.0, 1_098_449.4995])
    held = [1e6 / 999_000.0, 1_099_000.0 / 1_098_999.0, 549_499.5 / 1_098_449.4995]
    np.testing.assert_allclose(result.weights[:, 0], held)


def test_cost_components_by_hand() -> None:
    model = CostModel(half_spread_bps=2.0, commission_bps=1.0, slippage_bps=1.0, commission_per_share=0.01,
                      impact_coef=0.1)  # fmt: skip
    # 4 bps of 1e5 = 40; 2,000 shares at 0.01 = 20; 0.1 * 0.02 * sqrt(1e5 / 1e7) * 1e5 = 20
    cost = model.trade_costs(np.array([-1e5, 1e5]), prices=np.array([50.0, 50.0]), daily_vol=0.02,
                             adv=np.array([1e7, np.nan]))  # fmt: skip
    np.testing.assert_allclose(cost, [80.0, 60.0])
    assert NO_COSTS.trade_costs(np.array([1e9])).item() == 0.0


def test_impact_uses_point_in_time_volatility_and_adv() -> None:
    rng = np.random.default_rng(3)
    prices = random_walk(rng, 40, 2)
    volumes = rng.uniform(1e4, 1e5, (40, 2))
    adv = trailing_adv(prices, volumes, window=5)
    np.testing.assert_allclose(adv[10, 1], np.mean(prices[6:11, 1] * volumes[6:11, 1]))
    model = CostModel(impact_coef=0.3, vol_window=10)
    returns = returns_from_prices(prices)
    factor = model.impact_factor(returns, adv)
    expected = 0.3 * np.std(returns[21:31, 0], ddof=1) / np.sqrt(adv[30, 0])
    np.testing.assert_allclose(factor[30, 0], expected)
    assert factor[0, 0] == pytest.approx(0.3 * model.default_daily_vol / np.sqrt(adv[0, 0]))


def test_equity_identity_positions_earn_next_returns() -> None:
    rng = np.random.default_rng(11)
    prices = random_walk(rng, 50, 4)
    target = rng.uniform(-0.6, 0.6, (50, 4))
    config = BacktestConfig(rebalance_every=3, cash_rate=0.05, costs=FLAT_10BPS)
    result = run_backtest(target, prices=prices, config=config)
    returns = np.nan_to_num(returns_from_prices(prices))
    w = result.weights[:-1]
    previous = result.equity[:-1]
    expected = (w * returns[1:]).sum(axis=1) + (1 - w.sum(axis=1)) * config.cash_return - result.costs[1:] / previous
    np.testing.assert_allclose(result.returns[1:], expected, atol=1e-12)
    assert result.rebalanced.tolist() == [t % 3 == 0 for t in range(50)]
    assert (result.costs[~result.rebalanced] == 0).all()


def test_limits_apply_to_the_traded_targets() -> None:
    prices = np.full((2, 3), 10.0)
    target = np.array([[0.9, 0.6, -0.3], [2.0, -2.0, 1.0]])
    result = run_backtest(target, prices=prices, config=BacktestConfig(max_gross=1.5, max_net=0.5, costs=NO_COSTS))
    # row 0: net 1.2 > 0.5 -> longs x (0.3 + 0.5) / 1.5 -> [0.48, 0.32, -0.3], gross 1.1 <= 1.5
    # row 1: net 1.0 > 0.5 -> longs x 2.5 / 3 -> [5/3, -2, 5/6], gross 4.5 -> x 1/3
    np.testing.assert_allclose(result.weights, [[0.48, 0.32, -0.3], [5 / 9, -2 / 3, 5 / 18]])


# ------------------------------------------------------------------ sizing


def test_apply_limits_keeps_nan_and_caps_short_side() -> None:
    capped = apply_limits(np.array([[np.nan, 0.2, -1.0], [np.nan, np.nan, np.nan]]), max_net=0.5)
    np.testing.assert_allclose(capped[0], [np.nan, 0.2, -0.7])
    assert np.isnan(capped[1]).all()


def test_top_k_abs_follows_seed_002() -> None:
    weights = top_k_abs_weights(np.array([[0.5, -2.0, 1.5, 0.1], [np.nan] * 4]), 2)
    np.testing.assert_allclose(weights[0], [0.0, -2.0 / 3.5, 1.5 / 3.5, 0.0])
    assert np.isnan(weights[1]).all()


def test_fixed_fraction_and_kelly() -> None:
    np.testing.assert_allclose(
        fixed_fraction_weights(np.array([[2.0, -0.1, 0.0, np.nan]]), 0.05), [[0.05, -0.05, 0, 0]]
    )
    mean = np.array([[0.001, -0.002, 0.01, 0.001]])
    variance = np.array([[0.0004, 0.0004, 0.0004, 0.0]])
    np.testing.assert_allclose(kelly_weights(mean, variance, fraction=0.5, cap=2.0), [[1.25, -2.0, 2.0, 0.0]])


def test_trailing_vol_matches_a_window_loop() -> None:
    rng = np.random.default_rng(5)
    returns = rng.normal(0, 0.02, (30, 3))
    returns[4, 1] = np.nan
    vol = trailing_vol(returns, 6)
    for t in (1, 5, 12, 29):
        for i in range(3):
            window = returns[max(0, t - 5) : t + 1, i]
            np.testing.assert_allclose(vol[t, i], np.std(window[np.isfinite(window)], ddof=1), rtol=1e-9)
    assert np.isnan(vol[0]).all()


def test_vol_target_scales_to_the_target() -> None:
    rng = np.random.default_rng(9)
    returns = rng.normal(0, 0.01, (300, 5))
    weights = np.full((300, 5), 0.2)
    scaled = vol_target_weights(weights, returns, 0.10, window=20)
    assert (scaled[:19] == 0).all()
    hypothetical = returns[0:20] @ scaled[19]
    np.testing.assert_allclose(np.std(hypothetical, ddof=1) * np.sqrt(252), 0.10)
    per_asset = vol_target_weights(weights, returns, 0.5, window=20, per_asset=True, max_leverage=1.0)
    np.testing.assert_allclose(np.abs(per_asset[100]).sum(), 1.0)  # 5 x 0.2 x 0.5 / ~0.16 > 1: capped
    uncapped = vol_target_weights(weights, returns, 0.05, window=20, per_asset=True)
    np.testing.assert_allclose(uncapped[100], 0.2 * 0.05 / (trailing_vol(returns, 20)[100] * np.sqrt(252)))


# ------------------------------------------------------------------ no look-ahead


def test_future_returns_do_not_change_the_past() -> None:
    rng = np.random.default_rng(21)
    prices = random_walk(rng, 60, 5)
    t = 35
    changed = prices.copy()
    changed[t + 1 :] *= rng.uniform(0.5, 1.5, (60 - t - 1, 5))
    scores = rng.normal(size=(60, 5))
    results = []
    for p in (prices, changed):
        returns = returns_from_prices(p)
        target = vol_target_weights(top_k_weights(scores, 2), returns, 0.15, window=10)
        adv = trailing_adv(p, np.full(p.shape, 1e5), window=5)
        config = BacktestConfig(max_gross=1.0, costs=CostModel(impact_coef=0.5))
        results.append((target, run_backtest(target, prices=p, config=config, adv=adv)))
    (target_a, a), (target_b, b) = results
    np.testing.assert_array_equal(target_a[: t + 1], target_b[: t + 1])
    np.testing.assert_array_equal(a.equity[: t + 1], b.equity[: t + 1])
    np.testing.assert_array_equal(a.weights[: t + 1], b.weights[: t + 1])
    np.testing.assert_array_equal(a.costs[: t + 1], b.costs[: t + 1])
    assert not np.array_equal(a.equity[t + 1 :], b.equity[t + 1 :])


# ------------------------------------------------------------------ KPIs


def test_drawdown_and_duration_golden() -> None:
    max_dd, duration = drawdown_stats(np.array([110.0, 99.0, 88.0, 121.0, 110.0]), 100.0)
    assert max_dd == pytest.approx(0.2)
    assert duration == 2
    assert drawdown_stats(np.array([90.0, 95.0, 99.0]), 100.0) == (pytest.approx(0.1), 3)


def test_kpis_golden_values() -> None:
    returns = np.array([0.02, 0.0, 0.02, 0.0])
    equity = 100.0 * np.cumprod(1 + returns)
    out = series_kpis(equity, returns, np.array([1.0, 0.0, 1.0, 0.0]), np.zeros(4), initial=100.0)
    std = math.sqrt(4 * 0.01**2 / 3)
    assert out["sharpe"] == pytest.approx(0.01 / std * math.sqrt(252))
    assert out["sortino"] == math.inf  # no bar below zero
    assert out["annual_volatility"] == pytest.approx(std * math.sqrt(252))
    assert out["total_return"] == pytest.approx(1.02**2 - 1)
    assert out["annual_return"] == pytest.approx(1.02 ** (2 * 252 / 4) - 1)
    assert out["hit_rate"] == 1.0 and out["max_drawdown"] == 0.0 and out["calmar"] == math.inf
    assert out["annual_turnover"] == pytest.approx(0.5 * 252)

    constant = np.full(50, 0.001)
    flat = series_kpis(100 * np.cumprod(1 + constant), constant, np.zeros(50), np.zeros(50), initial=100.0)
    assert flat["sharpe"] == math.inf and flat["annual_volatility"] == pytest.approx(0.0, abs=1e-12)
    assert flat["annual_return"] == pytest.approx(1.001**252 - 1)

    mixed = np.array([0.01, -0.01, 0.0, 0.02])
    eq = 100 * np.cumprod(1 + mixed)
    out = series_kpis(eq, mixed, np.zeros(4), np.array([1.0, 0, 0, 0]), initial=100.0)
    downside = math.sqrt(0.01**2 / 4)
    assert out["sortino"] == pytest.approx(mixed.mean() / downside * math.sqrt(252))
    assert out["hit_rate"] == pytest.approx(2 / 3)
    assert out["max_drawdown"] == pytest.approx(0.01) and out["max_drawdown_duration"] == 2
    assert out["calmar"] == pytest.approx(out["annual_return"] / 0.01)
    assert out["total_costs"] == pytest.approx(0.01)


def test_kpis_include_buy_and_hold_of_the_universe() -> None:
    prices = np.array([[10.0, 20.0], [11.0, 18.0], [12.1, 18.0]])
    target = np.array([[np.nan, np.nan], [1.0, 0.0], [1.0, 0.0]])
    result = run_backtest(target, prices=prices, config=BacktestConfig(costs=NO_COSTS))
    assert result.benchmark is not None
    # bought at the first decision (bar 1), half each: the second half stays flat, the first gains 10%
    np.testing.assert_allclose(result.benchmark.equity, [1e6, 1e6, 1.05e6])
    out = kpis(result)
    assert out["total_return"] == pytest.approx(0.1)
    assert out["benchmark_total_return"] == pytest.approx(0.05)
    assert out["excess_total_return"] == pytest.approx(0.05)
    assert out["benchmark_annual_turnover"] == pytest.approx(252 / 3)


# ------------------------------------------------------------------ vectorbt (benchmark-only dependency)


def test_equals_vectorbt_from_orders_target_percent() -> None:
    vbt = pytest.importorskip("vectorbt")
    import pandas as pd

    rng = np.random.default_rng(42)
    n_bars, n_assets = 80, 8
    prices = random_walk(rng, n_bars, n_assets)
    target = top_k_weights(rng.normal(size=(n_bars, n_assets)), 2)
    target[np.arange(n_bars) % 3 != 0] = np.nan  # rebalance every third bar, drift in between
    ours = run_backtest(target, prices=prices, config=BacktestConfig(initial_capital=CAPITAL, costs=FLAT_10BPS))
    index = pd.date_range("2020-01-01", periods=n_bars, freq="D")
    portfolio = vbt.Portfolio.from_orders(
        pd.DataFrame(prices, index=index), size=pd.DataFrame(target, index=index), size_type="targetpercent",
        cash_sharing=True, group_by=True, fees=FLAT_10BPS.proportional_rate, call_seq="auto", init_cash=CAPITAL,
        freq="1D",
    )  # fmt: skip
    np.testing.assert_allclose(ours.equity, portfolio.value().to_numpy(), rtol=1e-9)
    np.testing.assert_allclose(ours.returns, portfolio.returns().to_numpy(), rtol=1e-9, atol=1e-12)
    assert ours.equity[-1] / CAPITAL - 1 == pytest.approx(float(portfolio.total_return()), rel=1e-9)
    assert kpis(ours)["max_drawdown"] == pytest.approx(-float(portfolio.max_drawdown()), rel=1e-9)
    assert ours.costs.sum() == pytest.approx(float(portfolio.orders.fees.sum()), rel=1e-9)


# ------------------------------------------------------------------ the command


def _bars_lake(root: Path, n_bars: int = 60) -> tuple[np.ndarray, list[datetime]]:
    rng = np.random.default_rng(0)
    close = random_walk(rng, n_bars, 3)
    first = datetime(2021, 1, 4, 21, tzinfo=UTC)
    stamps = [first + timedelta(days=d) for d in range(n_bars)]
    frames = [
        pl.DataFrame({
            "symbol": sym, "ts": stamps, "close": close[:, i], "volume": np.full(n_bars, 1e5),
            "adj_factor": np.full(n_bars, 0.5 if sym == "BBB" else 1.0),
        })
        for i, sym in enumerate(["AAA", "BBB", "CCC"])
    ]  # fmt: skip
    Lake(root).write(BARS, "tiny", pl.concat(frames), freq="1d", metadata={"timezone": "America/New_York"})
    return close, stamps


def _app() -> typer.Typer:
    app = typer.Typer()
    app.command()(backtest)
    return app


def test_command_writes_the_run_folder(tmp_path: Path) -> None:
    close, stamps = _bars_lake(tmp_path / "lake")
    rng = np.random.default_rng(1)
    scores = rng.normal(size=(len(stamps), 3))
    rows = [
        {"ts": ts.date(), "symbol": sym, "score": scores[t, i]}
        for t, ts in enumerate(stamps) for i, sym in enumerate(["AAA", "BBB", "CCC"])
    ]  # fmt: skip
    pl.DataFrame(rows).write_csv(tmp_path / "scores.csv")
    run = tmp_path / "run"
    result = CliRunner().invoke(
        _app(), [str(tmp_path / "scores.csv"), "--dataset", "tiny", "--run", str(run), "--top-k", "1",
                 "--lake", str(tmp_path / "lake")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "sharpe" in result.output and "buy & hold" in result.output
    expected = run_backtest(
        top_k_weights(scores, 1), prices=close, config=BacktestConfig(),
        adv=trailing_adv(close, np.full(close.shape, 1e5)),
    )  # fmt: skip
    saved = json.loads((run / "backtest" / "kpis.json").read_text())
    assert saved["total_return"] == pytest.approx(expected.equity[-1] / CAPITAL - 1, rel=1e-12)
    equity = load_equity(run / "backtest" / "equity.parquet")
    np.testing.assert_allclose(equity["strategy"].to_numpy(), expected.equity / CAPITAL)
    weights = load_weights(run / "backtest" / "weights.parquet")
    assert weights.height == len(stamps) * 3
    kpi_csv = pl.read_csv(run / "backtest" / "kpis.csv")
    assert kpi_csv.filter(pl.col("metric") == "sharpe")["value"].item() == pytest.approx(saved["sharpe"])


def test_command_takes_weights_at_bar_closes_and_holds_between(tmp_path: Path) -> None:
    close, stamps = _bars_lake(tmp_path / "lake")
    target = np.full((len(stamps), 3), np.nan)
    target[::5] = [0.5, -0.25, 0.0]  # rows only every fifth bar: positions drift in between
    rows = [
        {"ts": stamps[t], "symbol": sym, "weight": target[t, i]}
        for t in range(0, len(stamps), 5) for i, sym in enumerate(["AAA", "BBB", "CCC"])
    ]  # fmt: skip
    pl.DataFrame(rows).write_parquet(tmp_path / "weights.parquet")
    run = tmp_path / "run"
    args = [str(tmp_path / "weights.parquet"), "--dataset", "tiny", "--run", str(run), "--lake", str(tmp_path / "lake")]
    result = CliRunner().invoke(_app(), [*args, "--no-costs"])
    assert result.exit_code == 0, result.output
    expected = run_backtest(target, prices=close, config=BacktestConfig(costs=NO_COSTS))
    equity = load_equity(run / "backtest" / "equity.parquet")
    np.testing.assert_allclose(equity["strategy"].to_numpy(), expected.equity / CAPITAL, rtol=1e-12)
    assert json.loads((run / "backtest" / "kpis.json").read_text())["total_costs"] == 0.0


def test_command_reports_bad_input(tmp_path: Path) -> None:
    _bars_lake(tmp_path / "lake")
    lake = ["--lake", str(tmp_path / "lake"), "--dataset", "tiny", "--run", str(tmp_path / "run")]
    pl.DataFrame({"ts": [datetime(2021, 1, 4).date()], "symbol": ["ZZZ"], "weight": [1.0]}).write_parquet(
        tmp_path / "unknown.parquet"
    )
    pl.DataFrame({"ts": [datetime(2021, 1, 4).date()], "symbol": ["AAA"]}).write_parquet(tmp_path / "novalue.parquet")
    pl.DataFrame({"ts": [datetime(2030, 1, 4).date()], "symbol": ["AAA"], "weight": [1.0]}).write_parquet(
        tmp_path / "late.parquet"
    )
    runner = CliRunner()
    for name, message in (("unknown", "ZZZ"), ("novalue", "weight or score"), ("late", "no bar")):
        result = runner.invoke(_app(), [str(tmp_path / f"{name}.parquet"), *lake])
        assert result.exit_code == 2, result.output
        assert message in result.output
    assert not (tmp_path / "run").exists()
