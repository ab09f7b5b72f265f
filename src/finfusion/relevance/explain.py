"""Explanations of a trained relevance model's score for one stock and week (`finfusion explain RUN --at SYMBOL:DATE`,
relevance runs).

Shapes: B samples, Fc context features, Fs stock features, C = Fc + Fs, G feature groups.

The decision of (symbol, day) in a span is the stock's weekly sample whose decision instant (the week's last bar,
samples/relevance.py) falls on `day` (UTC date). The explained output is the model's relevance score of the first
horizon (`data.horizons[0]`, 7 days by default) in [-1, 1]:

- Integrated Gradients (evaluation/explain.py) per input feature of `context` [Fc] and `stock` [Fs], from the
  all-zero input (the training mean: the features are z-scored), summed per feature group into `totals` (the
  groups the run's state stores in the columns' order, samples/relevance.py `feature_groups`, named as in
  relevance/importance.py `group_columns`: "context:news", "context:policy", "context:macro", "stock:ohlcv",
  "stock:technical", ...); the per-feature values are `channels` / `channel_attributions`, and `heat` is one row
  [1, C] named "decision week" (`heat_rows`: a sample has no lookback axis, its features are those of the decision
  instant);
- permutation importance per feature group over the span's most recent samples: the rise in the squared error of
  the score against that horizon's relevance label when the group's features are shuffled across the samples
  together (one permutation for all of a group's columns).

No text rows: a sample keeps its week's news only as the projected mean embedding and the text count, not which
texts fed it; the news group's total is their attribution. No attention: the towers are perceptrons.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date
from typing import Any

import numpy as np
from torch import Tensor

from finfusion.evaluation.explain import (
    PERMUTATION_SAMPLES,
    Batch,
    Group,
    Output,
    integrated_gradients,
    permutation_importance,
)
from finfusion.evaluation.explanation import Explanation, check_symbol, decision_on, instant
from finfusion.relevance.importance import group_columns
from finfusion.samples.contract import CONTEXT, LABEL_MASK, ORIGIN_US, RELEVANCE, STOCK, SYMBOL_INDEX
from finfusion.samples.relevance import feature_groups
from finfusion.samples.tensors import TensorSamples
from finfusion.samples.windows import collate

#: The horizon whose score is explained (its position in `data.horizons`).
HORIZON = 0
#: The name of the heat map's one row.
HEAT_ROW = "decision week"


def _sample_of(samples: TensorSamples, universe: Sequence[str], symbol: str, day: date) -> int:
    """The position in `samples` of `symbol`'s weekly decision on `day`."""
    position = check_symbol(symbol, universe)
    ours = np.flatnonzero(samples.column(SYMBOL_INDEX) == position)
    days = [instant(us).date() for us in samples.column(ORIGIN_US)[ours]]
    return decision_on(symbol, day, ours.tolist(), days)


def _score(model: Any, horizon: int) -> Output:
    """The explained output: the relevance score [B] of horizon position `horizon`."""

    def output(batch: Batch) -> Tensor:
        return model(batch)["score"][:, horizon]

    return output


def explain_score(
    model: Any, samples: TensorSamples, state: Mapping[str, Any], model_name: str, symbol: str, day: date, steps: int
) -> Explanation:
    """Explain `model`'s score for `symbol` on `day`, a decision of the span's `samples` (the run's fitted `state`
    names the universe, the horizons and the feature groups; see the module docstring)."""
    item = _sample_of(samples, state["symbols"], symbol, day)
    batch = collate([samples[item]])
    model.eval()
    output = _score(model, HORIZON)
    attributions = integrated_gradients(output, batch, [CONTEXT, STOCK], steps=steps)
    context_groups, stock_groups = feature_groups(state)
    columns = group_columns(context_groups, stock_groups)
    per_input = {key: attributions.values[key][0].numpy() for key in (CONTEXT, STOCK)}  # [Fc], [Fs]
    totals = {name: float(per_input[key][cols].sum()) for name, (key, cols) in columns.items()}
    names = [name for groups in (context_groups, stock_groups) for group in groups.values() for name in group]
    heat = np.concatenate([per_input[CONTEXT], per_input[STOCK]])[None]  # [1, C]
    return Explanation.of(
        attributions,
        heat,
        [],
        symbol=symbol,
        decision=instant(int(samples.column(ORIGIN_US)[item])).isoformat(),
        model=model_name,
        explained=f"the {state['horizons'][HORIZON]}-day relevance score, in [-1, 1]",
        totals=totals,
        channels=names,
        attention=None,
        permutation=span_permutation(model, samples, columns),
        permutation_measure=f"squared error of the {state['horizons'][HORIZON]}-day score",
        heat_rows=[HEAT_ROW],
    )


def span_permutation(
    model: Any, samples: TensorSamples, columns: Mapping[str, tuple[str, list[int]]]
) -> dict[str, float]:
    """Permutation importance per feature group (`columns`: name -> input key, column positions) over the span's last
    `PERMUTATION_SAMPLES` samples (the most recent weeks): the rise in the mean squared error of the explained score
    against its relevance label, over the samples whose label is known."""
    count = len(samples)
    if count < 2:
        return {}
    batch = collate([samples[k] for k in range(max(0, count - PERMUTATION_SAMPLES), count)])
    known = batch[LABEL_MASK][:, HORIZON]
    label = batch[RELEVANCE][:, HORIZON]
    groups = [Group(name, key, tuple(cols)) for name, (key, cols) in columns.items()]
    score = _score(model, HORIZON)

    def squared_error(shuffled: Batch) -> Tensor:
        return ((score(shuffled) - label)[known] ** 2).mean()

    return permutation_importance(squared_error, batch, groups)
