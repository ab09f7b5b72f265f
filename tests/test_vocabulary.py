"""Token vocabularies: min-freq cut-off, unknown token, encode/decode, frequencies, entropy, JSON, sequence export."""

from __future__ import annotations

import math
from pathlib import Path

import polars as pl
import pytest
import torch

from finfusion.errors import FinfusionError
from finfusion.features.vocabulary import (
    DEFAULT_SPECIALS,
    PAD,
    UNK,
    Vocabulary,
    entropy_bits,
)

#: a x5, b x3, c x2, d x1
STREAM = ["a"] * 5 + ["b"] * 3 + ["c"] * 2 + ["d"]


def test_specials_first_then_tokens_by_count() -> None:
    vocabulary = Vocabulary.build(STREAM, min_freq=1)
    assert vocabulary.itos == [*DEFAULT_SPECIALS, "a", "b", "c", "d"]
    assert [vocabulary.pad_id, vocabulary.unk_id] == [0, 1]
    assert [vocabulary.special_id("<mask>"), vocabulary.special_id("<cls>")] == [2, 3]
    assert len(vocabulary) == 8 and "a" in vocabulary and "z" not in vocabulary


def test_ties_are_broken_by_token_so_builds_are_deterministic() -> None:
    assert Vocabulary.build(["y", "x", "x", "y"], min_freq=1).tokens == ["x", "y"]


def test_min_freq_drops_rare_tokens_to_unk() -> None:
    vocabulary = Vocabulary.build(STREAM, min_freq=3)
    assert vocabulary.tokens == ["a", "b"]
    ids = vocabulary.encode(["a", "c", "b", "never-seen"])
    assert ids.dtype == torch.long and ids.tolist() == [4, vocabulary.unk_id, 5, vocabulary.unk_id]
    assert vocabulary.decode(ids) == ["a", UNK, "b", UNK]


def test_max_size_caps_the_vocabulary() -> None:
    vocabulary = Vocabulary.build(STREAM, min_freq=1, max_size=len(DEFAULT_SPECIALS) + 2)
    assert vocabulary.tokens == ["a", "b"]


def test_encode_decode_round_trip_and_series_input() -> None:
    vocabulary = Vocabulary.build(STREAM, min_freq=1)
    assert vocabulary.decode(vocabulary.encode(STREAM)) == STREAM
    assert vocabulary.encode(pl.Series(["d", "a"])).tolist() == [7, 4]
    assert vocabulary.encode([]).shape == (0,)


def test_decode_refuses_an_unknown_id() -> None:
    with pytest.raises(FinfusionError, match="outside the vocabulary"):
        Vocabulary.build(STREAM).decode([99])


def test_vocabulary_needs_pad_and_unk() -> None:
    with pytest.raises(FinfusionError, match=PAD):
        Vocabulary.build(STREAM, specials=("<unk>",))
    with pytest.raises(FinfusionError, match="min_freq"):
        Vocabulary.build(STREAM, min_freq=0)


def test_frequency_table() -> None:
    table = Vocabulary.build(STREAM, min_freq=2).frequency_table()
    assert table["token"].to_list() == ["a", "b", "c", "d"]
    assert table["count"].to_list() == [5, 3, 2, 1]
    assert table["share"].to_list() == pytest.approx([5 / 11, 3 / 11, 2 / 11, 1 / 11])
    assert table["cum_share"][-1] == pytest.approx(1.0)
    assert table["id"].to_list() == [4, 5, 6, None]


@pytest.mark.parametrize("n", [1, 2, 5, 64])
def test_entropy_of_a_uniform_distribution_is_log2_n(n: int) -> None:
    stats = Vocabulary.build([f"t{i}" for i in range(n)] * 3, min_freq=1).entropy_stats()
    assert stats.entropy_bits == pytest.approx(math.log2(n))
    assert stats.perplexity == pytest.approx(n)
    assert stats.max_entropy_bits == pytest.approx(math.log2(n))


def test_entropy_coverage_and_unk_entropy() -> None:
    stats = Vocabulary.build(STREAM, min_freq=3).entropy_stats()
    p = [5 / 11, 3 / 11, 2 / 11, 1 / 11]
    assert stats.entropy_bits == pytest.approx(-sum(x * math.log2(x) for x in p))
    assert stats.coverage == pytest.approx(8 / 11)
    kept = [5 / 11, 3 / 11, 3 / 11]  # c and d both become <unk>
    assert stats.kept_entropy_bits == pytest.approx(-sum(x * math.log2(x) for x in kept))
    assert (stats.n_tokens, stats.n_types, stats.vocab_size) == (11, 4, 6)
    assert stats.components == {}
    assert entropy_bits([]) == 0.0 and entropy_bits([7]) == 0.0


def test_component_entropies_of_composite_tokens() -> None:
    tokens = ["trend=up|bar=doji", "trend=down|bar=doji", "trend=up|bar=bull", "trend=down|bar=bull"] * 2
    stats = Vocabulary.build(tokens, min_freq=1).entropy_stats()
    assert stats.components == pytest.approx({"trend": 1.0, "bar": 1.0})
    assert stats.entropy_bits == pytest.approx(2.0)
    skewed = Vocabulary.build(["trend=up|bar=doji"] * 3 + ["trend=up|bar=bull"], min_freq=1).entropy_stats()
    assert skewed.components["trend"] == 0.0
    assert skewed.components["bar"] == pytest.approx(-(0.75 * math.log2(0.75) + 0.25 * math.log2(0.25)))


def test_json_round_trip(tmp_path: Path) -> None:
    vocabulary = Vocabulary.build(STREAM, min_freq=2)
    path = tmp_path / "sub" / "_vocabulary.json"
    vocabulary.to_json(path)
    loaded = Vocabulary.from_json(path)
    assert loaded.itos == vocabulary.itos and loaded.counts == vocabulary.counts and loaded.min_freq == 2
    assert loaded.encode(STREAM).equal(vocabulary.encode(STREAM))
    assert [p.name for p in path.parent.iterdir()] == ["_vocabulary.json"]  # no temporary file left behind


def test_from_json_refuses_other_files(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_text('{"hello": 1}', encoding="utf-8")
    with pytest.raises(FinfusionError, match="not a finfusion vocabulary"):
        Vocabulary.from_json(path)
    with pytest.raises(FinfusionError, match="cannot read"):
        Vocabulary.from_json(tmp_path / "missing.json")


def token_frame() -> pl.DataFrame:
    """Two symbols, rows out of time order: X has a, b, c (by ts), Y has b."""
    return pl.DataFrame({"symbol": ["X", "Y", "X", "X"], "ts": [3, 1, 1, 2], "token": ["c", "b", "a", "b"]})


def test_export_sequences_per_symbol_in_time_order() -> None:
    vocabulary = Vocabulary.build(STREAM, min_freq=3)
    sequences = vocabulary.export_sequences(token_frame())
    assert list(sequences) == ["X", "Y"]
    assert sequences["X"].tolist() == [4, 5, vocabulary.unk_id]
    assert sequences["Y"].tolist() == [5]


def test_export_padded_with_mask() -> None:
    vocabulary = Vocabulary.build(STREAM, min_freq=1)
    padded = vocabulary.export_padded(token_frame())
    assert padded.symbols == ["X", "Y"]
    assert padded.ids.shape == (2, 3) and padded.mask.shape == (2, 3)
    assert padded.ids.tolist() == [[4, 5, 6], [5, vocabulary.pad_id, vocabulary.pad_id]]
    assert padded.mask.tolist() == [[True, True, True], [True, False, False]]
    last_two = vocabulary.export_padded(token_frame(), max_len=2)
    assert last_two.ids.tolist() == [[5, 6], [5, vocabulary.pad_id]]


def test_export_needs_a_symbol_column() -> None:
    with pytest.raises(FinfusionError, match="symbol"):
        Vocabulary.build(STREAM).export_sequences(pl.DataFrame({"token": ["a"]}))
