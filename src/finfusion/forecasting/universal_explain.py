"""Explanations of a universal forecaster's forecast for one asset and day (`finfusion explain RUN --at SYMBOL:DATE`,
universal runs).

Shapes: B windows, L lookback bars, C channels (the target ret_1, then the covariates: samples/universal.py), H
horizon steps, T targets.

The pre-trained Moirai forecasts by drawing paths from its predictive mixture; its `point` is the median of those
draws, random and without gradients. The explained output is instead the mean of the predictive mixture of the
target at the first horizon step (the next bar's ret_1, a log return, in the series' units): deterministic and smooth
in `past`, computed from the same tokens and the same mixture the model draws its paths from
(models/moirai/forecaster.py `mean_forecast`, `sample`).

- Integrated Gradients (evaluation/explain.py) per lookback bar and channel of `past` [L, C] (the heat map), from
  the all-zero window; `totals` splits them into the target's own history and the covariates. Moirai standardises
  each variate of a window over its lookback, so along the straight path from zero a covariate's standardised
  values barely change (only the scaler's minimum variance breaks the invariance): a covariate's total is close to
  0 whatever its importance, and its heat map row shows which bars push the forecast up and which down. The
  permutation importance below is the measure of a covariate's importance.
- Permutation importance per channel over the span's most recent windows: the rise in the squared error of the
  explained output against the realised next return when a channel's whole lookback is shuffled across windows.

Bars a window does not have (before the asset's first bar: NaN, outside `past_mask`) are never read by the model;
they are set to 0 before attributing, so that their attribution is 0 rather than NaN. No texts, no attention.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import numpy as np
import torch
from torch import Tensor

from finfusion.errors import FinfusionError
from finfusion.evaluation.explain import (
    PERMUTATION_SAMPLES,
    Batch,
    Group,
    integrated_gradients,
    permutation_importance,
)
from finfusion.evaluation.explanation import Explanation, check_symbol, decision_on, instant
from finfusion.models.moirai.forecaster import Moirai
from finfusion.samples.contract import FUTURE, PAST, PAST_MASK
from finfusion.samples.universal import TARGET, ShardWindows
from finfusion.samples.windows import collate

EXPLAINED = "mean of the predictive distribution of the next bar's ret_1 (horizon step 1), log return"


def _window_of(windows: ShardWindows, symbol: str, day: date) -> int:
    """The position in `windows` of `symbol`'s window whose decision bar falls on `day` (UTC date)."""
    position = check_symbol(symbol, windows.index.symbols)
    ours = np.flatnonzero(windows.column("symbol_index") == position)
    days = [instant(us).date() for us in windows.column("origin_us")[ours]]  # an asset's windows are in time order
    return decision_on(symbol, day, ours.tolist(), days)


def first_step_mean(model: Moirai, batch: Batch) -> Tensor:
    """[B]: the explained output (module docstring) of the windows of `batch`: the first target at step 1."""
    return model.mean_forecast(batch)[:, 0, 0]  # [B, H, T] -> step 1, first target


def _read(batch: Batch) -> Batch:
    """The batch with the bars the window does not have set to 0 (module docstring)."""
    return {**batch, PAST: torch.where(batch[PAST_MASK][..., None], batch[PAST], 0.0)}


def explain_forecast(
    model: Any, windows: ShardWindows, model_name: str, symbol: str, day: date, steps: int
) -> Explanation:
    """Explain `model`'s forecast for `symbol` on `day`, a decision of the span's `windows` (module docstring)."""
    if not isinstance(model, Moirai):
        raise FinfusionError(
            f"universal explanations read a Moirai's predictive mixture; the run's model is {type(model).__name__}"
        )
    item = _window_of(windows, symbol, day)
    batch = _read(collate([windows[item]]))
    model.eval()

    def output(values: Batch) -> Tensor:
        return first_step_mean(model, values)

    attributions = integrated_gradients(output, batch, [PAST], steps=steps)
    if not torch.isfinite(attributions.output).all():
        raise FinfusionError(f"{symbol} on {day}: the predictive mixture's mean is not finite")
    heat = attributions.values[PAST][0].numpy()  # [L, C]
    channels = list(windows.index.columns)
    target = channels.index(TARGET)
    return Explanation.of(
        attributions,
        heat,
        [],
        symbol=symbol,
        decision=instant(int(windows.column("origin_us")[item])).isoformat(),
        model=model_name,
        explained=EXPLAINED,
        totals={
            f"target history ({TARGET})": float(heat[:, target].sum()),
            "covariates": float(np.delete(heat, target, axis=1).sum()),
        },
        channels=channels,
        attention=None,
        permutation=span_permutation(model, windows, channels),
        permutation_measure="squared error of the next bar's ret_1",
    )


def span_permutation(model: Moirai, windows: ShardWindows, channels: list[str]) -> dict[str, float]:
    """Permutation importance per channel over the span's `PERMUTATION_SAMPLES` most recent windows: the rise in the
    mean squared error of the explained output against the realised next ret_1."""
    if len(windows) < 2:
        return {}
    recent = np.argsort(windows.column("origin_us"), kind="stable")[-PERMUTATION_SAMPLES:]
    batch = _read(collate([windows[int(k)] for k in np.sort(recent)]))
    realised = batch[FUTURE][:, 0, 0]
    groups = [Group(name, PAST, (c,)) for c, name in enumerate(channels)]

    def squared_error(shuffled: Batch) -> Tensor:
        return ((first_step_mean(model, shuffled) - realised) ** 2).mean()

    return permutation_importance(squared_error, batch, groups)
