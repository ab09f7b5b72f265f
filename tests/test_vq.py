"""The learned candle tokenizer: patches, the VQ-VAE, training, codebook statistics, storage, point-in-time, CLI."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from polars.testing import assert_frame_equal
from typer.testing import CliRunner

from finfusion.commands.vq import app
from finfusion.data.lake import Lake
from finfusion.data.schema import TOKENS
from finfusion.data.sources.synthetic import SyntheticConfig, generate_market
from finfusion.data.sources.synthetic_ingest import make_and_ingest
from finfusion.errors import FinfusionError
from finfusion.features.vq import VQVAE, candle_patches
from finfusion.features.vq_train import VQConfig, VQTokenizer, codebook_usage, fit_vq_tokenizer

SMALL = VQConfig(codebook_size=16, dim=8, hidden=32, epochs=3, batch_size=64, seed=3)
MARKET = SyntheticConfig(n_symbols=3, start="2018-01-01", end="2019-12-31", seed=5)


@pytest.fixture(scope="module")
def bars() -> pl.DataFrame:
    return generate_market(MARKET).bars


@pytest.fixture(scope="module")
def tokenizer(bars: pl.DataFrame) -> VQTokenizer:
    return fit_vq_tokenizer(bars, SMALL)


def test_patches_are_trailing_windows_normalised_within_the_patch(bars: pl.DataFrame) -> None:
    patches, index = candle_patches(bars, 8)
    per_symbol = bars.group_by("symbol").len()["len"]
    assert patches.shape == (int((per_symbol - 7).sum()), 8, 5)
    assert index.columns == ["symbol", "ts"]
    first = bars.filter(pl.col("symbol") == bars["symbol"].min()).sort("ts")
    assert index["ts"][0] == first["ts"][7]  # the first patch ends at the 8th bar
    assert torch.all(patches[:, -1, 3] == 0)  # relative to the patch's last close
    assert torch.allclose((patches[:, :, 1] - patches[:, :, 2]).mean(dim=1), torch.ones(len(patches)), atol=1e-4)
    assert torch.allclose(patches[:, :, 4].mean(dim=1), torch.zeros(len(patches)), atol=1e-4)
    without_volume, _ = candle_patches(bars, 8, volume=False)
    assert torch.equal(without_volume, patches[..., :4])


def test_patches_skip_windows_with_a_missing_value(bars: pl.DataFrame) -> None:
    full, index = candle_patches(bars, 4)
    holed = bars.with_columns(
        pl.when(pl.int_range(pl.len()) == 100).then(None).otherwise(pl.col("close")).alias("close")
    )
    patches, holed_index = candle_patches(holed, 4)
    assert len(patches) == len(full) - 4
    assert holed_index.height == index.height - 4
    with pytest.raises(FinfusionError, match="volume"):
        candle_patches(bars.drop("volume"), 4)
    with pytest.raises(FinfusionError, match="patch_len"):
        candle_patches(bars, 1)


def test_vqvae_shapes_and_eval_encode_matches_forward() -> None:
    torch.manual_seed(0)
    model = VQVAE(8, 5, codebook_size=16, dim=8, hidden=32)
    x = torch.randn(32, 8, 5)
    out = model(x)  # training mode: k-means initialises the codebook
    assert out.recon.shape == (32, 8, 5)
    assert out.codes.shape == (32,)
    assert out.codes.dtype == torch.int64
    assert int(out.codes.min()) >= 0
    assert int(out.codes.max()) < 16
    assert out.commit_loss.ndim == 0
    assert float(out.commit_loss.detach()) > 0
    model.eval()
    assert torch.equal(model.encode(x), model(x).codes)
    assert model.decode(model.encode(x)).shape == (32, 8, 5)


def test_training_lowers_the_reconstruction_error(bars: pl.DataFrame, tokenizer: VQTokenizer) -> None:
    untrained = fit_vq_tokenizer(bars, replace(SMALL, epochs=0))
    assert tokenizer.train_losses[-1] < tokenizer.train_losses[0]
    assert tokenizer.evaluate(bars).recon_mse < 0.5 * untrained.evaluate(bars).recon_mse


@pytest.mark.parametrize(
    ("codes", "used", "perplexity"),
    [
        ([0, 1, 2, 3] * 5, 4, 4.0),
        ([7] * 9, 1, 1.0),
        ([0, 0, 0, 1], 2, math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))),
        (torch.tensor([5, 9, 5, 9, 1, 1]), 3, 3.0),
    ],
)
def test_codebook_usage_and_perplexity(codes: list[int] | torch.Tensor, used: int, perplexity: float) -> None:
    stats = codebook_usage(codes, 16)
    assert stats["used"] == used
    assert stats["usage"] == pytest.approx(used / 16)
    assert stats["perplexity"] == pytest.approx(perplexity)


def test_codebook_usage_edge_cases() -> None:
    assert codebook_usage([], 8) == {"used": 0, "usage": 0.0, "perplexity": 0.0}
    with pytest.raises(ValueError, match="codes"):
        codebook_usage([0, 8], 8)


def test_encode_emits_one_token_per_bar_with_full_history(bars: pl.DataFrame, tokenizer: VQTokenizer) -> None:
    tokens = tokenizer.encode(bars)
    assert tokens.columns == TOKENS.names
    assert tokens["token"].str.contains(r"^vq=\d+$").all()
    counts = tokens.group_by("symbol").len().sort("symbol")
    expected = bars.group_by("symbol").len().sort("symbol").with_columns(pl.col("len") - (SMALL.patch_len - 1))
    assert_frame_equal(counts, expected, check_dtypes=False)
    stats = tokenizer.evaluate(bars)
    assert stats.used > 1
    assert 1.0 < stats.perplexity <= stats.used


def test_save_then_load_gives_identical_tokens(tmp_path: Path, bars: pl.DataFrame, tokenizer: VQTokenizer) -> None:
    folder = tokenizer.save(tmp_path / "vq")
    loaded = VQTokenizer.load(folder)
    assert loaded.config == tokenizer.config
    assert loaded.train_losses == tokenizer.train_losses
    assert_frame_equal(loaded.encode(bars), tokenizer.encode(bars))
    with pytest.raises(FinfusionError, match="no VQ tokenizer"):
        VQTokenizer.load(tmp_path / "missing")


def test_training_is_deterministic_in_the_seed(bars: pl.DataFrame, tokenizer: VQTokenizer) -> None:
    again = fit_vq_tokenizer(bars, SMALL)
    assert again.train_losses == tokenizer.train_losses
    assert_frame_equal(again.encode(bars), tokenizer.encode(bars))
    other = fit_vq_tokenizer(bars, replace(SMALL, seed=SMALL.seed + 1))
    assert not other.encode(bars)["token"].equals(tokenizer.encode(bars)["token"])


def test_tokens_at_or_before_t_ignore_bars_after_t(bars: pl.DataFrame, tokenizer: VQTokenizer) -> None:
    cut = bars["ts"].sort()[bars.height // 2]
    rng = np.random.default_rng(0)
    after = pl.col("ts") > cut
    shock = pl.Series(rng.uniform(0.5, 1.5, bars.height))
    perturbed = bars.with_columns(
        [pl.when(after).then(pl.col(c) * shock).otherwise(pl.col(c)).alias(c) for c in ("open", "close", "volume")]
    ).with_columns(
        pl.max_horizontal("open", "high", "close").alias("high"),
        pl.min_horizontal("open", "low", "close").alias("low"),
        # a later split rescales the backward adjustment of every earlier bar by one factor
        pl.when(after).then(pl.col("adj_factor")).otherwise(pl.col("adj_factor") * 0.5).alias("adj_factor"),
    )
    base, moved = tokenizer.encode(bars), tokenizer.encode(perturbed)
    assert_frame_equal(base.filter(pl.col("ts") <= cut), moved.filter(pl.col("ts") <= cut))
    assert not base.filter(pl.col("ts") > cut)["token"].equals(moved.filter(pl.col("ts") > cut)["token"])
    truncated = tokenizer.encode(bars.filter(pl.col("ts") <= cut))
    assert_frame_equal(truncated, base.filter(pl.col("ts") <= cut))


def test_cli_fit_then_encode_round_trip(tmp_path: Path) -> None:
    root, model_dir = tmp_path / "lake", tmp_path / "model"
    make_and_ingest(Lake(root), SyntheticConfig(n_symbols=2, start="2019-01-01", end="2019-12-31", seed=1), "synth")
    runner = CliRunner()
    fit = runner.invoke(
        app,
        ["fit", "synth", "--out", str(model_dir), "--epochs", "2", "--codebook-size", "16", "--lake", str(root)],
        catch_exceptions=False,
    )
    assert fit.exit_code == 0, fit.output
    assert "reconstruction MSE" in fit.output
    assert "codebook usage" in fit.output
    assert "perplexity" in fit.output
    encode = runner.invoke(
        app,
        ["encode", "synth", "--model", str(model_dir), "--out", "synth-vq", "--lake", str(root)],
        catch_exceptions=False,
    )
    assert encode.exit_code == 0, encode.output
    stored = Lake(root).read("tokens", "synth-vq", freq="1d")
    expected = VQTokenizer.load(model_dir).encode(Lake(root).read("bars", "synth", freq="1d"))
    assert_frame_equal(stored.select(TOKENS.names), expected)
    assert Lake(root).metadata("tokens", "synth-vq")["bars"] == "synth"


def test_cli_reports_bad_input_as_one_error_line(tmp_path: Path) -> None:
    root = tmp_path / "lake"
    make_and_ingest(Lake(root), SyntheticConfig(n_symbols=1, start="2019-01-01", end="2019-03-31", seed=1), "synth")
    runner = CliRunner()
    missing = runner.invoke(
        app, ["encode", "synth", "--model", str(tmp_path / "nope"), "--out", "x", "--lake", str(root)]
    )
    assert missing.exit_code == 2
    assert "no VQ tokenizer" in missing.output
    bad_end = runner.invoke(app, ["fit", "synth", "--out", str(tmp_path / "m"), "--end", "soon", "--lake", str(root)])
    assert bad_end.exit_code == 2
    assert "not a date" in bad_end.output
