"""Score forecasts of several models on the same windows: metrics, Diebold-Mariano against a baseline, a backtest.

All on target channel 0 (a per-bar log return): N windows, H horizon, L lookback.

- MASE divides each absolute error by the in-sample MAE of the one-step naive forecast over the window's own
  lookback (the seasonal naive scale of each series, as in the M4 competition, computed per window so that it only
  uses data known at the decision time).
- Directional accuracy and MCC compare the sign of each step's forecast with the realised return.
- Diebold-Mariano: the absolute error averaged over symbols and steps per decision instant gives one loss series
  per model in time order; the test asks whether the model's expected loss is lower than the baseline's (HLN
  correction, long-run variance up to lag H - 1).
- The trading check: at each decision instant, hold sign(step-1 forecast) / A in each of the A symbols forecast
  until the next bar, through the backtester with its cost model; Sharpe after costs, drawdown and turnover.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from finfusion.data.calendar import from_us
from finfusion.evaluation.backtest import BacktestConfig, BacktestResult, kpis, run_backtest
from finfusion.evaluation.costs import CostModel
from finfusion.evaluation.metric_registry import metric_table
from finfusion.evaluation.metrics import crps_from_quantiles, crps_from_samples, directions
from finfusion.evaluation.significance import diebold_mariano
from finfusion.forecasting.forecast import Forecasts, quantile_view
from finfusion.samples.windows import LOG_RETURN

#: Forecast returns closer to 0 than this are "no view" (flat): the random walk's 0, denormalised through float32
#: statistics, comes back as a few 1e-19 of either sign.
FLAT = 1e-10
TRADING_METRICS = ("sharpe", "annual_return", "max_drawdown", "avg_turnover")


def usable_rows(forecasts: Forecasts) -> np.ndarray:
    """Windows [N] whose whole realised path exists and whose lookback varies (a MASE scale above 0)."""
    realised, past = forecasts.realised[..., 0], forecasts.past[..., 0]
    scale = np.mean(np.abs(np.diff(past, axis=1)), axis=1)
    return np.isfinite(realised).all(axis=1) & np.isfinite(scale) & (scale > 0)


def forecast_metrics(forecasts: Forecasts, rows: np.ndarray) -> dict[str, float]:
    """Every registered metric the forecasts allow (evaluation/metric_registry.py) on windows `rows`: point,
    directional, and (when the model has them) probabilistic ones; MAPE of returns near zero is large by nature."""
    truth = forecasts.realised[rows, :, 0]
    levels, quantiles = quantile_view(forecasts)
    table = metric_table(
        truth,
        forecasts.point[rows, :, 0],
        samples=None if forecasts.samples is None else np.moveaxis(forecasts.samples[rows, ..., 0], 1, -1),
        quantiles=None if quantiles is None else quantiles[rows, :, 0],
        levels=levels or None,
        y_train=forecasts.past[rows, :, 0],
        reference=0.0,
        threshold=FLAT,
        alpha=0.2,
    )
    if forecasts.targets[0] == LOG_RETURN and truth.shape[1] > 1:
        table.update(price_path_metrics(forecasts, rows))
    return table


def price_path_metrics(forecasts: Forecasts, rows: np.ndarray) -> dict[str, float]:
    """RMSE and MAE of the price paths rebuilt from log-return paths, P_h / P_0 = exp(r_1 + ... + r_h) [n, H], in
    units of the decision bar's price: `price_rmse`, `price_mae` (the trajectory forecaster's path accuracy)."""
    truth = np.exp(np.cumsum(forecasts.realised[rows, :, 0], axis=1))
    path = np.exp(np.cumsum(forecasts.point[rows, :, 0], axis=1))
    return {f"price_{name}": value for name, value in metric_table(truth, path, names=("rmse", "mae")).items()}


#: The sign forecasts (models/direction_baselines.py) a model's direction error is tested against: the best of them.
DIRECTION_BASELINES = ("majority_class", "previous_sign", "drift_sign", "logistic_direction")
#: Diebold-Mariano losses of `window_losses` and their names in the significance table.
DM_LOSSES = {"absolute": "absolute error", "crps": "CRPS", "direction": "direction error"}


def window_losses(forecasts: Forecasts, rows: np.ndarray, loss: str) -> np.ndarray:
    """Loss [n] of each window in `rows`, averaged over its steps: "absolute" error of the point forecast, "crps"
    of the sampled paths / quantiles (the point forecast's absolute error for a point model: the CRPS of a point
    mass), or "direction": 1 where the point forecast's direction (up / down / flat within `FLAT`) differs from the
    realised one, the loss whose mean is 1 - directional accuracy."""
    truth = forecasts.realised[rows, :, 0]
    if loss == "absolute":
        return np.abs(forecasts.point[rows, :, 0] - truth).mean(axis=1)
    if loss == "direction":
        wrong = directions(forecasts.point[rows, :, 0], threshold=FLAT) != directions(truth, threshold=FLAT)
        return wrong.mean(axis=1)
    if loss != "crps":
        raise ValueError(f"unknown loss {loss!r}: use one of {', '.join(DM_LOSSES)}")
    if forecasts.samples is not None:
        return crps_from_samples(truth, np.moveaxis(forecasts.samples[rows, ..., 0], 1, -1)).mean(axis=1)
    if forecasts.quantiles is not None:
        return crps_from_quantiles(truth, forecasts.quantiles[rows, :, 0], forecasts.levels).mean(axis=1)
    return np.abs(forecasts.point[rows, :, 0] - truth).mean(axis=1)


def loss_by_instant(forecasts: Forecasts, rows: np.ndarray, loss: str = "absolute") -> tuple[np.ndarray, np.ndarray]:
    """(instants [K] sorted, the mean window loss [K] over the windows decided at each instant)."""
    losses = window_losses(forecasts, rows, loss)
    frame = pl.DataFrame({"t": forecasts.origin_us[rows], "e": losses}).group_by("t").agg(pl.col("e").mean()).sort("t")
    return frame["t"].to_numpy(), frame["e"].to_numpy()


def has_direction(forecasts: Forecasts, rows: np.ndarray) -> bool:
    """Whether any point forecast of the first target on `rows` has a sign (beyond `FLAT`): a forecast without one
    (the random walk's zero return) is wrong on every step by construction, so direction tests never use it as the
    reference."""
    return bool((np.abs(forecasts.point[rows, :, 0]) > FLAT).any())


def collapse_warnings(forecasts: Mapping[str, Forecasts]) -> list[str]:
    """One line per model that collapsed on its test windows: a sign forecast that is the same on every step
    (always up or always down), or forecast intervals of zero width everywhere. Signless forecasts (the random
    walk) are not direction forecasts and are not flagged."""

    lines = []
    for name, fc in forecasts.items():
        point = fc.point[..., 0]
        point = point[np.isfinite(point)]
        signed = point[np.abs(point) > FLAT]
        if signed.size and signed.size == point.size and ((signed > 0).all() or (signed < 0).all()):
            way = "up" if signed[0] > 0 else "down"
            lines.append(f"warning: {name} forecasts {way} on every test step (a collapsed direction forecast)")
        _, quantiles = quantile_view(fc)
        if quantiles is not None:
            width = quantiles[..., 0, -1] - quantiles[..., 0, 0]
            if np.isfinite(width).any() and np.nanmax(np.abs(width)) <= FLAT:
                lines.append(f"warning: {name}'s forecast intervals have zero width everywhere (degenerate)")
    return lines


def dm_against(
    forecasts: Forecasts,
    baseline: Forecasts,
    rows: np.ndarray,
    model: str,
    name: str,
    loss: str = "absolute",
    subset: str = "all",
    horizon: int | None = None,
) -> dict[str, Any]:
    """Diebold-Mariano (alternative: the model's loss is lower) of `forecasts` against `baseline` on `rows`; the
    long-run variance reaches lag `horizon` - 1 (default: the forecasts' own horizon)."""
    times, model_loss = loss_by_instant(forecasts, rows, loss)
    base_times, base_loss = loss_by_instant(baseline, rows, loss)
    if not np.array_equal(times, base_times):
        raise ValueError("the model and the baseline were not scored on the same windows")
    horizon = forecasts.point.shape[1] if horizon is None else horizon
    result = diebold_mariano(model_loss, base_loss, horizon=horizon, alternative="less")
    return {
        "test": "diebold_mariano",
        "model": model,
        "baseline": name,
        "loss": DM_LOSSES[loss],
        "subset": subset,
        "statistic": result.statistic,
        "p_value": result.p_value,
        "mean_difference": result.mean_difference,
        "n": result.n,
        "horizon": horizon,
    }


@dataclass
class SignBacktest:
    """The sign strategy's backtest on the forecast windows: instants [T], symbols [A], result."""

    instants: np.ndarray
    symbols: tuple[str, ...]
    result: BacktestResult

    def equity_frame(self) -> pl.DataFrame:
        return pl.DataFrame(
            [
                from_us(self.instants, "ts"),
                pl.Series("strategy", self.result.equity / self.result.config.initial_capital),
                pl.Series("benchmark", self.result.benchmark.equity / self.result.config.initial_capital),
            ]
        )

    def weights_frame(self) -> pl.DataFrame:
        t, a = np.nonzero(np.isfinite(self.result.weights))
        return pl.DataFrame(
            [
                from_us(self.instants[t], "ts"),
                pl.Series("symbol", np.asarray(self.symbols, dtype=object)[a], dtype=pl.String),
                pl.Series("weight", self.result.weights[t, a]),
            ]
        )


def sign_backtest(forecasts: Forecasts, rows: np.ndarray, costs: CostModel, periods_per_year: int) -> SignBacktest:
    """Hold sign(step-1 forecast) / A per symbol from each decision instant to the next bar (see the docstring)."""
    origin, target = forecasts.origin_us[rows], forecasts.target_us[rows, 0]
    instants = np.unique(np.concatenate([origin, target]))
    used = np.unique(forecasts.symbol_index[rows])
    column = np.searchsorted(used, forecasts.symbol_index[rows])
    weights = np.zeros((len(instants), len(used)))  # flat wherever nothing was forecast
    returns = np.zeros((len(instants), len(used)))
    decided_at = np.searchsorted(instants, origin)
    step_one = forecasts.point[rows, 0, 0]
    weights[decided_at, column] = np.where(np.abs(step_one) > FLAT, np.sign(step_one), 0.0) / len(used)
    returns[np.searchsorted(instants, target), column] = np.expm1(forecasts.realised[rows, 0, 0])
    config = BacktestConfig(costs=costs, periods_per_year=periods_per_year)
    symbols = tuple(forecasts.symbols[i] for i in used)
    return SignBacktest(instants, symbols, run_backtest(weights, returns=returns, config=config))


def trading_metrics(backtest: SignBacktest, periods_per_year: int) -> dict[str, float]:
    values = kpis(backtest.result, periods_per_year)
    return {name: values[name] for name in TRADING_METRICS}
