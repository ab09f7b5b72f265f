"""Masked-LM samples over price-action token ids, and length-bucketed dynamic batching.

`MaskedTokenDataset` cuts each symbol's id sequence (time order) into consecutive chunks of at most `max_len` ids
(with `random_lengths`, chunks of lengths drawn uniformly in [min_len, max_len], seeded: contexts of varied length,
as BERT's short sequences, which length-bucketed batches then pad little) and applies BERT masking to each: every
non-special position is chosen with probability `mask_prob` (15%); a chosen
position becomes <mask> with probability 0.8, a random non-special id with 0.1, and keeps its id with 0.1. `labels`
holds the original id at chosen positions and -100 elsewhere. The masking of chunk i depends only on (seed, epoch,
i), so an epoch is reproducible and `set_epoch` draws new masks.

`LengthBucketSampler` groups chunks whose lengths fall in the same bucket of `bucket_width` ids, cuts each bucket into
batches, and shuffles the batches (seeded, per epoch); `pad_collate` right-pads a batch to its longest sample.
Batch keys: `tokens` [B, L] int64, `tokens_mask` [B, L] bool (True on real ids), `labels` [B, L] int64 (-100 on
padding), `symbol_index` [B] int64.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from finfusion.errors import FinfusionError
from finfusion.samples.contract import LABELS, SYMBOL_INDEX, TOKENS, TOKENS_MASK

IGNORE_INDEX = -100


class MaskedTokenDataset(Dataset[dict[str, torch.Tensor]]):
    """BERT-masked chunks of per-symbol token id sequences; item i: tokens [n], tokens_mask [n] (all True), labels
    [n], symbol_index []."""

    def __init__(
        self,
        sequences: Mapping[str, torch.Tensor],
        *,
        max_len: int,
        vocab_size: int,
        mask_id: int,
        special_ids: Sequence[int] = (),
        mask_prob: float = 0.15,
        min_len: int = 2,
        seed: int = 0,
        random_lengths: bool = False,
    ) -> None:
        if max_len < 1 or not 1 <= min_len <= max_len:
            raise FinfusionError("masked LM: need 1 <= min_len <= max_len")
        if not 0.0 < mask_prob < 1.0:
            raise FinfusionError("masked LM: mask_prob must lie in (0, 1)")
        specials = sorted({*special_ids, mask_id})
        self.random_ids = torch.tensor([i for i in range(vocab_size) if i not in specials], dtype=torch.int64)
        if len(self.random_ids) == 0:
            raise FinfusionError("masked LM: the vocabulary has no non-special ids")
        self.special_ids = torch.tensor(specials, dtype=torch.int64)
        self.symbols = tuple(sequences)
        self.mask_id, self.mask_prob, self.seed, self.epoch = mask_id, mask_prob, seed, 0
        self.chunks: list[tuple[int, torch.Tensor]] = []
        #: (symbol index, first position, end position) of each chunk in its symbol's sequence.
        self.bounds: list[tuple[int, int, int]] = []
        for s, ids in enumerate(sequences.values()):
            for start, stop in _chunk_bounds(len(ids), max_len, min_len, random_lengths, (seed, s)):
                self.chunks.append((s, ids[start:stop].to(torch.int64)))
                self.bounds.append((s, start, stop))
        self.lengths = np.array([len(chunk) for _, chunk in self.chunks], dtype=np.int64)

    def set_epoch(self, epoch: int) -> None:
        """Draw the masks of another epoch."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, item: int) -> dict[str, torch.Tensor]:
        symbol, ids = self.chunks[item]
        state = np.random.SeedSequence([self.seed, self.epoch, item]).generate_state(1)[0]
        generator = torch.Generator().manual_seed(int(state))
        draw = torch.rand(len(ids), generator=generator)
        action = torch.rand(len(ids), generator=generator)
        replacement = self.random_ids[torch.randint(len(self.random_ids), (len(ids),), generator=generator)]
        chosen = (draw < self.mask_prob) & ~torch.isin(ids, self.special_ids)
        tokens = ids.clone()
        tokens[chosen & (action < 0.8)] = self.mask_id
        random = chosen & (action >= 0.8) & (action < 0.9)
        tokens[random] = replacement[random]
        labels = torch.where(chosen, ids, torch.full_like(ids, IGNORE_INDEX))
        return {
            TOKENS: tokens,
            TOKENS_MASK: torch.ones(len(tokens), dtype=torch.bool),
            LABELS: labels,
            SYMBOL_INDEX: torch.tensor(symbol, dtype=torch.int64),
        }


def _chunk_bounds(
    n: int, max_len: int, min_len: int, random_lengths: bool, key: tuple[int, int]
) -> list[tuple[int, int]]:
    """[start, stop) of the chunks of a sequence of n ids (chunks shorter than min_len dropped)."""
    if random_lengths:
        lengths = np.random.default_rng(list(key)).integers(min_len, max_len + 1, size=n // min_len + 1)
        stops = np.minimum(np.cumsum(lengths), n)
        starts = np.concatenate([[0], stops[:-1]])
    else:
        starts = np.arange(0, n, max_len)
        stops = np.minimum(starts + max_len, n)
    return [(int(a), int(b)) for a, b in zip(starts, stops, strict=True) if b - a >= min_len]


class LengthBucketSampler(Sampler[list[int]]):
    """Batches of indices whose lengths share a bucket of width `bucket_width` (so differ by < bucket_width).

    Each bucket is shuffled and cut into batches of at most `batch_size`; the batches are shuffled together. The order
    depends only on (seed, epoch).
    """

    def __init__(
        self,
        lengths: Sequence[int] | np.ndarray,
        batch_size: int,
        bucket_width: int,
        *,
        seed: int = 0,
        drop_last: bool = False,
    ) -> None:
        if batch_size < 1 or bucket_width < 1:
            raise FinfusionError("length buckets: batch_size and bucket_width must be at least 1")
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.batch_size, self.bucket_width, self.seed, self.drop_last = batch_size, bucket_width, seed, drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches(self) -> list[list[int]]:
        """This epoch's batches, in order."""
        rng = np.random.default_rng([self.seed, self.epoch])
        bucket = self.lengths // self.bucket_width
        out: list[list[int]] = []
        for b in np.unique(bucket):
            members = rng.permutation(np.flatnonzero(bucket == b))
            for start in range(0, len(members), self.batch_size):
                batch = members[start : start + self.batch_size]
                if len(batch) == self.batch_size or not self.drop_last:
                    out.append(batch.tolist())
        return [out[i] for i in rng.permutation(len(out))]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches())

    def __len__(self) -> int:
        return len(self.batches())


def pad_collate(samples: Sequence[dict[str, torch.Tensor]], pad_id: int = 0) -> dict[str, torch.Tensor]:
    """Right-pad `tokens` (with pad_id) and `labels` (with -100) to the batch's longest sample; add `tokens_mask`."""
    if not samples:
        raise FinfusionError("cannot collate an empty batch")
    width = max(len(s[TOKENS]) for s in samples)
    tokens = torch.full((len(samples), width), pad_id, dtype=torch.int64)
    labels = torch.full((len(samples), width), IGNORE_INDEX, dtype=torch.int64)
    mask = torch.zeros((len(samples), width), dtype=torch.bool)
    for row, sample in enumerate(samples):
        n = len(sample[TOKENS])
        tokens[row, :n] = sample[TOKENS]
        labels[row, :n] = sample[LABELS]
        mask[row, :n] = True
    symbols = torch.stack([s[SYMBOL_INDEX] for s in samples])
    return {TOKENS: tokens, TOKENS_MASK: mask, LABELS: labels, SYMBOL_INDEX: symbols}
