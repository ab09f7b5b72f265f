"""Token vocabularies: ids for string tokens with a minimum-frequency cut-off and an unknown token, frequency tables,
entropy statistics, JSON persistence, and export of token sequences as integer tensors.

Ids: the special tokens first (by default <pad>=0, <unk>=1, <mask>=2, <cls>=3), then the kept tokens by count
(descending, ties by token). A token seen fewer than `min_freq` times is not kept and encodes as <unk>.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import polars as pl
import torch

from finfusion.data.atomic import write_json_atomic
from finfusion.data.lake import Lake
from finfusion.errors import FinfusionError

PAD, UNK, MASK, CLS = "<pad>", "<unk>", "<mask>", "<cls>"
DEFAULT_SPECIALS = (PAD, UNK, MASK, CLS)
#: File name of a token dataset's vocabulary, beside its partitions: LAKE/kind=tokens/dataset=NAME/freq=F/.
VOCABULARY_FILE = "_vocabulary.json"
FORMAT = "finfusion-vocabulary"
FORMAT_VERSION = 1
COMPONENT_SEPARATOR = "|"
VALUE_SEPARATOR = "="


@dataclass(frozen=True)
class EntropyStats:
    """Information content of the token stream the vocabulary was built from. Entropies are in bits."""

    #: Token occurrences counted, and distinct tokens among them.
    n_tokens: int
    n_types: int
    #: Ids in the vocabulary, specials included.
    vocab_size: int
    #: Share of occurrences whose token is kept (not mapped to <unk>).
    coverage: float
    #: Shannon entropy H = -sum p log2 p of the observed token distribution, and its perplexity 2^H.
    entropy_bits: float
    perplexity: float
    #: Entropy after mapping the dropped tokens to <unk> (what a model sees).
    kept_entropy_bits: float
    #: log2(n_types): the entropy if every observed token were equally likely.
    max_entropy_bits: float
    #: Entropy of each component's values, for composite 'name=value|name=value' tokens (else empty).
    components: dict[str, float]

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class PaddedSequences:
    """Right-padded id sequences: `ids` [S, T] int64 (pad id after the end), `mask` [S, T] bool (True on real
    tokens), `symbols` [S] naming each row."""

    symbols: list[str]
    ids: torch.Tensor
    mask: torch.Tensor


def entropy_bits(counts: Iterable[int]) -> float:
    """Shannon entropy in bits of the distribution proportional to `counts` (0 for an empty or one-point one)."""
    values = np.array([c for c in counts if c > 0], dtype=np.float64)
    if values.size == 0:
        return 0.0
    p = values / values.sum()
    return float(max(0.0, -(p * np.log2(p)).sum()))


class Vocabulary:
    """Maps tokens to ids and back. Build with `Vocabulary.build`; load with `Vocabulary.from_json`."""

    def __init__(
        self,
        tokens: Sequence[str],
        counts: Mapping[str, int],
        min_freq: int,
        specials: Sequence[str] = DEFAULT_SPECIALS,
    ) -> None:
        if PAD not in specials or UNK not in specials:
            raise FinfusionError(f"a vocabulary needs the special tokens {PAD} and {UNK}")
        if len(set(specials)) != len(specials) or set(specials) & set(tokens):
            raise FinfusionError("vocabulary tokens and special tokens must all be distinct")
        self.specials = tuple(specials)
        self.min_freq = min_freq
        self.counts = dict(counts)
        self.itos: list[str] = [*self.specials, *tokens]
        self.stoi: dict[str, int] = {token: i for i, token in enumerate(self.itos)}
        if len(self.stoi) != len(self.itos):
            raise FinfusionError("vocabulary tokens must be distinct")

    @classmethod
    def build(
        cls,
        tokens: Iterable[str],
        min_freq: int = 5,
        specials: Sequence[str] = DEFAULT_SPECIALS,
        max_size: int | None = None,
    ) -> Vocabulary:
        """Count `tokens` and keep those seen at least `min_freq` times (at most `max_size` ids in all, specials
        included), most frequent first."""
        if min_freq < 1:
            raise FinfusionError("min_freq must be at least 1")
        if max_size is not None and max_size < len(specials):
            raise FinfusionError(f"max_size must leave room for the {len(specials)} special tokens")
        counts = Counter(tokens)
        special = set(specials)
        ranked = sorted(((t, c) for t, c in counts.items() if c >= min_freq and t not in special), key=_rank_key)
        kept = [t for t, _ in ranked]
        if max_size is not None:
            kept = kept[: max_size - len(specials)]
        return cls(kept, counts, min_freq, specials)

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, token: object) -> bool:
        return token in self.stoi

    @property
    def pad_id(self) -> int:
        return self.stoi[PAD]

    @property
    def unk_id(self) -> int:
        return self.stoi[UNK]

    def special_id(self, token: str) -> int:
        """Id of a special token such as <mask> or <cls>."""
        if token not in self.specials:
            raise FinfusionError(f"'{token}' is not a special token of this vocabulary ({', '.join(self.specials)})")
        return self.stoi[token]

    @property
    def tokens(self) -> list[str]:
        """The kept (non-special) tokens in id order."""
        return self.itos[len(self.specials) :]

    def encode(self, tokens: Sequence[str] | pl.Series) -> torch.Tensor:
        """Ids [T] (int64) of `tokens`; unknown tokens get the <unk> id."""
        series = tokens if isinstance(tokens, pl.Series) else pl.Series(list(tokens), dtype=pl.String)
        ids = series.cast(pl.String).replace_strict(self.stoi, default=self.unk_id, return_dtype=pl.Int64)
        return torch.from_numpy(ids.to_numpy().copy())

    def decode(self, ids: torch.Tensor | Sequence[int]) -> list[str]:
        """Tokens of `ids` [T]; raises FinfusionError for an id outside the vocabulary."""
        values = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
        bad = [i for i in values if not 0 <= i < len(self.itos)]
        if bad:
            raise FinfusionError(f"id {bad[0]} is outside the vocabulary (size {len(self.itos)})")
        return [self.itos[i] for i in values]

    def frequency_table(self) -> pl.DataFrame:
        """Every counted token: rank, token, count, share, cum_share (of occurrences) and id (null if dropped),
        most frequent first."""
        ranked = sorted(self.counts.items(), key=_rank_key)
        total = sum(self.counts.values()) or 1
        counts = pl.Series("count", [c for _, c in ranked], dtype=pl.Int64)
        return pl.DataFrame(
            {
                "rank": pl.Series(range(1, len(ranked) + 1), dtype=pl.Int64),
                "token": pl.Series([t for t, _ in ranked], dtype=pl.String),
                "count": counts,
                "share": counts / total,
                "cum_share": counts.cum_sum() / total,
                "id": pl.Series([self.stoi.get(t) for t, _ in ranked], dtype=pl.Int64),
            }
        )

    def entropy_stats(self) -> EntropyStats:
        """Entropy, perplexity and coverage of the counted tokens, and the entropy of each component."""
        total = sum(self.counts.values())
        kept = sum(c for t, c in self.counts.items() if t in self.stoi)
        dropped = total - kept
        entropy = entropy_bits(self.counts.values())
        kept_counts = [c for t, c in self.counts.items() if t in self.stoi]
        return EntropyStats(
            n_tokens=total,
            n_types=len(self.counts),
            vocab_size=len(self),
            coverage=kept / total if total else 0.0,
            entropy_bits=entropy,
            perplexity=2.0**entropy,
            kept_entropy_bits=entropy_bits([*kept_counts, dropped]),
            max_entropy_bits=math.log2(len(self.counts)) if self.counts else 0.0,
            components={name: entropy_bits(values.values()) for name, values in self.component_counts().items()},
        )

    def component_counts(self) -> dict[str, Counter[str]]:
        """Occurrences of each component value, for composite 'name=value|...' tokens; {} if any token is not one."""
        out: dict[str, Counter[str]] = {}
        for token, count in self.counts.items():
            for part in token.split(COMPONENT_SEPARATOR):
                name, sep, value = part.partition(VALUE_SEPARATOR)
                if not sep:
                    return {}
                out.setdefault(name, Counter())[value] += count
        return out

    def export_sequences(self, frame: pl.DataFrame, column: str = "token") -> dict[str, torch.Tensor]:
        """Per symbol, the ids [T_s] of its tokens in time order. `frame` has symbol, ts and `column`."""
        ordered = _ordered(frame, column)
        ids = self.encode(ordered[column])
        symbols = ordered["symbol"]
        bounds = np.flatnonzero(symbols.ne(symbols.shift(1)).fill_null(True).to_numpy())
        ends = [*bounds[1:].tolist(), len(ordered)]
        return {symbols[int(s)]: ids[int(s) : e] for s, e in zip(bounds, ends, strict=True)}

    def export_padded(self, frame: pl.DataFrame, column: str = "token", max_len: int | None = None) -> PaddedSequences:
        """All symbols' sequences right-padded to the longest (or the last `max_len` tokens of each)."""
        sequences = self.export_sequences(frame, column)
        if max_len is not None:
            if max_len < 1:
                raise FinfusionError("max_len must be at least 1")
            sequences = {s: ids[-max_len:] for s, ids in sequences.items()}
        length = max((len(ids) for ids in sequences.values()), default=0)
        ids = torch.full((len(sequences), length), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(sequences), length), dtype=torch.bool)
        for row, seq in enumerate(sequences.values()):
            ids[row, : len(seq)] = seq
            mask[row, : len(seq)] = True
        return PaddedSequences(symbols=list(sequences), ids=ids, mask=mask)

    def to_json(self, path: str | Path) -> None:
        """Save atomically (specials, kept tokens in id order, min_freq and every count)."""
        write_json_atomic(
            Path(path),
            {
                "format": FORMAT,
                "version": FORMAT_VERSION,
                "min_freq": self.min_freq,
                "specials": list(self.specials),
                "tokens": self.tokens,
                "counts": dict(sorted(self.counts.items(), key=_rank_key)),
            },
        )

    @classmethod
    def from_json(cls, path: str | Path) -> Vocabulary:
        try:
            payload = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise FinfusionError(f"{path}: cannot read vocabulary: {exc}") from exc
        if not isinstance(payload, dict) or payload.get("format") != FORMAT:
            raise FinfusionError(f"{path}: not a finfusion vocabulary file")
        if payload.get("version") != FORMAT_VERSION:
            raise FinfusionError(f"{path}: vocabulary format version {payload.get('version')} is not supported")
        try:
            return cls(payload["tokens"], payload["counts"], int(payload["min_freq"]), payload["specials"])
        except (KeyError, TypeError, ValueError) as exc:
            raise FinfusionError(f"{path}: malformed vocabulary file ({exc})") from exc


def vocabulary_path(lake: Lake, dataset: str, freq: str) -> Path:
    """Where a token dataset's vocabulary lives: LAKE/kind=tokens/dataset=NAME/freq=F/_vocabulary.json."""
    return lake.dataset_dir("tokens", dataset, freq) / VOCABULARY_FILE


def _rank_key(item: tuple[str, int]) -> tuple[int, str]:
    return -item[1], item[0]


def _ordered(frame: pl.DataFrame, column: str) -> pl.DataFrame:
    missing = [c for c in ("symbol", column) if c not in frame.columns]
    if missing:
        raise FinfusionError(f"token frame lacks column(s) {', '.join(missing)}")
    return (
        frame.sort("symbol", "ts", maintain_order=True)
        if "ts" in frame.columns
        else frame.sort("symbol", maintain_order=True)
    )
