"""Masked-LM samples of a token dataset of the lake, split in time, with a vocabulary fitted on the training span.

Data part keys (`TOKEN_DEFAULTS`): `dataset` (a tokens dataset: Brooks tokens or VQ codes), `bars` and `tokenizer`
(with `source: synthetic`, the synthetic bars are made and tokenized with the Brooks tokenizer when the tokens
dataset is absent), `freq`, `symbols`, `max_len` / `min_len` / `random_lengths` (chunking), `bucket_width`
(length-bucketed batches), `mask_prob`, `min_freq` (of the training span's vocabulary), `split` (fractions of the
distinct token instants, or dates), `batch_size`, `num_workers`.

Point in time: a token of bar t is computed from bars at or before t (the tokenizers' own tests); the vocabulary
counts only training-span tokens, so a token first seen later maps to <unk>; training chunks hold only tokens before
`train_end`, validation chunks tokens in [train_end, val_end), test chunks tokens from `val_end` on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from finfusion.data.calendar import to_us
from finfusion.features.vocabulary import MASK, Vocabulary
from finfusion.samples.masked_lm import MaskedTokenDataset

#: Where a family's tokens come from (shared by the token families' data parts).
TOKEN_SOURCE_DEFAULTS: dict[str, Any] = {
    "source": "lake",
    "dataset": "synthetic_brooks",
    "bars": "synthetic",
    "tokenizer": "brooks",
    "freq": "1d",
    "lake": None,
    "symbols": None,
}
TOKEN_DEFAULTS: dict[str, Any] = {
    **TOKEN_SOURCE_DEFAULTS,
    "max_len": 64,
    "min_len": 8,
    "random_lengths": True,
    "bucket_width": 8,
    "mask_prob": 0.15,
    "min_freq": 5,
    "split": {"train": 0.7, "val": 0.15},
    "batch_size": 64,
    "num_workers": 0,
    "seed": 0,
    "synthetic": {},
}


@dataclass(frozen=True)
class SpanTokens:
    """A span's masked-LM dataset and the instants [T_s] (µs) of each symbol's tokens, in the dataset's order."""

    dataset: MaskedTokenDataset
    instants: list[np.ndarray]


def vocabulary_state(vocabulary: Vocabulary) -> dict[str, Any]:
    return {
        "specials": list(vocabulary.specials),
        "tokens": vocabulary.tokens,
        "counts": {token: vocabulary.counts[token] for token in vocabulary.tokens},
        "min_freq": vocabulary.min_freq,
    }


def vocabulary_of(state: Mapping[str, Any]) -> Vocabulary:
    stored = state["vocabulary"]
    return Vocabulary(stored["tokens"], stored["counts"], int(stored["min_freq"]), stored["specials"])


def span_tokens(
    frame: pl.DataFrame, vocabulary: Vocabulary, options: Mapping[str, Any], start_us: int | None, end_us: int | None
) -> SpanTokens:
    """The masked-LM chunks of the tokens with start <= ts < end (None: open), and their instants."""
    ts = to_us(frame["ts"])
    keep = np.ones(len(ts), dtype=bool)
    if start_us is not None:
        keep &= ts >= start_us
    if end_us is not None:
        keep &= ts < end_us
    part = frame.filter(pl.Series(keep)).sort("symbol", "ts")
    sequences = vocabulary.export_sequences(part)
    instants = [to_us(rows["ts"]) for _, rows in part.group_by("symbol", maintain_order=True)]
    specials: Sequence[int] = [vocabulary.special_id(token) for token in vocabulary.specials]
    dataset = MaskedTokenDataset(
        sequences,
        max_len=int(options["max_len"]),
        vocab_size=len(vocabulary),
        mask_id=vocabulary.special_id(MASK),
        special_ids=specials,
        mask_prob=float(options["mask_prob"]),
        min_len=int(options["min_len"]),
        seed=int(options["seed"]),
        random_lengths=bool(options["random_lengths"]),
    )
    return SpanTokens(dataset, instants)
