"""The Moirai forecaster of the forecast family: forecast windows in, sampled paths out.

Shapes: B windows, L context (`context_length`), C input channels, T targets (`target_index`), H horizon, S samples.
The targets are forecast from their own history and the other channels' (past-only covariates) by the masked
encoder (module.py); training minimises the mixture's negative log-likelihood of `future` (trained by the
generative task: `training_losses`, `sample`), prediction draws `num_samples` paths [B, S, H, T] and their median.
Explanations attribute the mixture's mean instead (`mean_forecast`, `explained_output`): deterministic and
differentiable, where the draws are neither.

The weights come from a preset (`tiny`, `small`, `base`, `large`) or, with `pretrained`, from a local folder holding a
published checkpoint or a finfusion pre-training run's export (config.json + model.safetensors): zero-shot forecasts
with `epochs: 0`, fine-tuning otherwise. The token budget is checked when the model is built, before any weight is
allocated. With `pack_rows` > 0 training packs several windows per row of that many tokens (tokens.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from finfusion.errors import FinfusionError
from finfusion.models.base import Capabilities, target_positions
from finfusion.models.moirai.distribution import DEFAULT_COMPONENTS, FIXED_SCALE, packed_nll
from finfusion.models.moirai.module import MoiraiModule
from finfusion.models.moirai.presets import check_token_budget, patch_size_for, preset
from finfusion.models.moirai.tokens import Tokens, pack, window_tokens
from finfusion.samples.contract import FUTURE, FUTURE_MASK, PAST, PAST_MASK

Batch = Mapping[str, Tensor]
#: MoiraiModule arguments that fix the weights' shapes and meaning (stored with a run).
ARCHITECTURE = ("d_model", "num_layers", "patch_sizes", "max_seq_len", "components", "fixed_scale", "scaling")


class Moirai(nn.Module, Capabilities):
    inputs: ClassVar[frozenset[str]] = frozenset({PAST, PAST_MASK})
    outputs: ClassVar[frozenset[str]] = frozenset({"samples", "point"})

    def __init__(
        self,
        n_channels: int,
        context_length: int,
        horizon: int,
        target_index: Sequence[int] | None = None,
        freq: str = "1d",
        preset: str = "tiny",
        architecture: Mapping[str, Any] | None = None,
        pretrained: str | None = None,
        patch_size: int | str = "auto",
        covariates: bool = True,
        num_samples: int = 100,
        pack_rows: int = 0,
        dropout: float = 0.0,
        attn_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.target_index = target_positions(target_index, n_channels)
        self.covariate_index = [c for c in range(n_channels) if c not in self.target_index] if covariates else []
        self.context_length = int(context_length)
        self.horizon = int(horizon)
        self.num_samples = int(num_samples)
        self.pack_rows = int(pack_rows)
        arguments = _module_arguments(preset, architecture, pretrained, dropout, attn_dropout)
        self.architecture = {key: arguments[key] for key in ARCHITECTURE}
        sizes = tuple(arguments["patch_sizes"])
        self.patch_size = patch_size_for(freq, sizes) if patch_size == "auto" else int(patch_size)
        if self.patch_size not in sizes:
            raise FinfusionError(f"patch_size {self.patch_size} is not one of the model's {sizes}")
        budget = int(arguments["max_seq_len"])
        self.tokens = check_token_budget(
            len(self.target_index),
            len(self.covariate_index),
            self.context_length,
            self.horizon,
            self.patch_size,
            budget,
        )
        if self.pack_rows and self.pack_rows < self.tokens:
            raise FinfusionError(f"pack_rows {self.pack_rows} is smaller than one window's {self.tokens} tokens")
        self.max_patch = max(sizes)
        self.module = MoiraiModule(**arguments)
        if pretrained is not None:
            from pathlib import Path

            from finfusion.models.moirai.published import load_weights

            load_weights(Path(pretrained), self.module)

    @property
    def n_horizon(self) -> int:
        return -(-self.horizon // self.patch_size)

    def _tokens(self, batch: Batch, with_future: bool) -> Tokens:
        past, past_mask = batch[PAST], batch[PAST_MASK]
        channels = self.target_index + self.covariate_index
        return window_tokens(
            past[..., channels],
            past_mask,
            list(range(len(self.target_index))),
            self.horizon,
            self.patch_size,
            self.max_patch,
            batch[FUTURE] if with_future else None,
            batch.get(FUTURE_MASK) if with_future else None,
        )

    def training_losses(self, batch: Batch, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """{"loss": the mixture NLL of the observed future values, per (window, target) series}."""
        tokens = self._tokens(batch, with_future=True)
        if self.pack_rows:
            tokens = pack(tokens, self.pack_rows)
        keep, width = tokens.prediction_mask, self.patch_size
        mixture = self.module.predictive(*tokens.as_arguments(), width=width)
        rows = torch.arange(keep.shape[0], device=keep.device)[:, None].expand_as(keep)[keep]
        series = rows * (int(tokens.sample_id.max()) + 1) + tokens.sample_id[keep]  # (row, sample) made unique
        loss = packed_nll(
            mixture,
            tokens.target[keep][None, :, :width],
            torch.ones_like(series, dtype=torch.bool)[None],
            tokens.observed[keep][None, :, :width],
            series[None],
            tokens.variate_id[keep][None],
        )
        return {"loss": loss}

    @torch.no_grad()
    def sample(self, batch: Batch, num_samples: int | None = None, generator: torch.Generator | None = None) -> Tensor:
        """Sampled paths [B, S, H, T]. With `generator` the draws depend only on it (torch's global generator is
        left as it was)."""
        tokens = self._tokens(batch, with_future=False)
        distribution = self.module.predictive(*tokens.as_arguments(), width=self.patch_size)  # [1, B T Nh, p]
        count = num_samples or self.num_samples
        if generator is None:
            draws = distribution.sample(count)
        else:
            seed = int(torch.randint(0, 2**62, (1,), generator=generator))
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                draws = distribution.sample(count)
        shape = (tokens.target.shape[0], len(self.target_index), self.n_horizon)
        paths = draws[:, 0].unflatten(1, shape).flatten(-2)[..., : self.horizon]  # [S, B, T, H]
        return paths.permute(1, 0, 3, 2)  # [B, S, H, T]

    def mean_forecast(self, batch: Batch) -> Tensor:
        """The mean of the predictive mixture [B, H, T] of every target and horizon step, in the series' units:
        deterministic and differentiable in `past`, the expectation of the paths `sample` draws from the same
        mixture."""
        tokens = self._tokens(batch, with_future=False)
        mixture = self.module.predictive(*tokens.as_arguments(), width=self.patch_size)  # [1, B T Nh, p]
        shape = (tokens.target.shape[0], len(self.target_index), self.n_horizon)
        means = mixture.mean()[0].unflatten(0, shape).flatten(-2)[..., : self.horizon]  # [B, T, H]
        return means.transpose(1, 2)

    def explained_output(self, batch: Batch) -> Tensor:
        """[B]: the mean forecast of the first target summed over the horizon (`mean_forecast`; the point forecast,
        the median of random draws, has no gradient)."""
        return self.mean_forecast(batch)[..., 0].sum(dim=1)

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        samples = self.sample(batch)
        return {"samples": samples, "point": samples.median(dim=1).values}

    def stored_options(self) -> dict[str, Any]:
        """The architecture in place of `preset` / `pretrained`: a run folder rebuilds the model without the
        checkpoint folder it started from (its weights are the run's own)."""
        architecture = {k: list(v) if isinstance(v, tuple) else v for k, v in self.architecture.items()}
        return {"architecture": architecture, "pretrained": None}


def _module_arguments(
    name: str, architecture: Mapping[str, Any] | None, pretrained: str | None, dropout: float, attn_dropout: float
) -> dict[str, Any]:
    """MoiraiModule arguments: a published checkpoint's config, an explicit architecture, or a preset's size."""
    dropouts = {"dropout_p": dropout, "attn_dropout_p": attn_dropout}
    if pretrained is not None:
        from pathlib import Path

        from finfusion.models.moirai.published import read_config

        if architecture is not None:
            raise FinfusionError("model.architecture and model.pretrained both given: the checkpoint fixes the size")
        return {**read_config(Path(pretrained)).module_arguments(), **dropouts}
    if architecture is not None:
        unknown = sorted(set(architecture) - set(ARCHITECTURE))
        if unknown:
            raise FinfusionError(f"model.architecture.{unknown[0]}: unknown key (known: {', '.join(ARCHITECTURE)})")
        return {**dict(architecture), **dropouts}
    size = preset(name)
    return {
        "d_model": size.d_model,
        "num_layers": size.num_layers,
        "patch_sizes": size.patch_sizes,
        "max_seq_len": size.max_seq_len,
        "components": DEFAULT_COMPONENTS,
        "fixed_scale": FIXED_SCALE,
        "scaling": True,
        **dropouts,
    }
