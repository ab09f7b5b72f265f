"""Helpers shared by the portfolio tests (tests/test_cga.py, test_cga_service.py, test_portfolio_*.py)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import polars as pl
import torch

from finfusion.data.lake import Lake
from finfusion.data.schema import EMBEDDINGS
from finfusion.features.text import with_text_hash

TEXT_DIM = 4
OVERRIDES = [
    "data.train_end=2019-08-01",
    "data.val_end=2019-10-15",
    "data.lookback=8",
    "data.batch_size=16",
    "task.k=2",
    "model.d_model=8",
    "model.d_ff=8",
    "trainer.max_epochs=2",
    "trainer.deterministic=false",
]


@contextmanager
def single_thread() -> Iterator[None]:
    """One torch thread for the duration: the tensors of these tests are small, and several threads on a busy
    machine are many times slower than one."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def fake_embeddings(lake: Lake, dataset: str = "synthetic") -> None:
    """Store a TEXT_DIM vector per text hash (a function of the hash) of `dataset`'s texts as the default encoder's
    embeddings."""
    hashes = with_text_hash(lake.read("text", dataset))["text_hash"].unique().sort()
    vectors = [list(np.frombuffer(hashlib.sha256(h.encode()).digest()[:TEXT_DIM], np.uint8) / 255.0) for h in hashes]
    rows = pl.DataFrame(
        {"text_hash": hashes, "vector": vectors, "n_chunks": [1] * len(hashes)},
        schema={"text_hash": pl.String, "vector": pl.List(pl.Float32), "n_chunks": pl.Int64},
    ).with_columns(bucket=pl.col("text_hash").str.slice(0, 2))
    lake.write(EMBEDDINGS, "all-MiniLM-L6-v2", rows)
