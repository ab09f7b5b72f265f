"""Embedding throughput: `embed_texts` into the lake against sentence-transformers `encode` on the same texts.

What is measured, in one run on one corpus:

* the corpus: `--texts` distinct posts (default 5,000) drawn with a fixed seed from the StockNet tweets in
  ../shared/data/stocknet when present, else distinct news texts of the synthetic market. Texts are distinct after
  normalisation, so both sides embed exactly the same texts (our de-duplication would otherwise make us faster);
* reference: `SentenceTransformer.encode(texts, batch_size)` of the packaged all-MiniLM-L6-v2 on the normalised texts;
* ours, first run: `embed_texts(lake, texts, encoder, batch_size)` into a fresh lake (hashing, reading the stored
  hashes, tokenising for chunking, encoding longest first, pooling, atomic partitioned writes);
* ours, second run: the same call again over the unchanged corpus (everything is already stored).

The encoder is loaded once, before any timing, and warmed up. Each side runs `--repeats` times, interleaved (the
reference first in even repetitions, last in odd ones, as other work on a shared machine drifts); the median seconds
are reported. Ours must store vectors equal to the reference's (to 1e-4) and the second run must embed nothing.
Ours encodes in blocks of 8 batches sorted by token count, which is why it can beat one `encode` call over everything.
The last line is one JSON object: {"benchmark": "embed", "ours": first-run texts/s, "reference": encode texts/s,
"unit": "texts/s", "ratio": ours / reference, "second_run_speedup": first seconds / second seconds}.

    python benchmarks/embed.py                 # 5,000 texts, 3 repeats (several minutes on a laptop CPU)
    python benchmarks/embed.py --texts 500     # a quick smoke test
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl

from finfusion.data.lake import Lake
from finfusion.data.sources.stocknet import read_tweets
from finfusion.data.sources.synthetic import SyntheticConfig, generate_market
from finfusion.features.text import (
    EmbedReport,
    SentenceTransformerEncoder,
    embed_texts,
    load_embeddings,
    load_encoder,
    vector_matrix,
    with_text_hash,
)

STOCKNET = Path(__file__).resolve().parents[2] / "shared" / "data" / "stocknet"
SEED = 20240601


def corpus(n: int) -> tuple[pl.DataFrame, str]:
    """`n` texts [title, body, document, text_hash] with distinct hashes, and where they came from."""
    if STOCKNET.exists():
        raw, source = read_tweets(STOCKNET).select(pl.lit(None, dtype=pl.String).alias("title"), "body"), "StockNet"
    else:
        texts = generate_market(SyntheticConfig(n_symbols=200, seed=SEED)).texts
        raw, source = texts.select("title", "body"), "synthetic market"
    distinct = with_text_hash(raw).unique("text_hash", keep="first", maintain_order=True)
    picked = distinct.sample(n=min(n, distinct.height), seed=SEED, shuffle=True)
    return picked, f"{picked.height:,} distinct {source} texts"


def timed(run: Callable[[], object]) -> tuple[float, object]:
    started = time.perf_counter()
    result = run()
    return time.perf_counter() - started, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--texts", type=int, default=5_000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    encoder = load_encoder()
    assert isinstance(encoder, SentenceTransformerEncoder)
    frame, described = corpus(args.texts)
    documents = frame["document"].to_list()
    encoder.model.encode(documents[:64], batch_size=args.batch_size)  # warm-up

    reference_s, first_s, second_s = [], [], []
    for repeat in range(args.repeats):
        with tempfile.TemporaryDirectory() as folder:
            lake = Lake(folder)
            if repeat % 2 == 0:
                seconds, reference = timed(lambda: encoder.model.encode(documents, batch_size=args.batch_size))
                reference_s.append(seconds)
            seconds, first = timed(lambda lake=lake: embed_texts(lake, frame, encoder, batch_size=args.batch_size))
            first_s.append(seconds)
            seconds, second = timed(lambda lake=lake: embed_texts(lake, frame, encoder, batch_size=args.batch_size))
            second_s.append(seconds)
            if repeat % 2 == 1:
                seconds, reference = timed(lambda: encoder.model.encode(documents, batch_size=args.batch_size))
                reference_s.append(seconds)
            assert isinstance(first, EmbedReport) and first.embedded == len(documents), first
            assert isinstance(second, EmbedReport) and second.embedded == 0 and second.cached == len(documents)
            stored = vector_matrix(load_embeddings(lake, encoder, frame["text_hash"])["vector"])
            np.testing.assert_allclose(stored, reference, atol=1e-4)

    n = len(documents)
    ref, ours, again = (statistics.median(s) for s in (reference_s, first_s, second_s))
    print(f"embed benchmark: {described}, all-MiniLM-L6-v2, batch size {args.batch_size}, median of {args.repeats}")
    print(f"{'run':<44}{'seconds':>10}{'texts/s':>12}")
    rows = [
        ("reference: SentenceTransformer.encode", ref),
        ("ours: embed_texts, fresh lake", ours),
        ("ours: embed_texts, unchanged corpus again", again),
    ]
    for name, seconds in rows:
        print(f"{name:<44}{seconds:>10.3f}{n / seconds:>12,.0f}")
    print(f"ratio (ours / reference): {ref / ours:.3f}; second run {ours / again:,.0f}x faster than the first")
    print(
        json.dumps(
            {
                "benchmark": "embed",
                "ours": round(n / ours, 2),
                "reference": round(n / ref, 2),
                "unit": "texts/s",
                "ratio": round(ref / ours, 4),
                "second_run_speedup": round(ours / again, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
