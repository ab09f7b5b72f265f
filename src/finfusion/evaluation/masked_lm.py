"""Scores of masked-LM predictions per chunk of tokens: how many positions were masked, how many the model got
right, and their total surprisal (-log2 of the probability given to the original token), for a model and for the
unigram baseline (the training span's token frequencies, the most frequent token as its guess)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from finfusion.samples.contract import LABELS
from finfusion.samples.masked_lm import IGNORE_INDEX, MaskedTokenDataset, pad_collate


@dataclass(frozen=True)
class ChunkScores:
    """Per chunk [C]: `masked` positions, `hits` (argmax == original) and `bits` (summed surprisal)."""

    masked: np.ndarray
    hits: np.ndarray
    bits: np.ndarray

    def accuracy(self) -> float:
        return float(self.hits.sum() / max(self.masked.sum(), 1))

    def perplexity(self) -> float:
        return float(2.0 ** (self.bits.sum() / max(self.masked.sum(), 1)))


def model_chunk_scores(model: nn.Module, dataset: MaskedTokenDataset, pad_id: int, batch_size: int = 64) -> ChunkScores:
    """The model's scores of each chunk of `dataset` (its masks of the current epoch), in the dataset's order."""
    model.eval()
    masked, hits, bits = [], [], []
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=lambda b: pad_collate(b, pad_id))
    with torch.inference_mode():
        for batch in loader:
            logits = model(batch)["logits"].float()
            labels = batch[LABELS]
            chosen = labels != IGNORE_INDEX
            log_p = torch.log_softmax(logits, dim=-1).gather(-1, labels.clamp_min(0).unsqueeze(-1)).squeeze(-1)
            masked.append(chosen.sum(dim=1).numpy())
            hits.append(((logits.argmax(dim=-1) == labels) & chosen).sum(dim=1).numpy())
            bits.append((-(log_p / np.log(2.0)) * chosen).sum(dim=1).numpy())
    return ChunkScores(*(np.concatenate(part) if part else np.zeros(0) for part in (masked, hits, bits)))


def unigram_chunk_scores(counts: Mapping[int, int], vocab_size: int, dataset: MaskedTokenDataset) -> ChunkScores:
    """The unigram baseline's scores: p(id) from training counts (add-one smoothed over the vocabulary)."""
    frequency = np.ones(vocab_size)
    for token_id, count in counts.items():
        frequency[token_id] += count
    log2_p = np.log2(frequency / frequency.sum())
    guess = int(np.argmax(frequency))
    masked, hits, bits = [], [], []
    for i in range(len(dataset)):
        labels = dataset[i][LABELS].numpy()
        chosen = labels[labels != IGNORE_INDEX]
        masked.append(len(chosen))
        hits.append(int((chosen == guess).sum()))
        bits.append(float(-log2_p[chosen].sum()))
    return ChunkScores(np.asarray(masked), np.asarray(hits), np.asarray(bits))
