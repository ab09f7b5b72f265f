"""The model steps of the serving jobs for any family, from an experiment config: `family_steps("cga_daily")`,
`family_steps("patchtst_synthetic", ["model.d_model=32"])`.

Datasets. The config's data part is pointed at the `PipelineSpec` by its family (`Family.serving_config`): bars
`spec.bars` at `spec.freq`, features `spec.features`, texts `spec.texts` (default: named like the bars).

Spans. A span (start, end] is cut at its validation start: the first of its last `validation_share` sessions (at least
horizon + 1 of them, so that one window fits). Training (train and finetune) fits every sample whose future ends
before the cut, from the start of the data: `start` picks the validation sessions, not the first training sample. The
best epoch is chosen on the validation samples (decision at or after the cut, future ending by `end`). `validate`
scores the same samples, so the served version and a finetuned candidate are compared on sessions that neither was
fitted on (the candidate's epoch was chosen on them).

Artifacts. The store keeps a version's state dict and, as its config, the experiment config the version was trained
with (`experiment`), the family's fitted state (`state`: normalisers, universe, ...) and its split instants
(`split`). Finetune starts from the served version's weights, config and state (nothing is refitted); predict
rebuilds the samples with that state and split and writes the family's lake table for every decision in the span.
Lightning runs write into a staging folder of the model store (`STORE/_staging/<id>/run`, removed after the step;
one a killed process left behind is removed by the next writer: see serving/model_store.py).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
from omegaconf import DictConfig, OmegaConf

from finfusion.config import ConfigError, load_config
from finfusion.data.lake import Lake
from finfusion.errors import FinfusionError
from finfusion.families import family_of
from finfusion.families.base import Family, Sources
from finfusion.families.pipeline import LoadedRun, checked_family, run_from_parts, train_run, validation_metrics
from finfusion.serving.jobs import PipelineSpec, Span
from finfusion.serving.model_store import staging
from finfusion.serving.steps import ModelArtifact, ModelSteps

VALIDATION_SHARE = 0.3
#: One microsecond: turns the span's closed end into the half-open end of a validation split.
TICK = timedelta(microseconds=1)
EXPERIMENT_KEY = "experiment"
STATE_KEY = "state"
SPLIT_KEY = "split"


@dataclass(frozen=True)
class FamilySteps:
    """The four steps of the experiment `experiment` (a name in configs/experiment or a YAML path) with
    `overrides` (see the module docstring), training in the staging area of the model store at `store_root`. The
    config is read, and checked, when a step runs."""

    experiment: str
    overrides: tuple[str, ...] = ()
    validation_share: float = VALIDATION_SHARE
    store_root: Path = field(kw_only=True)

    def __post_init__(self) -> None:
        if not 0.0 < self.validation_share < 1.0:
            raise FinfusionError(f"validation_share must lie strictly between 0 and 1, got {self.validation_share}")

    def config(self) -> tuple[DictConfig, Family]:
        """The experiment config and its family, the config checked."""
        try:
            cfg = load_config(self.experiment, self.overrides)
        except ConfigError as exc:
            raise FinfusionError(str(exc)) from exc
        return cfg, checked_family(cfg)

    def train(self, lake: Lake, spec: PipelineSpec, span: Span) -> ModelArtifact:
        """A model trained from scratch on the samples before the span's validation cut."""
        cfg, family = self.config()
        split = self.split(lake, spec, span, cfg)
        served = family.serving_config(cfg, lake, sources(spec), *split)
        with staging(self.store_root) as work:
            run = train_run(served, work / "run", resume="never")
        return artifact(run, split)

    def finetune(self, lake: Lake, spec: PipelineSpec, span: Span, base: ModelArtifact) -> ModelArtifact:
        """`base` trained further (its config's task, optimiser and trainer) up to the span's validation cut, with
        its stored state."""
        cfg, state = parts(base)
        family = family_of(cfg)
        split = self.split(lake, spec, span, cfg)
        served = family.serving_config(cfg, lake, sources(spec), *split)
        data = family.data(served, state)
        with staging(self.store_root) as work:
            run = train_run(served, work / "run", resume="never", data=data, initial_weights=base.state_dict)
        return artifact(run, split)

    def validate(self, lake: Lake, spec: PipelineSpec, span: Span, model: ModelArtifact) -> float:
        """`val_loss` of `model` on the span's validation samples."""
        cfg, state = parts(model)
        served = family_of(cfg).serving_config(cfg, lake, sources(spec), *self.split(lake, spec, span, cfg))
        return validation_metrics(run_from_parts(served, state, model.state_dict))["val_loss"]

    def predict(self, lake: Lake, spec: PipelineSpec, span: Span, model: ModelArtifact) -> pl.DataFrame:
        """Rows of the family's table for every decision start < t <= end with a full lookback (none: empty), with
        the split the model was trained with."""
        cfg, state = parts(model)
        family = family_of(cfg)
        served = family.serving_config(cfg, lake, sources(spec), *stored_split(model))
        return family.predict_between(run_from_parts(served, state, model.state_dict), span.start, span.end)

    def split(self, lake: Lake, spec: PipelineSpec, span: Span, cfg: DictConfig) -> tuple[datetime, datetime]:
        """(train_end, val_end) of a span: its validation cut and just after its end."""
        cut = validation_cut(lake, spec, span, self.validation_share, int(cfg.data.get("horizon", 1)))
        return cut, span.end + TICK

    def table(self) -> str:
        """The lake table the predict step's rows belong to."""
        return self.config()[1].table

    def steps(self) -> ModelSteps:
        return ModelSteps(
            train=self.train, finetune=self.finetune, validate=self.validate, predict=self.predict, table=self.table()
        )


def family_steps(experiment: str, overrides: Sequence[str] = (), *, store_root: str | Path) -> ModelSteps:
    """The `ModelSteps` of the experiment `experiment` with `overrides` (e.g. ["model.use_news=false"]), training
    in the staging area of the model store at `store_root`."""
    return FamilySteps(experiment, tuple(overrides), store_root=Path(store_root)).steps()


def sources(spec: PipelineSpec) -> Sources:
    return Sources(bars=spec.bars, freq=spec.freq, features=spec.features, texts=spec.texts)


def artifact(run: LoadedRun, split: tuple[datetime, datetime]) -> ModelArtifact:
    """What the store keeps of a trained run (see the module docstring), with its validation metrics."""
    weights = {key: value.detach().clone() for key, value in run.model.state_dict().items()}
    config = {
        EXPERIMENT_KEY: OmegaConf.to_container(run.cfg, resolve=True),
        STATE_KEY: dict(run.data.state),
        SPLIT_KEY: {"train_end": split[0].isoformat(), "val_end": split[1].isoformat()},
    }
    return ModelArtifact(state_dict=weights, config=config, metrics=validation_metrics(run))


def parts(model: ModelArtifact) -> tuple[DictConfig, dict[str, Any]]:
    """(experiment config, fitted state) of a stored artifact. The serve jobs store configs resolved, so one that
    holds an interpolation (`${...}`, e.g. an environment variable) was not written by them and is refused."""
    missing = [key for key in (EXPERIMENT_KEY, STATE_KEY) if key not in model.config]
    if missing:
        raise FinfusionError(f"the stored model config has no {', '.join(missing)}: it was not made by the serve jobs")
    interpolated = _interpolation(model.config[EXPERIMENT_KEY], EXPERIMENT_KEY)
    if interpolated is not None:
        raise FinfusionError(f"the stored model config holds an interpolation at {interpolated}: refused")
    return OmegaConf.create(model.config[EXPERIMENT_KEY]), dict(model.config[STATE_KEY])


def _interpolation(node: Any, where: str) -> str | None:
    """The first key path whose value is a string with `${` (None when there is none)."""
    if isinstance(node, Mapping):
        items = node.items()
    elif isinstance(node, list):
        items = enumerate(node)
    else:
        return where if isinstance(node, str) and "${" in node else None
    for key, value in items:
        found = _interpolation(value, f"{where}.{key}")
        if found is not None:
            return found
    return None


def stored_split(model: ModelArtifact) -> tuple[datetime, datetime]:
    """(train_end, val_end) a stored version was trained with."""
    if SPLIT_KEY not in model.config:
        raise FinfusionError(f"the stored model config has no {SPLIT_KEY}: it was not made by the serve jobs")
    split = model.config[SPLIT_KEY]
    return datetime.fromisoformat(str(split["train_end"])), datetime.fromisoformat(str(split["val_end"]))


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
