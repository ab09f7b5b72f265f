"""Train, validate, predict and evaluate any family's experiment: the one pipeline behind `finfusion train / validate
/ predict / evaluate` and the serve jobs.

    train_run(cfg, run_dir)        check the config, build the family's data (fitting its state), build and check the
                                   model, fit it through the one Trainer path, write the run folder
    load_run(run_dir)              the run's config, its data rebuilt with the STORED state (nothing refitted) and
                                   the model with its best weights
    validate_run(run_dir)          the task's validation metrics of the stored weights (or a given checkpoint)
    predict_run(run_dir, span)     the family's predictions over a span
    evaluate_experiment(cfg, dir)  the family's evaluation
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig

from finfusion.errors import FinfusionError
from finfusion.families import family_of
from finfusion.families.base import EvaluationResult, Family, FamilyData, Predictions, Progress
from finfusion.families.run_folder import METRICS_FILE, STATE_FILE, read_config, read_json, write_run
from finfusion.models.base import Capabilities
from finfusion.models.build import build_model, load_model_state, save_model_state

if TYPE_CHECKING:
    from torch import Tensor


@dataclass
class LoadedRun:
    """A trained run: its folder, config, family, data (stored state) and model (best weights, eval mode)."""

    run_dir: Path
    cfg: DictConfig
    family: Family
    data: FamilyData
    model: Capabilities


@dataclass
class TrainedRun(LoadedRun):
    """A run just trained: also where its best checkpoint is and that checkpoint's monitored score."""

    best_checkpoint: Path | None
    best_score: float | None


def checked_family(cfg: DictConfig) -> Family:
    """The config's family, after checking every section's keys."""
    family = family_of(cfg)
    family.check(cfg)
    return family


def model_for(cfg: DictConfig, data: FamilyData) -> Capabilities:
    """The config's model for `data`, its inputs checked against the samples' keys."""
    return build_model(cfg.model, data.model_arguments, data.sample_keys)


def with_stored_options(cfg: DictConfig, model: Capabilities) -> DictConfig:
    """`cfg` with the model part's settings replaced by what the model stores (`Capabilities.stored_options`)."""
    updates = model.stored_options()
    if not updates:
        return cfg
    from omegaconf import OmegaConf, open_dict

    stored = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    with open_dict(stored):
        for key, value in updates.items():
            stored.model[key] = value
    return stored


def train_run(
    cfg: DictConfig,
    run_dir: str | Path,
    resume: str | Path | None = "auto",
    callbacks: Sequence[Any] = (),
    data: FamilyData | None = None,
    initial_weights: Mapping[str, Tensor] | None = None,
) -> TrainedRun:
    """Train the experiment `cfg` into `run_dir` (see the module docstring); resumes from last.ckpt by default.
    `data` replaces the family's data (e.g. built with a stored state); `initial_weights` start the model from a
    trained state dict (fine-tuning) instead of its seeded initialisation."""
    from finfusion.training.fitting import fit_model, seed_everything
    from finfusion.training.tracking import training_run
    from finfusion.training.trainer import is_global_zero

    run = Path(run_dir)
    family = checked_family(cfg)
    data = data or family.data(cfg)
    seed_everything(cfg)
    model = model_for(cfg, data)
    cfg = with_stored_options(cfg, model)
    if initial_weights is not None:
        model.load_state_dict(dict(initial_weights), strict=True)
    with training_run(run, cfg) as tracked:
        fitted = fit_model(cfg, model, data.train, data.val, data.loader, run, resume, callbacks)
        windows = {"train": len(data.train), "val": len(data.val), "test": len(data.test)}
        metrics = {
            "model": str(cfg.model.name),
            "windows": windows,
            "best_checkpoint": None if fitted.best_checkpoint is None else fitted.best_checkpoint.name,
            "best_score": fitted.best_score,
        }
        if is_global_zero():  # one process of a distributed run writes the run folder
            run.mkdir(parents=True, exist_ok=True)
            save_model_state(model, run)
            write_run(run, cfg, data.state, metrics)
            if tracked is not None:
                tracked.log_metrics({f"windows_{span}": count for span, count in windows.items()})
                tracked.log_artifact(run / METRICS_FILE)
    return TrainedRun(run, cfg, family, data, model, fitted.best_checkpoint, fitted.best_score)


def load_run(run_dir: str | Path, overrides: Sequence[str] = ()) -> LoadedRun:
    """The trained run in `run_dir`, its data rebuilt from the lake with the stored state (see the module
    docstring); `overrides` change settings that do not touch the weights (e.g. model.sampling.num_samples=8)."""
    run = Path(run_dir)
    cfg = read_config(run, tuple(overrides))
    family = family_of(cfg)
    state = read_json(run, STATE_FILE)
    read_json(run, METRICS_FILE)
    data = family.data(cfg, state)
    model = load_model_state(model_for(cfg, data), run)
    return LoadedRun(run, cfg, family, data, model)


def run_from_parts(
    cfg: DictConfig, state: Mapping[str, Any], weights: Mapping[str, Tensor], run_dir: Path = Path("served")
) -> LoadedRun:
    """A trained model from its parts (a model store's version): the config, the family's stored state and the
    weights; the data is rebuilt from the config's lake with that state (nothing refitted)."""
    family = family_of(cfg)
    data = family.data(cfg, state)
    model = model_for(cfg, data)
    model.load_state_dict(dict(weights), strict=True)
    model.eval()
    return LoadedRun(run_dir, cfg, family, data, model)


def validation_metrics(loaded: LoadedRun) -> dict[str, float]:
    """The task's validation metrics of a loaded run's model on its validation samples (no training)."""
    from torch import nn

    from finfusion.training.fitting import make_task
    from finfusion.training.trainer import validate_task

    if not isinstance(loaded.model, nn.Module):
        raise FinfusionError(f"{loaded.cfg.model.name} is not trained by gradient descent: it has no validation loop")
    if len(loaded.data.val) == 0:
        raise FinfusionError("the split leaves no validation samples")
    task = make_task(loaded.cfg, loaded.model)
    return validate_task(task, loaded.data.loader(loaded.data.val), loaded.cfg.get("trainer", {}))


def validate_run(
    run_dir: str | Path, checkpoint: str | Path | None = None, overrides: Sequence[str] = ()
) -> dict[str, float]:
    """The task's validation metrics of the run's best weights (or those of `checkpoint`, read weights-only) on its
    validation samples, without training."""
    from finfusion.training.trainer import best_state_dict

    loaded = load_run(run_dir, overrides)
    if checkpoint is not None:
        loaded.model.load_state_dict(best_state_dict(Path(checkpoint)))
    return validation_metrics(loaded)


def predict_run(run_dir: str | Path, span: str = "test", overrides: Sequence[str] = ()) -> Predictions:
    """The run's predictions over `span` (one of its family's `spans`)."""
    loaded = load_run(run_dir, overrides)
    if span not in loaded.family.spans:
        raise FinfusionError(f"unknown span '{span}'; choose one of {', '.join(loaded.family.spans)}")
    return loaded.family.predict(loaded, span)


def evaluate_experiment(cfg: DictConfig, run_dir: str | Path, progress: Progress = print) -> EvaluationResult:
    """The family's evaluation of the experiment `cfg` into `run_dir`."""
    return checked_family(cfg).evaluate(cfg, Path(run_dir), progress)
