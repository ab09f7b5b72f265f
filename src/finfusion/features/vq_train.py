"""Training, inference and storage of the learned candle tokenizer (a `VQVAE` over `candle_patches`).

`fit_vq_tokenizer` is a short, seeded AdamW loop on the CPU; `VQTokenizer.encode` turns bars into TOKENS rows
(`token` = "vq=<code>"), one per bar that has a full trailing patch; bars with fewer than `patch_len - 1` earlier bars
of their symbol, or a missing value in their patch, get no row. A tokenizer is saved as a folder with `config.json`
(the `VQConfig`, training losses and free-form info) and `model.pt` (the state dict, loaded with weights_only=True).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
from torch import Tensor
from torch.nn import functional as F

from finfusion.data.atomic import write_json_atomic
from finfusion.data.schema import TOKENS
from finfusion.errors import FinfusionError
from finfusion.features.vq import VQVAE, candle_patches
from finfusion.features.vq_config import VQConfig

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.pt"
FORMAT = "finfusion-vq/1"
TOKEN_PREFIX = "vq="
#: Patches per inference batch.
ENCODE_BATCH = 65_536


@dataclass(frozen=True)
class VQStats:
    """How well a tokenizer fits some bars: patches seen, mean squared reconstruction error, codebook use."""

    n_patches: int
    recon_mse: float
    used: int
    usage: float
    perplexity: float


def codebook_usage(codes: Tensor | np.ndarray | Sequence[int], codebook_size: int) -> dict[str, int | float]:
    """Codebook use of `codes` [N] (ints in [0, codebook_size)).

    Returns `used` (distinct codes), `usage` (used / codebook_size) and `perplexity` = exp(entropy of the empirical
    code distribution, natural log): k for a uniform spread over k codes, 1 when one code takes everything, 0 for no
    codes at all.
    """
    values = np.asarray(codes.cpu() if isinstance(codes, Tensor) else codes, dtype=np.int64).ravel()
    if values.size and (values.min() < 0 or values.max() >= codebook_size):
        raise ValueError(f"codes must lie in [0, {codebook_size})")
    counts = np.bincount(values, minlength=codebook_size)
    used = int((counts > 0).sum())
    if values.size == 0:
        return {"used": 0, "usage": 0.0, "perplexity": 0.0}
    p = counts[counts > 0] / values.size
    return {"used": used, "usage": used / codebook_size, "perplexity": float(np.exp(-(p * np.log(p)).sum()))}


@dataclass
class VQTokenizer:
    """A trained `VQVAE` with its `VQConfig`; always in eval mode (encoding never moves the codebook)."""

    model: VQVAE
    config: VQConfig
    train_losses: list[float] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.model.eval()

    def codes(self, bars: pl.DataFrame) -> tuple[Tensor, pl.DataFrame]:
        """Codes [N] int64 of every full trailing patch of `bars`, and their index [N] (symbol, ts)."""
        patches, index = candle_patches(bars, self.config.patch_len, volume=self.config.volume)
        return self._encode(patches), index

    def _encode(self, patches: Tensor) -> Tensor:
        """Patches [N, L, C] -> codes [N] int64, in chunks of ENCODE_BATCH."""
        return torch.cat(
            [self.model.encode(c) for c in patches.split(ENCODE_BATCH)] or [torch.zeros(0, dtype=torch.int64)]
        )

    def encode(self, bars: pl.DataFrame) -> pl.DataFrame:
        """TOKENS rows (symbol, ts, token "vq=<code>") for every bar with a full trailing patch, by (symbol, ts)."""
        codes, index = self.codes(bars)
        token = pl.Series("token", codes.numpy()).cast(pl.String)
        return TOKENS.conform(index.with_columns((TOKEN_PREFIX + token).alias("token")))

    def evaluate(self, bars: pl.DataFrame) -> VQStats:
        """Reconstruction error and codebook use of the tokenizer on the patches of `bars`."""
        patches, _ = candle_patches(bars, self.config.patch_len, volume=self.config.volume)
        if len(patches) == 0:
            raise FinfusionError(f"no bars with {self.config.patch_len} bars of history to evaluate on")
        codes = self._encode(patches)
        recon = torch.cat([self.model.decode(c) for c in codes.split(ENCODE_BATCH)])
        usage = codebook_usage(codes, self.config.codebook_size)
        return VQStats(
            n_patches=len(patches),
            recon_mse=float(F.mse_loss(recon, patches)),
            used=int(usage["used"]),
            usage=float(usage["usage"]),
            perplexity=float(usage["perplexity"]),
        )

    def save(self, path: str | Path) -> Path:
        """Write `config.json` and `model.pt` (state dict only) into the folder `path`; returns the folder."""
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        torch.save(self.model.state_dict(), folder / WEIGHTS_FILE)
        payload = {
            "format": FORMAT,
            "config": asdict(self.config),
            "train_losses": self.train_losses,
            "info": self.info,
        }
        write_json_atomic(folder / CONFIG_FILE, payload)
        return folder

    @classmethod
    def load(cls, path: str | Path) -> VQTokenizer:
        """Read a folder written by `save`; tensors only (torch.load with weights_only=True)."""
        folder = Path(path)
        if not (folder / CONFIG_FILE).is_file() or not (folder / WEIGHTS_FILE).is_file():
            raise FinfusionError(f"no VQ tokenizer in {folder} (expected {CONFIG_FILE} and {WEIGHTS_FILE})")
        payload = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
        if payload.get("format") != FORMAT:
            raise FinfusionError(f"{folder / CONFIG_FILE}: not a {FORMAT} tokenizer")
        known = {f.name for f in fields(VQConfig)}
        unknown = sorted(set(payload["config"]) - known)
        if unknown:
            raise FinfusionError(f"{folder / CONFIG_FILE}: unknown settings {', '.join(unknown)}")
        config = VQConfig(**payload["config"])
        model = config.build()
        model.load_state_dict(torch.load(folder / WEIGHTS_FILE, map_location="cpu", weights_only=True))
        return cls(model, config, list(payload.get("train_losses", [])), dict(payload.get("info", {})))


def fit_vq_tokenizer(bars: pl.DataFrame, config: VQConfig = VQConfig()) -> VQTokenizer:
    """Train a VQ-VAE on the candle patches of `bars`: AdamW on MSE reconstruction + commitment loss.

    Deterministic in `config.seed` (initial weights, k-means start, dead-code re-seeding and batch order); the global
    torch random state is left as it was. `train_losses` holds the mean reconstruction MSE of each epoch.
    """
    patches, _ = candle_patches(bars, config.patch_len, volume=config.volume)
    if len(patches) == 0:
        raise FinfusionError(f"no bars with {config.patch_len} bars of history to train the VQ tokenizer on")
    losses: list[float] = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = config.build()
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        order_rng = torch.Generator().manual_seed(config.seed)
        for _ in range(config.epochs):
            total = 0.0
            for batch_idx in torch.randperm(len(patches), generator=order_rng).split(config.batch_size):
                batch = patches[batch_idx]
                out = model(batch)
                recon = F.mse_loss(out.recon, batch)
                optimizer.zero_grad()
                (recon + out.commit_loss).backward()
                optimizer.step()
                total += float(recon.detach()) * len(batch_idx)
            losses.append(total / len(patches))
    return VQTokenizer(model, config, losses)
