"""Fusion of tokens, prices and news (issue 19, part 3): the gated adapter starts near closed, shapes, a news variant
refused without texts, the new sample fields never see the future, walk-forward folds and the ablation through the
command line."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from typer.testing import CliRunner

from finfusion.cli import app
from finfusion.data.calendar import to_us
from finfusion.data.lake import Lake
from finfusion.data.sources.synthetic import SyntheticConfig, generate_market
from finfusion.data.sources.synthetic_ingest import ingest_market
from finfusion.errors import FinfusionError
from finfusion.evaluation.classification import direction_error_test
from finfusion.families.token_walk_forward import Fold, folds_of
from finfusion.models.build import build_model
from finfusion.models.gated_cross_attention import GatedCrossAttention
from finfusion.models.patchtst import PatchTSTTower
from finfusion.models.token_bert_classifier import TokenBertClassifier
from finfusion.models.token_fusion import TokenFusion
from finfusion.samples.token_fusion import price_windows, window_texts
from finfusion.samples.token_labels import PRICE_DEFAULTS, TEXT_DEFAULTS

SIZES = {"hidden_size": 16, "num_layers": 1, "num_heads": 2, "intermediate_size": 32}


def batch(size: int = 3, window: int = 8, lookback: int = 16, channels: int = 3, texts: int = 4) -> dict:
    generator = torch.Generator().manual_seed(0)
    return {
        "tokens": torch.randint(4, 30, (size, window), generator=generator),
        "tokens_mask": torch.ones(size, window, dtype=torch.bool),
        "past": torch.randn(size, lookback, channels, generator=generator),
        "past_mask": torch.ones(size, lookback, dtype=torch.bool),
        "text_emb": torch.randn(size, texts, 12, generator=generator),
        "text_mask": torch.ones(size, texts, dtype=torch.bool),
    }


def test_the_adapter_starts_near_closed_and_a_row_with_nothing_to_read_is_left_alone() -> None:
    torch.manual_seed(0)
    states, context = torch.randn(2, 5, 16), torch.randn(2, 7, 16)
    mask = torch.ones(2, 7, dtype=torch.bool)
    mask[1] = False  # the second row has no context
    adapter = GatedCrossAttention(16, heads=2).eval()
    out = adapter(states, context, mask)
    assert out.shape == (2, 5, 16)
    assert 0 < (out[0] - states[0]).abs().max() < 0.05  # tanh(0.01) x the attended result
    torch.testing.assert_close(out[1], states[1])
    closed = GatedCrossAttention(16, heads=2, gate_init=0.0).eval()
    torch.testing.assert_close(closed(states, context), states)
    with torch.no_grad():
        adapter.gate.fill_(3.0)  # opened: what it reads now moves the states
    assert (adapter(states, context, mask)[0] - states[0]).abs().max() > 0.1


def test_fusion_at_initialisation_is_the_token_classifier_with_the_same_weights() -> None:
    torch.manual_seed(0)
    fusion = TokenFusion(30, max_len=8, n_channels=3, context_length=16, **SIZES).eval()
    classifier = TokenBertClassifier(30, max_len=8, **SIZES).eval()
    fusion.bert.load_state_dict(classifier.bert.bert.state_dict())
    fusion.classifier.load_state_dict(classifier.bert.classifier.state_dict())
    sample = batch()
    with torch.no_grad():
        token_path = classifier(sample)["logits"]
        fused = fusion(sample)["logits"]
        moved = fusion({**sample, "past": sample["past"] * 3 + 1})["logits"]
    assert fused.shape == (3, 2)
    torch.testing.assert_close(fused, token_path, atol=0.02, rtol=0.0)
    assert not torch.equal(fused, token_path) and not torch.equal(fused, moved)  # the prices do reach it


def test_shapes_of_the_towers_and_the_news_branch() -> None:
    torch.manual_seed(0)
    tower = PatchTSTTower(n_channels=3, context_length=16, patch_len=4, stride=4, d_model=8)
    mask = torch.ones(2, 16, dtype=torch.bool)
    mask[1, :6] = False  # left padding: the first patch of row 1 holds no bar
    patches, patch_mask = tower(torch.randn(2, 16, 3), mask)
    assert patches.shape == (2, 3, 4, 8) and patch_mask.tolist() == [[True] * 4, [False, True, True, True]]
    fusion = TokenFusion(30, max_len=8, n_channels=3, context_length=16, news=True, text_dim=12, **SIZES).eval()
    sample = batch()
    sample["text_mask"][0] = False  # a window without texts
    with torch.no_grad():
        assert fusion(sample)["logits"].shape == (3, 2)
    assert {"text_emb", "text_mask"} <= fusion.required_inputs()
    classifier = build_model({"name": "patchtst_classifier"}, {"n_channels": 3, "context_length": 16})
    assert classifier(sample)["logits"].shape == (3, 2)  # type: ignore[operator]


def test_a_news_variant_is_refused_when_the_samples_carry_no_texts() -> None:
    arguments = {"vocab_size": 30, "max_len": 8, "n_channels": 3, "context_length": 16}
    keys = frozenset({"tokens", "tokens_mask", "past", "past_mask", "label"})
    part = {"name": "token_fusion", **SIZES}
    assert "text_emb" not in build_model(part, arguments, keys).required_inputs()
    with pytest.raises(FinfusionError, match="reads 'text_emb'"):
        build_model({**part, "news": True}, arguments, keys)  # the data gives no text_dim
    with pytest.raises(FinfusionError, match="reads 'text_emb', which this experiment's samples do not carry"):
        build_model({**part, "news": True}, {**arguments, "text_dim": 12}, keys)


def test_the_price_window_and_the_texts_of_a_window_never_see_bars_or_texts_after_it(tmp_path: Path) -> None:
    market = generate_market(SyntheticConfig(n_symbols=2, start="2019-06-01", end="2020-03-31", seed=2))
    cut = datetime(2020, 1, 15, 21, tzinfo=UTC)
    rng = np.random.default_rng(0)
    late = pl.col("ts") > cut
    bars = market.bars.with_columns(
        [pl.when(late).then(pl.col(c) * pl.Series(rng.uniform(0.7, 1.3, market.bars.height))).otherwise(pl.col(c))
         for c in ("open", "high", "low", "close", "volume")]
    ).with_columns(pl.max_horizontal("open", "close", "high").alias("high"),
                   pl.min_horizontal("open", "close", "low").alias("low"))  # fmt: skip
    news = market.texts.filter(pl.col("published_at") > cut).with_columns(pl.col("title") + " (revised)")
    texts = pl.concat([market.texts.filter(pl.col("published_at") <= cut), news])
    windows = []
    for name, version in (("a", market), ("b", dataclasses.replace(market, bars=bars, texts=texts))):
        lake = Lake(tmp_path / name)
        ingest_market(lake, version, "synthetic")
        stored = lake.read("bars", "synthetic", freq="1d")
        symbols = sorted(set(stored["symbol"]))
        index = np.array([symbols.index(s) for s in stored["symbol"]])
        origins = to_us(stored["ts"])
        prices = price_windows(stored, symbols, index, origins, {**PRICE_DEFAULTS, "lookback": 16})
        aligned = window_texts(lake, TEXT_DEFAULTS, "synthetic", symbols, index, origins)
        windows.append((prices, aligned, origins))
    (prices_a, texts_a, origins), (prices_b, texts_b, _) = windows
    seen = origins <= int(to_us(pl.Series([cut]))[0])
    rows = np.flatnonzero(seen)
    for key in ("past", "past_mask"):
        np.testing.assert_array_equal(prices_a[key].numpy()[seen], prices_b[key].numpy()[seen])
    assert texts_a.ids["ids"].gather(rows).to_list() == texts_b.ids["ids"].gather(rows).to_list()
    np.testing.assert_array_equal(texts_a.mask[rows], texts_b.mask[rows])
    # the same texts: equal embeddings up to the encoder's batch-dependent rounding (a revised text would be far off)
    np.testing.assert_allclose(texts_a.padded(rows), texts_b.padded(rows), rtol=0, atol=1e-5)
    assert texts_a.mask[rows].any()  # some windows before the cut do see texts
    later = np.flatnonzero(~seen)
    assert not np.array_equal(prices_a["past"].numpy()[later], prices_b["past"].numpy()[later])
    assert not np.array_equal(texts_a.padded(later), texts_b.padded(later))


def test_walk_forward_folds_by_hand() -> None:
    instants = np.arange(100, dtype=np.int64) * 86_400_000_000  # 100 days from 1970-01-01
    folds = folds_of(instants, {"first_test": "1970-02-20", "validate": 10, "test": 15, "folds": 5})  # day 50
    day = 86_400_000_000
    assert folds == [Fold(40 * day, 50 * day, 65 * day), Fold(55 * day, 65 * day, 80 * day),
                     Fold(70 * day, 80 * day, 95 * day), Fold(85 * day, 95 * day, None)]  # fmt: skip
    assert len(folds_of(instants, {"first_test": "1970-02-20", "validate": 10, "test": 15, "folds": 2})) == 2
    with pytest.raises(FinfusionError, match="leaves 0 periods to train on"):
        folds_of(instants, {"first_test": "1970-01-05", "validate": 10, "test": 15, "folds": 1})


def test_the_paired_direction_test_averages_per_instant() -> None:
    instants = np.repeat(np.arange(40), 5)
    rng = np.random.default_rng(0)
    reference = (rng.random(200) < 0.5).astype(float)
    better = np.where(rng.random(200) < 0.6, 0.0, reference)  # right more often than the reference
    result = direction_error_test(instants, better, reference, horizon=2)
    assert result["instants"] == 40 and result["accuracy_gain"] > 0 and result["p_value"] < 0.01
    same = direction_error_test(instants, reference, reference, horizon=2)
    assert np.isnan(same["p_value"]) and same["accuracy_gain"] == 0


TINY = [
    "data.bars=synthetic", "data.dataset=synthetic_brooks_tiny", "data.synthetic.n_symbols=3",
    "data.synthetic.start=2019-01-01", "data.synthetic.end=2020-12-31", "data.synthetic.seed=0",
    "data.synthetic.return_autocorrelation=0.0", "data.batch_size=16", "data.window=8", "data.prices.lookback=16",
    "data.texts.max_texts=2", "model.hidden_size=16", "model.num_heads=2", "model.num_layers=1",
    "model.intermediate_size=32", "model.price_d_model=8", "evaluation.walk_forward.first_test=2020-07-01",
    "evaluation.walk_forward.validate=60", "evaluation.walk_forward.test=60", "evaluation.walk_forward.folds=2",
    "trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
    "trainer.enable_progress_bar=false",
]  # fmt: skip


def test_the_ablation_trains_and_scores_every_variant_on_the_same_windows(tmp_path: Path) -> None:
    lake = ["--lake", str(tmp_path / "lake")]
    runner = CliRunner()
    refused = runner.invoke(app, ["train", "--config", "token_fusion_synthetic", *TINY, "data.texts.enabled=false",
                                  "model.news=true", "--run", str(tmp_path / "refused"), *lake])  # fmt: skip
    assert refused.exit_code != 0 and "reads 'text_emb'" in refused.output + refused.stderr
    page = tmp_path / "page.md"
    args = ["evaluate", "--config", "token_fusion_synthetic", *TINY, "--run", str(tmp_path / "eval"), *lake]
    result = runner.invoke(app, [*args, "--markdown", str(page)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    text = page.read_text()
    for variant in ("fusion", "fusion_news", "token_bert", "patchtst", "majority_class", "previous_sign"):
        assert f"| {variant} " in text or f"| **{variant}** " in text
    assert "| fusion_news | fusion |" in text and "| fusion | token_bert |" in text
    assert "| 2 | " in text  # the second fold
    for variant in ("fusion", "fusion_news", "token_bert", "patchtst"):
        assert (tmp_path / "eval" / variant / "fold2" / "model.safetensors").is_file()
