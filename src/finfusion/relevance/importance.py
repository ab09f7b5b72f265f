"""Feature-group importance of the dual-tower relevance model: how much each group (news, policy, macro; ohlcv,
technical, returns, volatility) drives its scores, overall and per stock.

- Permutation: a group's columns are shuffled together across the samples (the same permutation for all of them,
  so the group's joint distribution is kept and its link to the label broken) and the increase of the mean squared
  error of the score, over the horizons, is the importance; averaged over `repeats` shuffles. Per stock, the
  increase over that stock's samples.
- Integrated gradients (captum): the attributions of each horizon's score to every input feature along the straight
  path from the all-zero input (the training mean, after the z-scoring) to the sample, summed in absolute value over
  the group's features and averaged over the samples (and over the horizons).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from finfusion.samples.contract import CONTEXT, LABEL_MASK, RELEVANCE, STOCK, SYMBOL_INDEX


@dataclass(frozen=True)
class GroupImportance:
    """`groups` [G] (names, "context:" or "stock:" prefixed); `permutation` [G] and `gradients` [G] overall;
    `per_stock` [S, G] permutation importance of each stock (NaN where a stock has no samples)."""

    groups: list[str]
    permutation: np.ndarray
    gradients: np.ndarray
    per_stock: np.ndarray


def group_columns(context_groups: Mapping[str, Sequence[str]], stock_groups: Mapping[str, Sequence[str]]) -> dict:
    """Group name -> (input key, column positions), the groups in the order of their columns (as a run's state
    stores them: samples/relevance.py `feature_groups`)."""
    columns: dict[str, tuple[str, list[int]]] = {}
    for key, groups in ((CONTEXT, context_groups), (STOCK, stock_groups)):
        start = 0
        for group, names in groups.items():
            columns[f"{key}:{group}"] = (key, list(range(start, start + len(names))))
            start += len(names)
    return columns


def _scores(model: nn.Module, context: Tensor, stock: Tensor) -> np.ndarray:
    with torch.inference_mode():
        return model({CONTEXT: context, STOCK: stock})["score"].float().numpy()


def _squared_errors(score: np.ndarray, label: np.ndarray, known: np.ndarray) -> np.ndarray:
    """[N] the mean over the known horizons of (score - label)^2."""
    errors = np.where(known, (score - label) ** 2, 0.0)
    return errors.sum(axis=1) / np.maximum(known.sum(axis=1), 1)


def group_importance(
    model: nn.Module,
    dataset: object,
    columns: Mapping[str, tuple[str, list[int]]],
    n_symbols: int,
    repeats: int = 5,
    steps: int = 32,
    max_samples: int = 2000,
    seed: int = 0,
) -> GroupImportance:
    """Permutation and integrated-gradient importance of each group over (at most `max_samples` of) `dataset`."""
    from captum.attr import IntegratedGradients

    model.eval()
    rng = np.random.default_rng(seed)
    n = len(dataset)
    chosen = np.sort(rng.choice(n, size=min(n, max_samples), replace=False))
    inputs = {key: torch.from_numpy(dataset.column(key)[chosen]) for key in (CONTEXT, STOCK)}
    label, known = dataset.column(RELEVANCE)[chosen], dataset.column(LABEL_MASK)[chosen]
    symbols = dataset.column(SYMBOL_INDEX)[chosen]
    base = _squared_errors(_scores(model, inputs[CONTEXT], inputs[STOCK]), label, known)
    names = list(columns)
    permutation = np.zeros(len(names))
    per_stock = np.full((n_symbols, len(names)), np.nan)
    for g, name in enumerate(names):
        key, cols = columns[name]
        increase = np.zeros(len(chosen))
        for _ in range(repeats):
            shuffled = dict(inputs)
            values = inputs[key].clone()
            values[:, cols] = values[rng.permutation(len(chosen))][:, cols]
            shuffled[key] = values
            increase += _squared_errors(_scores(model, shuffled[CONTEXT], shuffled[STOCK]), label, known) - base
        increase /= repeats
        permutation[g] = increase.mean()
        for s in np.unique(symbols):
            per_stock[s, g] = increase[symbols == s].mean()
    gradients = np.zeros(len(names))
    horizons = model({CONTEXT: inputs[CONTEXT][:2], STOCK: inputs[STOCK][:2]})["score"].shape[1]
    for k in range(horizons):

        def score_of(context: Tensor, stock: Tensor, k: int = k) -> Tensor:
            return model({CONTEXT: context, STOCK: stock})["score"][:, k]

        attributions = IntegratedGradients(score_of).attribute(
            (inputs[CONTEXT], inputs[STOCK]), n_steps=steps, internal_batch_size=1024
        )
        by_key = {CONTEXT: attributions[0].detach().abs().numpy(), STOCK: attributions[1].detach().abs().numpy()}
        for g, name in enumerate(names):
            key, cols = columns[name]
            gradients[g] += by_key[key][:, cols].sum(axis=1).mean() / horizons
    return GroupImportance(names, permutation, gradients, per_stock)
