"""The Cross-Gated Attention portfolio model (seed 002) as the model steps of the serving jobs.

`CGA_STEPS` (the `finfusion serve job` default) runs the experiment `cga_daily`; `cga_steps(experiment, overrides)`
builds the steps of another experiment or of overridden settings (e.g. `model.use_news=false`, the price-only twin).

Datasets. The experiment's `data` part is pointed at the `PipelineSpec`: bars `spec.bars` at `spec.freq`, features
`spec.features`, and, when the model reads news, the text dataset `spec.texts` (default: the one named like the bars,
where `serve job ingest --texts` puts them). Texts without a cached embedding are embedded on the way
(`portfolio.inputs.load_inputs`).

Spans. A span (start, end] is cut at its validation start: the first of its last `validation_share` sessions
(at least horizon + 1 of them, so that one window fits). Training (train and finetune) fits every window whose future
ends before the cut, from the start of the data: `start` picks the validation sessions, not the first training
window. The best epoch is chosen on the validation windows: origin at or after the cut, future ending by `end`.
`validate` scores the same windows, so the served version and a finetuned candidate are compared on sessions that
neither was fitted on (the candidate's epoch was chosen on them).

Finetune starts from the served version's weights, universe, normaliser and data settings; the experiment gives the
task, optimiser and trainer. Predict gives the top-k weights of every decision bar in the span, each from its own
lookback (bars and texts known at its close) and the normaliser saved with the model. Lightning runs write into a
temporary folder; the store keeps the state dict and `to_parts`' config (normaliser included).
"""

from __future__ import annotations

import copy
import math
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
from omegaconf import DictConfig, open_dict

from finfusion.config import load_config
from finfusion.data.lake import Lake
from finfusion.errors import FinfusionError
from finfusion.portfolio.artifacts import PortfolioModel, from_parts, save_run, to_parts
from finfusion.portfolio.inputs import build_data, load_inputs, window_config
from finfusion.portfolio.predict import model_weights, weights_frame
from finfusion.portfolio.train import finetune_portfolio, train_portfolio, validate_portfolio
from finfusion.samples.portfolio import PortfolioDataset
from finfusion.serving.jobs import PipelineSpec, Span
from finfusion.serving.steps import ModelArtifact, ModelSteps

DEFAULT_EXPERIMENT = "cga_daily"
VALIDATION_SHARE = 0.3
#: One microsecond: turns the span's closed end into the half-open bounds of `PortfolioDataset.split`.
TICK = timedelta(microseconds=1)


@dataclass(frozen=True)
class CGASteps:
    """The four steps of the CGA model for the experiment `experiment` with `overrides` (see the module docstring)."""

    experiment: str = DEFAULT_EXPERIMENT
    overrides: tuple[str, ...] = ()
    validation_share: float = VALIDATION_SHARE

    def __post_init__(self) -> None:
        if not 0.0 < self.validation_share < 1.0:
            raise FinfusionError(f"validation_share must lie strictly between 0 and 1, got {self.validation_share}")

    def train(self, lake: Lake, spec: PipelineSpec, span: Span) -> ModelArtifact:
        """A model trained from scratch on the windows before the span's validation cut."""
        cfg = load_config(self.experiment, self.overrides)
        with open_dict(cfg):
            cfg.data.update(data_sources(lake, spec, news=bool(cfg.model.use_news)))
            cfg.data.update(self.bounds(lake, spec, span, int(cfg.data.horizon)))
        with tempfile.TemporaryDirectory(prefix="finfusion-cga-") as run_dir:
            run = train_portfolio(cfg, lake, run_dir, resume="never")
        return artifact(run.trained)

    def finetune(self, lake: Lake, spec: PipelineSpec, span: Span, base: ModelArtifact) -> ModelArtifact:
        """`base` trained further (the experiment's task, optimiser and trainer) up to the span's validation cut."""
        served = portfolio_model(lake, spec, base)
        cfg = load_config(self.experiment, self.overrides)
        with open_dict(cfg):
            cfg.data = copy.deepcopy(served.cfg.data)
            cfg.data.update(self.bounds(lake, spec, span, int(cfg.data.horizon)))
        with tempfile.TemporaryDirectory(prefix="finfusion-cga-") as folder:
            base_run = save_run(Path(folder) / "base", served)
            run = finetune_portfolio(cfg, lake, Path(folder) / "finetuned", base_run)
        return artifact(run.trained)

    def validate(self, lake: Lake, spec: PipelineSpec, span: Span, model: ModelArtifact) -> float:
        """`val_loss` of `model` on the span's validation windows."""
        trained = portfolio_model(lake, spec, model)
        bounds = self.bounds(lake, spec, span, int(trained.cfg.data.horizon))
        return validate_portfolio(lake, trained, bounds["train_end"], bounds["val_end"])["val_loss"]

    def predict(self, lake: Lake, spec: PipelineSpec, span: Span, model: ModelArtifact) -> pl.DataFrame:
        """Weights [ts, symbol, weight] of every decision bar start < ts <= end with a full lookback (none: empty)."""
        trained = portfolio_model(lake, spec, model)
        config = window_config(trained.cfg.data, require_future=False, stride=1)
        inputs = load_inputs(lake, trained.cfg.data, news=bool(trained.cfg.model.use_news))
        data = build_data(inputs, config, normalizer=trained.normalizer, symbols=trained.symbols)
        start = None if span.start is None else span.start + TICK
        decisions = PortfolioDataset(data, config).split(start, span.end + TICK, purge=False)
        frame = weights_frame(decisions.origins_us, trained.symbols, model_weights(trained, decisions), "")
        return frame.drop("model_version")

    def bounds(self, lake: Lake, spec: PipelineSpec, span: Span, horizon: int) -> dict[str, str]:
        """`train_end` (the validation cut) and `val_end` (just after the span's end) as ISO instants."""
        cut = validation_cut(lake, spec, span, self.validation_share, horizon)
        return {"train_end": cut.isoformat(), "val_end": (span.end + TICK).isoformat()}

    def steps(self) -> ModelSteps:
        return ModelSteps(train=self.train, finetune=self.finetune, validate=self.validate, predict=self.predict)


def cga_steps(experiment: str = DEFAULT_EXPERIMENT, overrides: Sequence[str] = ()) -> ModelSteps:
    """The `ModelSteps` of the CGA experiment `experiment` (a name in configs/experiment or a YAML path) with
    `overrides` (e.g. ["model.use_news=false", "trainer.max_epochs=5"]). The config is read when a step runs."""
    return CGASteps(experiment, tuple(overrides)).steps()


def validation_cut(lake: Lake, spec: PipelineSpec, span: Span, share: float, horizon: int) -> datetime:
    """The first of the span's last ceil(share * n) feature sessions (at least horizon + 1 of its n sessions)."""
    files = lake.files("features", spec.features, spec.freq)
    if not files:
        raise FinfusionError(f"no {spec.freq} features dataset '{spec.features}' in {lake.root}")
    sessions = pl.scan_parquet(files).select("ts").unique().filter(span.mask("ts")).sort("ts").collect()["ts"]
    needed = max(math.ceil(share * len(sessions)), horizon + 1)
    if len(sessions) < needed:
        raise FinfusionError(
            f"the span {span} holds {len(sessions)} session(s) of features '{spec.features}'; validating a "
            f"horizon of {horizon} bars needs at least {horizon + 1}"
        )
    return sessions[len(sessions) - needed]


def data_sources(lake: Lake, spec: PipelineSpec, *, news: bool) -> dict[str, Any]:
    """The dataset entries of an experiment's `data` part for `spec` (texts None when the model reads no news)."""
    sources: dict[str, Any] = {"bars": spec.bars, "freq": spec.freq, "features": spec.features, "texts": None}
    if news:
        texts = spec.texts or spec.bars
        if not lake.files("text", texts):
            raise FinfusionError(
                f"the CGA model reads news but {lake.root} has no text dataset '{texts}': ingest texts (serve job "
                "ingest --texts) or serve the price-only twin (cga_steps(overrides=['model.use_news=false']))"
            )
        sources["texts"] = texts
    return sources


def portfolio_model(lake: Lake, spec: PipelineSpec, model: ModelArtifact) -> PortfolioModel:
    """The portfolio model of a stored artifact, reading `spec`'s datasets."""
    trained = from_parts(model.state_dict, model.config)
    cfg: DictConfig = trained.cfg
    with open_dict(cfg):
        cfg.data.update(data_sources(lake, spec, news=bool(cfg.model.use_news)))
    return trained


def artifact(trained: PortfolioModel) -> ModelArtifact:
    """What the model store keeps of a trained model: `to_parts` and its validation metrics."""
    state, config = to_parts(trained)
    return ModelArtifact(state_dict=state, config=config, metrics=dict(trained.metrics))


CGA_STEPS = cga_steps()
