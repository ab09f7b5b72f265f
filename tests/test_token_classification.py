"""Fine-tuning token models (issue 19, part 2): the three label sets by hand, windows and labels that never see
the future, and the encoder started from a masked-LM run."""

from __future__ import annotations

from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from finfusion.data.calendar import to_us
from finfusion.data.sources.synthetic import SyntheticConfig, generate_market
from finfusion.errors import FinfusionError
from finfusion.features.brooks import tokenize_bars
from finfusion.features.vocabulary import Vocabulary
from finfusion.models.build import save_model_state
from finfusion.models.token_bert import TokenBert
from finfusion.models.token_bert_classifier import TokenBertClassifier
from finfusion.samples.token_labels import RawWindows, fit_thresholds, labels, raw_windows, split_masks

OPTIONS = {"dead_band": 0.01, "trend_threshold": 1.0, "horizon": 4}


def test_the_three_label_sets_by_hand() -> None:
    raw = RawWindows(
        ids=np.zeros((5, 2), dtype=np.int64), symbol_index=np.zeros(5, dtype=np.int64),
        origin_us=np.arange(5), label_end_us=np.array([4, 5, 6, 7, -1]),
        forward=np.array([0.05, -0.002, -0.03, 0.009, np.nan]), volatility=np.array([0.01, 0.02, 0.03, 0.04, np.nan]),
        tags=np.zeros((5, 2), dtype=np.int64),
    )  # fmt: skip
    thresholds = fit_thresholds(raw, np.array([0.01, -0.01, 0.01, -0.01]), np.array([True, True, True, True, False]))
    assert thresholds["volatility_median"] == pytest.approx(0.025) and thresholds["return_std"] == pytest.approx(0.01)
    assert labels(raw, "direction", OPTIONS, thresholds).tolist() == [1, -1, 0, -1, -1]  # dead band, unknown
    assert labels(raw, "volatility", OPTIONS, thresholds).tolist() == [0, 0, 1, 1, -1]
    # trend: |R| > 1.0 x 0.01 x sqrt(4) = 0.02
    assert labels(raw, "trend", OPTIONS, thresholds).tolist() == [1, 0, 1, 0, -1]
    with pytest.raises(FinfusionError, match="unknown label set 'regime'"):
        labels(raw, "regime", OPTIONS, thresholds)


def test_windows_and_labels_never_see_bars_after_their_own(tmp_path: Path) -> None:
    bars = generate_market(SyntheticConfig(n_symbols=3, start="2019-01-01", end="2020-06-30", seed=2)).bars
    cut = datetime(2020, 1, 15, 21, tzinfo=UTC)
    rng = np.random.default_rng(0)
    late = pl.col("ts") > cut
    changed = bars.with_columns(
        [pl.when(late).then(pl.col(c) * pl.Series(rng.uniform(0.7, 1.3, bars.height))).otherwise(pl.col(c)).alias(c)
         for c in ("open", "high", "low", "close")]
    ).with_columns(pl.max_horizontal("open", "close", "high").alias("high"),
                   pl.min_horizontal("open", "close", "low").alias("low"))  # fmt: skip
    runs = []
    for version in (bars, changed):
        tokens = tokenize_bars(version)
        vocabulary = Vocabulary.build(tokens.filter(pl.col("ts") <= cut)["token"], min_freq=1)
        symbols = sorted(set(tokens["symbol"]))
        runs.append((raw_windows(tokens, version, vocabulary, symbols, 16, 5), vocabulary))
    (a, vocab_a), (b, vocab_b) = runs
    assert vocab_a.tokens == vocab_b.tokens
    cut_us = int(to_us(pl.Series([cut]))[0])
    seen = a.origin_us <= cut_us
    np.testing.assert_array_equal(a.ids[seen], b.ids[seen])
    labelled = (a.label_end_us >= 0) & (a.label_end_us <= cut_us)
    np.testing.assert_array_equal(a.forward[labelled], b.forward[labelled])
    np.testing.assert_array_equal(a.volatility[labelled], b.volatility[labelled])
    assert not np.array_equal(np.nan_to_num(a.forward[~labelled]), np.nan_to_num(b.forward[~labelled]))
    masks = split_masks(a, cut_us, cut_us + 1)
    assert (a.label_end_us[masks["train"]] < cut_us).all() and (a.origin_us[masks["test"]] >= cut_us + 1).all()


def test_the_encoder_starts_from_a_masked_lm_run_and_a_size_mismatch_is_named(tmp_path: Path) -> None:
    torch.manual_seed(0)
    sizes = {"hidden_size": 16, "num_layers": 1, "num_heads": 2, "intermediate_size": 32}
    pretrained = TokenBert(30, max_len=24, **sizes)
    save_model_state(pretrained, tmp_path)
    classifier = TokenBertClassifier(30, max_len=16, max_positions=24, pretrained=str(tmp_path), **sizes)
    source = pretrained.bert.bert.embeddings.word_embeddings.weight
    torch.testing.assert_close(classifier.bert.bert.embeddings.word_embeddings.weight, source)
    layer = "encoder.layer.0.attention.self.query.weight"
    torch.testing.assert_close(classifier.bert.bert.state_dict()[layer], pretrained.bert.bert.state_dict()[layer])
    with pytest.raises(FinfusionError, match="position_embeddings"):
        TokenBertClassifier(30, max_len=16, pretrained=str(tmp_path), **sizes)  # 16 positions, the run has 24
    with pytest.raises(FinfusionError, match=r"has no model\.safetensors"):
        TokenBertClassifier(30, max_len=16, pretrained=str(tmp_path / "nothing"), **sizes)


def test_transition_statistics_measure_the_grammars_memory() -> None:
    from finfusion.features.transitions import transition_stats

    cycle = [f"t{i % 4}" for i in range(400)]  # t0 t1 t2 t3 t0 ...: the next token is certain
    vocabulary = Vocabulary.build(cycle, min_freq=1)
    ordered = transition_stats({"A": vocabulary.encode(cycle)}, vocabulary)
    assert ordered.conditional_entropy_bits == pytest.approx(0.0)
    assert ordered.mutual_information_bits == pytest.approx(2.0, abs=1e-3)  # log2(4): all of H(next)
    assert ordered.top[0][3] == pytest.approx(1.0) and ordered.n_transitions == 399
    shuffled = list(np.random.default_rng(0).permutation(cycle))
    loose = transition_stats({"A": vocabulary.encode(shuffled)}, vocabulary)
    assert loose.mutual_information_bits < 0.05  # no memory left: the sequence is a random order
    split = transition_stats({"A": vocabulary.encode(cycle[:2]), "B": vocabulary.encode(cycle[2:4])}, vocabulary)
    assert split.n_transitions == 2  # no transition across symbols


def test_pivot_tags_by_hand() -> None:
    from finfusion.samples.token_labels import pivot_tags

    high = np.array([1.0, 2.0, 5.0, 2.0, 1.0, 1.5, 1.0, 3.0])
    low = np.array([0.5, 1.0, 4.0, 1.0, 0.2, 1.0, 0.8, 2.0])
    # span 1: bar 2 is the highest of bars 1-3, bar 4 the lowest of 3-5, bar 6 the lowest of 5-7; the last bar waits
    assert pivot_tags(high, low, 1).tolist() == [0, 0, 1, 0, 2, 1, 2, -1]


def test_crf_decoding_returns_valid_paths_of_the_window_length() -> None:
    from finfusion.models.token_bert_tagger import TokenBertTagger

    torch.manual_seed(0)
    tagger = TokenBertTagger(30, max_len=8, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32).eval()
    with torch.no_grad():
        tagger.emissions.weight.zero_()
        tagger.emissions.bias.copy_(torch.tensor([0.0, 5.0, 0.0]))  # every bar would rather be a swing high
    mask = torch.ones(2, 8, dtype=torch.bool)
    mask[1, 5:] = False
    batch = {"tokens": torch.randint(4, 30, (2, 8)), "tokens_mask": mask}
    paths = tagger.decode(batch)
    assert [len(path) for path in paths] == [8, 5]
    for path in paths:
        assert all(tag in (0, 1, 2) for tag in path)
        assert not any(a == b and a in (1, 2) for a, b in pairwise(path))  # no forbidden pair
        assert path.count(1) >= len(path) // 2  # still as many swing highs as the constraint allows
    tags = torch.tensor([[1, 0, 1, 0, 2, 0, 1, 0], [0, 1, 0, -1, -1, -1, -1, -1]])
    loss = tagger({**batch, "tokens_mask": torch.ones(2, 8, dtype=torch.bool), "tags": tags})["crf_loss"]
    assert torch.isfinite(loss) and loss > 0
