"""`finfusion vq ...`: train the learned candle tokenizer (VQ-VAE) and emit its tokens into the lake."""

from __future__ import annotations

from dataclasses import asdict
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from finfusion.commands.common import LakeOption, busy, out, reports_errors
from finfusion.errors import FinfusionError
from finfusion.features.vq_config import VQConfig

if TYPE_CHECKING:
    import polars as pl

    from finfusion.features.vq_train import VQStats

app = typer.Typer(help="Learned candle tokens: fit a VQ-VAE on candle patches, then encode bars.", no_args_is_help=True)

DEFAULT = VQConfig()


def _up_to(bars: pl.DataFrame, end: str | None) -> pl.DataFrame:
    """Bars whose UTC close date is on or before `end` (YYYY-MM-DD); all bars when `end` is None."""
    import polars as pl

    if end is None:
        return bars
    try:
        last = date.fromisoformat(end)
    except ValueError as exc:
        raise FinfusionError(f"--end '{end}' is not a date (YYYY-MM-DD)") from exc
    return bars.filter(pl.col("ts").dt.date() <= last)


def _print_stats(stats: VQStats, codebook_size: int) -> None:
    out.print(f"patches: {stats.n_patches:,}")
    out.print(f"reconstruction MSE: {stats.recon_mse:.4f}")
    out.print(f"codebook usage: {stats.used}/{codebook_size} codes ({stats.usage:.1%})")
    out.print(f"perplexity: {stats.perplexity:.1f}")


@app.command(
    epilog="Examples:\n\n"
    "  finfusion vq fit synthetic --out models/vq\n\n"
    "  finfusion vq fit stocknet --freq 1d --out models/vq-stocknet --codebook-size 128 --end 2015-06-30"
)
@reports_errors
def fit(
    dataset: Annotated[str, typer.Argument(help="Bars dataset to train on.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for the trained tokenizer (config.json, model.pt).")],
    freq: Annotated[str, typer.Option(help="Bar frequency.")] = "1d",
    end: Annotated[
        str | None, typer.Option(help="Train on bars up to this date only (the training span), YYYY-MM-DD.")
    ] = None,
    patch_len: Annotated[
        int, typer.Option(help="Bars per patch (the trailing window of a token).")
    ] = DEFAULT.patch_len,
    codebook_size: Annotated[int, typer.Option(help="Number of codes (vocabulary size).")] = DEFAULT.codebook_size,
    dim: Annotated[int, typer.Option(help="Latent and code dimension.")] = DEFAULT.dim,
    volume: Annotated[bool, typer.Option(help="Include volume as a patch channel.")] = DEFAULT.volume,
    epochs: Annotated[int, typer.Option(help="Passes over the patches.")] = DEFAULT.epochs,
    lr: Annotated[float, typer.Option(help="AdamW learning rate.")] = DEFAULT.lr,
    batch_size: Annotated[int, typer.Option(help="Patches per step.")] = DEFAULT.batch_size,
    seed: Annotated[int, typer.Option(help="Random seed (same seed and data, same tokenizer).")] = DEFAULT.seed,
    lake: LakeOption = None,
) -> None:
    """Train a VQ-VAE tokenizer on normalised candle patches; print reconstruction error and codebook use."""
    from finfusion.data.lake import Lake
    from finfusion.features.vq_train import fit_vq_tokenizer

    bars = _up_to(Lake(lake).read("bars", dataset, freq=freq), end)
    config = VQConfig(
        patch_len=patch_len, codebook_size=codebook_size, dim=dim, volume=volume, epochs=epochs, lr=lr,
        batch_size=batch_size, seed=seed,
    )  # fmt: skip
    with busy(f"training the VQ tokenizer on {dataset} ({freq})"):
        tokenizer = fit_vq_tokenizer(bars, config)
        stats = tokenizer.evaluate(bars)
    tokenizer.info = {"dataset": dataset, "freq": freq, "end": end, "train_stats": asdict(stats)}
    folder = tokenizer.save(out_dir)
    out.print(f"[bold]vq[/bold] {dataset} ({freq}): trained {epochs} epochs, saved to {folder}")
    out.print("epoch MSE: " + " ".join(f"{loss:.4f}" for loss in tokenizer.train_losses))
    _print_stats(stats, codebook_size)


@app.command(
    epilog="Examples:\n\n"
    "  finfusion vq encode synthetic --model models/vq --out synthetic-vq\n\n"
    "  finfusion vq encode stocknet --model models/vq-stocknet --out stocknet-vq --freq 1d"
)
@reports_errors
def encode(
    dataset: Annotated[str, typer.Argument(help="Bars dataset to encode.")],
    model: Annotated[Path, typer.Option(help="Folder written by 'finfusion vq fit'.")],
    name: Annotated[str, typer.Option("--out", help="Tokens dataset name in the lake.")],
    freq: Annotated[str | None, typer.Option(help="Bar frequency (default: the one the model was trained on).")] = None,
    lake: LakeOption = None,
) -> None:
    """Emit one token ("vq=<code>") per bar from its trailing patch into a TOKENS dataset.

    Bars with fewer than patch_len - 1 earlier bars of their symbol (or a missing value in their patch) get no token.
    """
    import polars as pl

    from finfusion.data.lake import Lake
    from finfusion.data.schema import TOKENS
    from finfusion.features.vq_train import TOKEN_PREFIX, VQTokenizer, codebook_usage

    store = Lake(lake)
    tokenizer = VQTokenizer.load(model)
    freq = freq or tokenizer.info.get("freq") or "1d"
    with busy(f"encoding {dataset} ({freq})"):
        tokens = tokenizer.encode(store.read("bars", dataset, freq=freq))
    if tokens.is_empty():
        raise FinfusionError(f"no bars of {dataset} have {tokenizer.config.patch_len} bars of history to encode")
    metadata = {
        "source": "vq",
        "bars": dataset,
        "model": str(model),
        "patch_len": tokenizer.config.patch_len,
        "codebook_size": tokenizer.config.codebook_size,
    }
    result = store.write(TOKENS, name, tokens, freq=freq, metadata=metadata)
    codes = tokens["token"].str.strip_prefix(TOKEN_PREFIX).cast(pl.Int64)
    usage = codebook_usage(codes.to_numpy(), tokenizer.config.codebook_size)
    out.print(
        f"[bold]tokens[/bold] {name} ({freq}): {tokens.height:,} tokens for {tokens['symbol'].n_unique()} symbols, "
        f"{result.new_rows:,} new, {result.updated_rows:,} updated, {result.files_written} files written"
    )
    out.print(
        f"codebook usage: {usage['used']}/{tokenizer.config.codebook_size} codes ({usage['usage']:.1%}), "
        f"perplexity {usage['perplexity']:.1f}"
    )
