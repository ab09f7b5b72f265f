"""Hugging Face `TimeSeriesTransformerForPrediction` behind the sample contract: the probabilistic alternative.

Shapes: B batch, L lookback, C input channels, T target channels, H horizon, S sample paths.

The target channels `target_index` of `past` are the model's `past_values` (`input_size = T`; [B, L] when T = 1).
The time feature is the bar position relative to the decision bar, divided by L (past -(L-1)/L .. 0, future
1/L .. H/L). HF consumes `max(lags_sequence)` bars as lags, so its `context_length` is L - max(lags). With
`future` in the batch the output carries the distribution's negative log-likelihood `loss` []; outside training
it also carries `samples` [B, S, H, T] from `generate` and their mean as `point` [B, H, T].
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor, nn
from transformers import TimeSeriesTransformerConfig, TimeSeriesTransformerForPrediction

from finfusion.models.base import Capabilities, target_positions
from finfusion.samples.contract import FUTURE, FUTURE_MASK, PAST, PAST_MASK


class HFTimeSeriesTransformer(nn.Module, Capabilities):
    """Encoder-decoder Transformer with a Student-t head: `past` [B, L, C] -> `samples` [B, S, H, T], `loss`."""

    inputs: ClassVar[frozenset[str]] = frozenset({PAST, PAST_MASK})
    outputs: ClassVar[frozenset[str]] = frozenset({"samples", "point", "loss"})
    trainable: ClassVar[bool] = True

    def __init__(
        self,
        n_channels: int,
        context_length: int,
        horizon: int,
        target_index: Sequence[int] | None = None,
        lags_sequence: Sequence[int] = (1, 2, 3),
        d_model: int = 32,
        n_layers: int = 2,
        n_heads: int = 2,
        d_ff: int = 64,
        dropout: float = 0.1,
        num_samples: int = 100,
        distribution: str = "student_t",
        validation_samples: int = 8,
    ) -> None:
        super().__init__()
        targets = target_positions(target_index, n_channels)
        if max(lags_sequence) >= context_length:
            raise ValueError(f"context_length {context_length} must exceed the largest lag {max(lags_sequence)}")
        self.register_buffer("target_index", torch.tensor(targets, dtype=torch.long), persistent=False)
        self.context_length = context_length
        self.horizon = horizon
        self.num_samples = num_samples
        self.validation_samples = validation_samples
        self.config = TimeSeriesTransformerConfig(
            prediction_length=horizon,
            context_length=context_length - max(lags_sequence),
            input_size=len(targets),
            lags_sequence=list(lags_sequence),
            num_time_features=1,
            scaling="std",
            distribution_output=distribution,
            d_model=d_model,
            encoder_layers=n_layers,
            decoder_layers=n_layers,
            encoder_attention_heads=n_heads,
            decoder_attention_heads=n_heads,
            encoder_ffn_dim=d_ff,
            decoder_ffn_dim=d_ff,
            dropout=dropout,
            attention_dropout=dropout,
            activation_dropout=dropout,
            encoder_layerdrop=0.0,
            decoder_layerdrop=0.0,
            num_parallel_samples=num_samples,
        )
        self.model = TimeSeriesTransformerForPrediction(self.config)

    def _values(self, x: Tensor) -> Tensor:
        """[B, N, T] -> HF layout: [B, N] when T = 1, else unchanged."""
        return x[..., 0] if x.shape[-1] == 1 else x

    def _inputs(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        past = batch[PAST][..., self.target_index]
        size, length = past.shape[:2]
        observed = torch.isfinite(past)
        if PAST_MASK in batch:
            observed = observed & batch[PAST_MASK].unsqueeze(-1)
        position = torch.arange(1 - length, self.horizon + 1, dtype=past.dtype, device=past.device) / length
        time = position.view(1, -1, 1).expand(size, -1, -1)
        return {
            "past_values": self._values(torch.where(observed, past, 0.0)),
            "past_observed_mask": self._values(observed.to(past.dtype)),
            "past_time_features": time[:, :length],
            "future_time_features": time[:, length:],
        }

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """batch `past` [B, L, C] (+ `past_mask`, `future` [B, H, T], `future_mask` [B, H]) -> `loss`, `samples`.

        In eval mode a batch with `future` (validation) draws `validation_samples` paths; one without (forecasting)
        draws `num_samples`."""
        inputs = self._inputs(batch)
        out: dict[str, Tensor] = {}
        if FUTURE in batch:
            future = batch[FUTURE]
            observed = torch.isfinite(future)
            if FUTURE_MASK in batch:
                observed = observed & batch[FUTURE_MASK].unsqueeze(-1)
            out["loss"] = self.model(
                **inputs,
                future_values=self._values(torch.where(observed, future, 0.0)),
                future_observed_mask=self._values(observed.to(future.dtype)),
            ).loss
        if not self.training:
            count = self.validation_samples if FUTURE in batch else self.num_samples
            out.update(self.sample(batch, inputs, count))
        return out

    @torch.no_grad()
    def sample(
        self, batch: dict[str, Tensor], inputs: dict[str, Tensor] | None = None, count: int | None = None
    ) -> dict[str, Tensor]:
        """batch `past` [B, L, C] -> `samples` [B, S, H, T] (S = `count`, default num_samples) and their mean
        `point` [B, H, T]."""
        inputs = self._inputs(batch) if inputs is None else inputs
        self.model.config.num_parallel_samples = count or self.num_samples
        paths = self.model.generate(**inputs).sequences
        samples = paths.unsqueeze(-1) if paths.dim() == 3 else paths
        return {"samples": samples, "point": samples.mean(dim=1)}
