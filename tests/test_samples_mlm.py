"""Masked-LM samples: chunking, BERT masking proportions and labels, seeding, length buckets and padding."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from finfusion.errors import FinfusionError
from finfusion.samples.contract import LABELS, SYMBOL_INDEX, TOKENS, TOKENS_MASK
from finfusion.samples.masked_lm import (
    IGNORE_INDEX,
    LengthBucketSampler,
    MaskedTokenDataset,
    pad_collate,
)

PAD, UNK, MASK, CLS = 0, 1, 2, 3
VOCAB = 50


def sequences(lengths: dict[str, int], seed: int = 0) -> dict[str, torch.Tensor]:
    rng = np.random.default_rng(seed)
    return {s: torch.from_numpy(rng.integers(4, VOCAB, n)) for s, n in lengths.items()}


def dataset(seqs: dict[str, torch.Tensor], max_len: int = 64, seed: int = 0) -> MaskedTokenDataset:
    return MaskedTokenDataset(
        seqs, max_len=max_len, vocab_size=VOCAB, mask_id=MASK, special_ids=(PAD, UNK, CLS), seed=seed
    )


def test_chunks_stay_in_one_symbol_and_cover_it_in_order() -> None:
    seqs = sequences({"AAA": 150, "BBB": 65, "CCC": 1})
    data = dataset(seqs)
    assert data.lengths.tolist() == [64, 64, 22, 64]
    assert [s for s, _ in data.chunks] == [0, 0, 0, 1]
    assert torch.equal(torch.cat([chunk for s, chunk in data.chunks if s == 0]), seqs["AAA"])


def test_masking_proportions_and_labels() -> None:
    data = dataset(sequences({"AAA": 20_000, "BBB": 20_000}), max_len=500)
    chosen = masked = randomised = kept = total = 0
    for item in range(len(data)):
        sample = data[item]
        original = data.chunks[item][1]
        labels, tokens = sample[LABELS], sample[TOKENS]
        where = labels != IGNORE_INDEX
        assert torch.equal(labels[where], original[where])
        assert torch.equal(tokens[~where], original[~where])
        chosen += int(where.sum())
        masked += int((tokens[where] == MASK).sum())
        changed = where & (tokens != MASK) & (tokens != original)
        randomised += int(changed.sum())
        kept += int((where & (tokens == original)).sum())
        total += len(original)
        assert not torch.isin(tokens[changed], torch.tensor([PAD, UNK, MASK, CLS])).any()
    assert abs(chosen / total - 0.15) < 0.01
    assert abs(masked / chosen - 0.8) < 0.02
    # A random replacement equals the original id about 1 time in 46, so it counts as kept.
    assert abs(randomised / chosen - 0.1 * 45 / 46) < 0.015
    assert abs(kept / chosen - (0.1 + 0.1 / 46)) < 0.015


def test_special_tokens_are_never_masked() -> None:
    seqs = {"AAA": torch.tensor([CLS, *range(4, 30)] * 40)}
    data = dataset(seqs, max_len=100)
    for item in range(len(data)):
        sample = data[item]
        is_cls = data.chunks[item][1] == CLS
        assert (sample[LABELS][is_cls] == IGNORE_INDEX).all() and (sample[TOKENS][is_cls] == CLS).all()


def test_masking_is_seeded_and_changes_with_epoch_and_seed() -> None:
    seqs = sequences({"AAA": 300})
    first, again, other = dataset(seqs), dataset(seqs), dataset(seqs, seed=1)
    assert torch.equal(first[0][TOKENS], again[0][TOKENS]) and torch.equal(first[0][LABELS], again[0][LABELS])
    assert not torch.equal(first[0][LABELS], other[0][LABELS])
    again.set_epoch(1)
    assert not torch.equal(first[0][LABELS], again[0][LABELS])


def test_length_buckets_group_similar_lengths() -> None:
    lengths = np.random.default_rng(0).integers(2, 200, 500)
    sampler = LengthBucketSampler(lengths, batch_size=8, bucket_width=16, seed=0)
    batches = list(sampler)
    assert sorted(i for batch in batches for i in batch) == list(range(500))
    assert all(1 <= len(batch) <= 8 for batch in batches)
    assert all(lengths[batch].max() - lengths[batch].min() < 16 for batch in batches)
    starts = [lengths[batch[0]] // 16 for batch in batches]
    assert starts != sorted(starts)
    assert batches == list(LengthBucketSampler(lengths, batch_size=8, bucket_width=16, seed=0))
    sampler.set_epoch(1)
    assert list(sampler) != batches
    dropped = LengthBucketSampler(lengths, batch_size=8, bucket_width=16, drop_last=True)
    assert all(len(batch) == 8 for batch in dropped) and len(dropped) < len(sampler)


def test_pad_collate_pads_to_the_batch_maximum() -> None:
    data = dataset(sequences({"AAA": 70, "BBB": 5}))
    batch = pad_collate([data[1], data[2], data[0]], pad_id=PAD)
    assert batch[TOKENS].shape == (3, 64) and batch[TOKENS].dtype == torch.int64
    assert batch[TOKENS_MASK].sum(dim=1).tolist() == [6, 5, 64]
    assert batch[TOKENS_MASK].dtype == torch.bool
    assert (batch[TOKENS][~batch[TOKENS_MASK]] == PAD).all()
    assert (batch[LABELS][~batch[TOKENS_MASK]] == IGNORE_INDEX).all()
    assert torch.equal(batch[TOKENS][1, :5], data[2][TOKENS]) and batch[SYMBOL_INDEX].tolist() == [0, 1, 0]


def test_dataloader_with_buckets_yields_padded_batches() -> None:
    data = dataset(sequences({s: n for s, n in zip("ABCDEFGH", range(30, 270, 30), strict=True)}), max_len=48)
    sampler = LengthBucketSampler(data.lengths, batch_size=4, bucket_width=8)
    seen = 0
    for batch in DataLoader(data, batch_sampler=sampler, collate_fn=pad_collate):
        real = batch[TOKENS_MASK].sum(dim=1)
        assert batch[TOKENS].shape[1] == int(real.max()) and int(real.max() - real.min()) < 8
        seen += len(real)
    assert seen == len(data)


def test_bad_arguments_are_rejected() -> None:
    with pytest.raises(FinfusionError):
        MaskedTokenDataset({}, max_len=0, vocab_size=VOCAB, mask_id=MASK)
    with pytest.raises(FinfusionError):
        MaskedTokenDataset({}, max_len=8, vocab_size=3, mask_id=MASK, special_ids=(0, 1))
    with pytest.raises(FinfusionError):
        LengthBucketSampler([3, 4], batch_size=0, bucket_width=4)
    with pytest.raises(FinfusionError):
        pad_collate([])
