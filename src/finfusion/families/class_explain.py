"""What explaining one classifier decision needs in the token-classification and order-book families, whose samples
carry `symbol_index` and `origin_us` and whose models give class probabilities [B, K]: the sample of a symbol's
decision on a day among a span's samples, and permutation importance measured by the multi-class Brier score over the
span's labelled decisions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import date
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from finfusion.evaluation.explain import PERMUTATION_SAMPLES, Batch, Group, permutation_importance
from finfusion.evaluation.explanation import check_symbol, decision_on, instant
from finfusion.samples.windows import collate

#: The permutation measure: mean over decisions of sum_k (p_k - [label = k])^2.
BRIER = "Brier score"


def decision_sample(
    symbol: str, day: date, universe: Sequence[str], symbol_index: np.ndarray, origin_us: np.ndarray
) -> int:
    """The position among a span's samples (`symbol_index` [N], `origin_us` [N], each symbol's in time order) of
    `symbol`'s last decision on `day` (the UTC date of its instant); one-line errors for a symbol outside `universe`
    and for a day without a decision."""
    position = check_symbol(symbol, universe)
    ours = np.flatnonzero(symbol_index == position)
    days = [instant(int(us)).date() for us in origin_us[ours]]
    return decision_on(symbol, day, ours.tolist(), days)


def brier_permutation(
    probabilities: Callable[[Batch], Tensor], dataset: Any, labels: np.ndarray, groups: Sequence[Group]
) -> dict[str, float]:
    """Permutation importance of `groups` over the last `PERMUTATION_SAMPLES` labelled samples of `dataset` (`labels`
    [N], one per sample, negative: unknown): the rise in the multi-class Brier score of `probabilities` [B, K]
    against the labels ({} when fewer than two samples are labelled)."""
    known = np.flatnonzero(labels >= 0)[-PERMUTATION_SAMPLES:]
    if len(known) < 2:
        return {}
    batch = collate([dataset[int(i)] for i in known])
    target = torch.from_numpy(labels[known].astype(np.int64))

    def brier(shuffled: Batch) -> Tensor:
        p = probabilities(shuffled)
        return ((p - F.one_hot(target, p.shape[-1]).to(p.dtype)) ** 2).sum(dim=-1).mean()

    return permutation_importance(brier, batch, groups)
