"""The model steps the train, finetune and predict jobs call: small callables any model plugs in through.

A step reads what it needs from the lake (the datasets named by the `PipelineSpec`) for a `Span` of decision
instants and returns plain data; the jobs do the versioning, the validation gate and the writing. Point-in-time is
the step's promise: what it computes for an instant t uses lake rows at or before t only.

    train(lake, spec, span) -> ModelArtifact                  a model trained from scratch on the span
    finetune(lake, spec, span, base) -> ModelArtifact         `base` (the served version) trained further
    validate(lake, spec, span, model) -> float                 validation loss of `model` on the span (lower: better)
    predict(lake, spec, span, model) -> frame             rows of `table` for each decision in span

Every family's steps come from its experiment config (`serving/family_steps.py`); `table` names the lake table the
predict step's rows belong to (weights, forecasts, ...).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import polars as pl
import torch

from finfusion.data.lake import Lake
from finfusion.serving.jobs import PipelineSpec, Span


@dataclass(frozen=True)
class ModelArtifact:
    """A model as the store keeps it: its state dict, the config that rebuilds it, and its metrics."""

    state_dict: dict[str, torch.Tensor]
    config: dict[str, Any]
    metrics: dict[str, float | None] = field(default_factory=dict)


class TrainFn(Protocol):
    def __call__(self, lake: Lake, spec: PipelineSpec, span: Span) -> ModelArtifact: ...


class FinetuneFn(Protocol):
    def __call__(self, lake: Lake, spec: PipelineSpec, span: Span, base: ModelArtifact) -> ModelArtifact: ...


class ValidateFn(Protocol):
    def __call__(self, lake: Lake, spec: PipelineSpec, span: Span, model: ModelArtifact) -> float: ...


class PredictFn(Protocol):
    def __call__(self, lake: Lake, spec: PipelineSpec, span: Span, model: ModelArtifact) -> pl.DataFrame: ...


@dataclass(frozen=True)
class ModelSteps:
    """The four steps of one model family and the lake table its predictions go to."""

    train: TrainFn
    finetune: FinetuneFn
    validate: ValidateFn
    predict: PredictFn
    table: str = "weights"
