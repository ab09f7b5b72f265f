"""Transition statistics of token sequences: how much the current token tells about the next one.

Over the consecutive pairs (x_t, x_{t+1}) inside each symbol's sequence (never across symbols), in bits:
`next_entropy` H(X_{t+1}), `conditional_entropy` H(X_{t+1} | X_t) and their difference, the mutual information
I(X_t; X_{t+1}) (0 when tokens follow each other at random; the grammar's memory otherwise), and the most frequent
transitions with P(next | current).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from finfusion.features.vocabulary import Vocabulary, entropy_bits


@dataclass(frozen=True)
class TransitionStats:
    """See the module docstring; `top`: (current, next, count, P(next | current)) of the most frequent pairs."""

    n_transitions: int
    next_entropy_bits: float
    conditional_entropy_bits: float
    mutual_information_bits: float
    top: list[tuple[str, str, int, float]]


def transition_stats(sequences: Mapping[str, torch.Tensor], vocabulary: Vocabulary, top: int = 10) -> TransitionStats:
    """Transition statistics of per-symbol id sequences (`Vocabulary.export_sequences`)."""
    size = len(vocabulary)
    pairs = [ids[:-1].numpy() * size + ids[1:].numpy() for ids in sequences.values() if len(ids) > 1]
    flat = np.concatenate(pairs) if pairs else np.zeros(0, dtype=np.int64)
    counts = np.bincount(flat, minlength=size * size).reshape(size, size)
    total = int(counts.sum())
    if total == 0:
        return TransitionStats(0, 0.0, 0.0, 0.0, [])
    from_counts = counts.sum(axis=1)
    next_entropy = entropy_bits(counts.sum(axis=0).tolist())
    conditional = sum(from_counts[i] / total * entropy_bits(counts[i].tolist()) for i in np.flatnonzero(from_counts))
    order = np.argsort(-counts, axis=None, kind="stable")[:top]
    names = vocabulary.itos
    frequent = [
        (names[i], names[j], int(counts[i, j]), float(counts[i, j] / from_counts[i]))
        for i, j in zip(*np.unravel_index(order, counts.shape), strict=True)
        if counts[i, j] > 0
    ]
    return TransitionStats(total, next_entropy, float(conditional), next_entropy - float(conditional), frequent)
