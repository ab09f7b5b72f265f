"""Masked-LM training throughput on price-action tokens: length-bucketed batches (ours) against the same model on
fixed-length padded batches (the reference), same data, same run.

Data: the Brooks tokens of a synthetic market (20 symbols, daily, 2012-2020) cut into chunks of 16-128 tokens
(random lengths, seeded), BERT-masked 15% (samples/masked_lm.py). Model: the `token_bert` cpu preset (hidden 64,
2 layers). Ours: `LengthBucketSampler` (buckets of 8 ids) with `pad_collate` (each batch padded to its longest
chunk). Reference: the same chunks in shuffled batches, each padded to the 128-token maximum (a plain fixed-shape
DataLoader). Both take the same number of optimiser steps from the same initial weights on 2 CPU threads; the
throughput is real (non-padding) tokens per second of training; medians over the repeats.

The last line is one JSON object:
{"benchmark": "mlm_throughput", "ours": tokens/s, "reference": tokens/s, "unit": "tokens/s", "ratio": ours/ref}

    python benchmarks/mlm_throughput.py             # 5 repeats of 60 steps
    python benchmarks/mlm_throughput.py --quick     # 1 repeat of 5 steps, to smoke-test the script
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable, Iterator

import torch

from finfusion.data.sources.synthetic import SyntheticConfig, generate_market
from finfusion.features.brooks import tokenize_bars
from finfusion.features.vocabulary import MASK, Vocabulary
from finfusion.models.token_bert import TokenBert
from finfusion.samples.contract import TOKENS_MASK
from finfusion.samples.masked_lm import LengthBucketSampler, MaskedTokenDataset, pad_collate

MAX_LEN, BATCH = 128, 32


def dataset() -> tuple[MaskedTokenDataset, int]:
    market = generate_market(SyntheticConfig(n_symbols=20, start="2012-01-01", end="2020-12-31", seed=1))
    tokens = tokenize_bars(market.bars)
    vocabulary = Vocabulary.build(tokens["token"], min_freq=5)
    chunks = MaskedTokenDataset(
        vocabulary.export_sequences(tokens), max_len=MAX_LEN, vocab_size=len(vocabulary),
        mask_id=vocabulary.special_id(MASK), special_ids=[vocabulary.pad_id, vocabulary.unk_id], min_len=16,
        random_lengths=True,
    )  # fmt: skip
    return chunks, len(vocabulary)


def bucketed(data: MaskedTokenDataset, seed: int) -> Iterator[dict[str, torch.Tensor]]:
    sampler = LengthBucketSampler(data.lengths, BATCH, 8, seed=seed)
    while True:
        for indices in sampler:
            yield pad_collate([data[i] for i in indices])


def fixed(data: MaskedTokenDataset, seed: int) -> Iterator[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(len(data), generator=generator).tolist()
        for start in range(0, len(order) - BATCH + 1, BATCH):
            batch = pad_collate([data[i] for i in order[start : start + BATCH]])
            pad = MAX_LEN - batch["tokens"].shape[1]
            yield {key: torch.nn.functional.pad(value, (0, pad), value=-100 if key == "labels" else 0)
                   if value.ndim == 2 else value for key, value in batch.items()}  # fmt: skip


def tokens_per_second(batches: Callable[[], Iterator[dict[str, torch.Tensor]]], vocab: int, steps: int) -> float:
    torch.manual_seed(0)
    model = TokenBert(vocab, max_len=MAX_LEN)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    stream = batches()
    next(stream)  # warm-up batch not timed
    real = 0
    start = time.perf_counter()
    for _ in range(steps):
        batch = next(stream)
        loss = model(batch)["mlm_loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        real += int(batch[TOKENS_MASK].sum())
    return real / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    repeats, steps = (1, 5) if args.quick else (args.repeats, args.steps)
    torch.set_num_threads(2)
    data, vocab = dataset()
    print(f"{len(data):,} chunks, mean length {data.lengths.mean():.1f}, vocabulary {vocab}")
    ours, reference = [], []
    for repeat in range(repeats):
        ours.append(tokens_per_second(lambda r=repeat: bucketed(data, r), vocab, steps))
        reference.append(tokens_per_second(lambda r=repeat: fixed(data, r), vocab, steps))
        print(f"repeat {repeat + 1}: bucketed {ours[-1]:,.0f} tokens/s, fixed-length {reference[-1]:,.0f} tokens/s")
    mine, theirs = statistics.median(ours), statistics.median(reference)
    print(json.dumps({"benchmark": "mlm_throughput", "ours": round(mine, 1), "reference": round(theirs, 1),
                      "unit": "tokens/s", "ratio": round(mine / theirs, 3)}))  # fmt: skip


if __name__ == "__main__":
    main()
