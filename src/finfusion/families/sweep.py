"""Hyper-parameter sweeps with Optuna: the search space is the experiment config's own `sweep:` section, every trial
trains through the one pipeline (`train_run`) and is scored on its validation span only.

    sweep:
      sampler: tpe            # tpe (seeded) or random
      pruner: median          # median (stops a trial whose validation metric is worse than the median at the same
                              # epoch of earlier trials) or none
      seed: 0
      startup_trials: 2       # trials the pruner never stops (it needs a median to compare with)
      warmup_epochs: 1        # epochs of each trial it never stops
      params:                 # dotted config keys
        optim.lr: {low: 1.0e-4, high: 1.0e-2, log: true}
        model.d_model: {choices: [16, 32, 64]}
        model.n_layers: {low: 1, high: 3}    # integers when low and high are integers

The objective is the trial's best value of the monitored validation metric (`trainer.checkpoint.monitor`, minimised
or maximised by `trainer.checkpoint.mode`). The test span is never looked at here: the best trial is written as a
runnable config (`SWEEP/best.yaml`, without the sweep section), which `finfusion evaluate --config SWEEP/best.yaml`
scores once.

Workers share one study through Optuna's storage (default `sqlite:///SWEEP/optuna.db`; any RDB URL for several
machines): the same command started in several processes runs `trials` trials in all. The trials' trainings are
tracked runs nested under the sweep's (training/tracking.py). Samples are built once per worker unless a `data.*`
key is searched.

Hand-written on Optuna's public API (the maintained Lightning pruning callback lives in optuna-integration, one
small callback here does the same through `trainer.should_stop`).
"""

from __future__ import annotations

import fcntl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from finfusion.config import plain, save_config
from finfusion.data.atomic import write_json_atomic
from finfusion.errors import FinfusionError
from finfusion.families.pipeline import checked_family, train_run

SECTION = "sweep"
SWEEP_DEFAULTS: dict[str, Any] = {
    "sampler": "tpe",
    "pruner": "median",
    "seed": 0,
    "startup_trials": 2,
    "warmup_epochs": 1,
    "params": {},
}
SAMPLERS = ("tpe", "random")
PRUNERS = ("median", "none")
STUDY_FILE = "optuna.db"
BEST_CONFIG = "best.yaml"
TRIALS_FILE = "trials.json"
RANGE_KEYS = frozenset({"low", "high", "log", "step"})
SQLITE_WAIT_SECONDS = 120


@dataclass(frozen=True)
class Param:
    """One searched key: categorical `choices`, or a `low`..`high` range (integer when both are integers)."""

    key: str
    choices: tuple[Any, ...] | None = None
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None

    def suggest(self, trial: Any) -> Any:
        if self.choices is not None:
            return trial.suggest_categorical(self.key, list(self.choices))
        if isinstance(self.low, int) and isinstance(self.high, int) and not isinstance(self.step, float):
            return trial.suggest_int(self.key, self.low, self.high, step=self.step or 1, log=self.log)
        return trial.suggest_float(self.key, float(self.low), float(self.high), step=self.step, log=self.log)

    def first(self) -> Any:
        """A value inside the space (to check the key before the study starts)."""
        return self.choices[0] if self.choices is not None else self.low


def _param(key: str, spec: Any) -> Param:
    where = f"sweep.params.{key}"
    if not isinstance(spec, Mapping):
        raise FinfusionError(f"{where}: give {{choices: [...]}} or {{low: ..., high: ...}}, not '{spec}'")
    if "choices" in spec:
        if set(spec) != {"choices"} or not isinstance(spec["choices"], list) or not spec["choices"]:
            raise FinfusionError(f"{where}: 'choices' is a non-empty list and stands alone (got {dict(spec)})")
        return Param(key, choices=tuple(spec["choices"]))
    unknown = sorted(set(spec) - RANGE_KEYS)
    if unknown or "low" not in spec or "high" not in spec:
        raise FinfusionError(f"{where}: a range has low and high (and optionally log, step); got {dict(spec)}")
    low, high = spec["low"], spec["high"]
    if not all(isinstance(value, int | float) and not isinstance(value, bool) for value in (low, high)):
        raise FinfusionError(f"{where}: low and high are numbers (got {low!r}, {high!r})")
    if low >= high:
        raise FinfusionError(f"{where}: low {low} is not below high {high}")
    if spec.get("log") and low <= 0:
        raise FinfusionError(f"{where}: a log range needs low > 0 (got {low})")
    return Param(key, low=low, high=high, log=bool(spec.get("log", False)), step=spec.get("step"))


@dataclass(frozen=True)
class SweepOptions:
    sampler: str
    pruner: str
    seed: int
    startup_trials: int
    warmup_epochs: int
    params: tuple[Param, ...]


def sweep_options(cfg: DictConfig) -> SweepOptions:
    """The config's `sweep:` section, checked (an unknown key, sampler or pruner, or an empty space is an error)."""
    given = plain(cfg.get(SECTION))
    if not given:
        raise FinfusionError(
            "config: no 'sweep' section (its params are the search space; see `finfusion sweep --help`)"
        )
    unknown = sorted(set(given) - set(SWEEP_DEFAULTS))
    if unknown:
        raise FinfusionError(f"config: unknown key 'sweep.{unknown[0]}'; allowed: {', '.join(sorted(SWEEP_DEFAULTS))}")
    merged = {**SWEEP_DEFAULTS, **given}
    if merged["sampler"] not in SAMPLERS:
        raise FinfusionError(f"sweep.sampler: '{merged['sampler']}' is not one of {', '.join(SAMPLERS)}")
    if merged["pruner"] not in PRUNERS:
        raise FinfusionError(f"sweep.pruner: '{merged['pruner']}' is not one of {', '.join(PRUNERS)}")
    if not merged["params"]:
        raise FinfusionError("sweep.params: nothing to search (give at least one key)")
    params = tuple(_param(str(key), spec) for key, spec in merged["params"].items())
    return SweepOptions(
        str(merged["sampler"]),
        str(merged["pruner"]),
        int(merged["seed"]),
        int(merged["startup_trials"]),
        int(merged["warmup_epochs"]),
        params,
    )


def with_values(cfg: DictConfig, values: Mapping[str, Any]) -> DictConfig:
    """A resolved copy of `cfg` with the dotted keys set and the sweep section dropped."""
    trial = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    with open_dict(trial):
        trial.pop(SECTION, None)
        for key, value in values.items():
            OmegaConf.update(trial, key, value, merge=True, force_add=True)
    return trial


def _storage(url: str) -> Any:
    """Optuna's RDB storage at `url`; SQLite connections wait for a worker's write lock instead of failing."""
    import optuna

    engine = {"connect_args": {"timeout": SQLITE_WAIT_SECONDS}} if url.startswith("sqlite") else {}
    return optuna.storages.RDBStorage(url, engine_kwargs=engine)


def _monitor(cfg: DictConfig) -> tuple[str, str]:
    from finfusion.training.trainer import trainer_options

    checkpoint = trainer_options(cfg.get("trainer", {}))["checkpoint"]
    return str(checkpoint["monitor"]), "maximize" if checkpoint["mode"] == "max" else "minimize"


def _pruning_callback(trial: Any, monitor: str) -> Any:
    """Reports the monitored metric after each validation; asks the trainer to stop when the pruner says so."""
    from lightning.pytorch.callbacks import Callback

    class Pruning(Callback):
        pruned = False

        def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
            if trainer.sanity_checking or monitor not in trainer.callback_metrics:
                return
            trial.report(float(trainer.callback_metrics[monitor]), step=trainer.current_epoch)
            if trial.should_prune():
                self.pruned = True
                trainer.should_stop = True

    return Pruning()


@dataclass(frozen=True)
class SweepResult:
    """The study after this worker: trials finished in all, the best one's number, value and values, best.yaml."""

    trials: int
    best_number: int
    best_value: float
    best_values: dict[str, Any]
    best_config: Path
    monitor: str


def run_sweep(
    cfg: DictConfig,
    sweep_dir: Path,
    trials: int,
    storage: str | None = None,
    study_name: str | None = None,
    progress: Callable[[str], None] = print,
) -> SweepResult:
    """Run trials of `cfg`'s sweep until the shared study holds `trials` of them (see the module docstring)."""
    import optuna
    from optuna.study import MaxTrialsCallback

    from finfusion.training.tracking import tracked_run

    if trials < 1:
        raise FinfusionError(f"--trials: {trials} is not a positive number of trials")
    options = sweep_options(cfg)
    family = checked_family(with_values(cfg, {param.key: param.first() for param in options.params}))
    monitor, direction = _monitor(cfg)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    url = storage or f"sqlite:///{(sweep_dir / STUDY_FILE).resolve()}"
    name = study_name or str(cfg.get("name", "sweep"))
    sampler = (
        optuna.samplers.TPESampler(seed=options.seed, n_startup_trials=options.startup_trials)
        if options.sampler == "tpe"
        else optuna.samplers.RandomSampler(seed=options.seed)
    )
    pruner = (
        optuna.pruners.MedianPruner(n_startup_trials=options.startup_trials, n_warmup_steps=options.warmup_epochs)
        if options.pruner == "median"
        else optuna.pruners.NopPruner()
    )
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with (sweep_dir / ".study.lock").open("w") as lock:  # workers starting together create the storage once
        fcntl.flock(lock, fcntl.LOCK_EX)
        study = optuna.create_study(
            storage=_storage(url),
            study_name=name,
            direction=direction,
            sampler=sampler,
            pruner=pruner,
            load_if_exists=True,
        )
    if study.direction.name.lower() != direction:
        raise FinfusionError(f"study '{name}' in {url} was made to {study.direction.name.lower()}, not {direction}")
    searches_data = any(param.key.startswith("data.") for param in options.params)
    shared_data = None if searches_data else family.data(with_values(cfg, {}))

    def objective(trial: optuna.Trial) -> float:
        values = {param.key: param.suggest(trial) for param in options.params}
        trial_cfg = with_values(cfg, values)
        pruning = _pruning_callback(trial, monitor)
        trained = train_run(trial_cfg, sweep_dir / f"trial-{trial.number}", "never", [pruning], shared_data)
        if trained.best_score is None:
            raise FinfusionError(f"{trial_cfg.model.name} has no validation score to sweep on (it is not trained)")
        shown = ", ".join(f"{key}={value}" for key, value in values.items())
        if pruning.pruned:
            progress(f"trial {trial.number}: pruned ({shown})")
            raise optuna.TrialPruned
        progress(f"trial {trial.number}: {monitor} {trained.best_score:.6g} ({shown})")
        return trained.best_score

    with tracked_run("sweep", sweep_dir.name, cfg) as tracked:
        left = trials - len(study.trials)  # trials other workers of the study have started or finished count
        if left > 0:
            study.optimize(objective, n_trials=left, callbacks=[MaxTrialsCallback(trials, states=None)], catch=())
        result = _write_best(study, cfg, sweep_dir, monitor)
        if tracked is not None:
            tracked.log_metrics({f"best_{monitor}": result.best_value, "trials": result.trials})
            tracked.log_artifact(result.best_config)
            tracked.log_artifact(sweep_dir / TRIALS_FILE)
    return result


def _write_best(study: Any, cfg: DictConfig, sweep_dir: Path, monitor: str) -> SweepResult:
    """best.yaml (the best complete trial's values on `cfg`) and trials.json (every trial's state, values and
    validation value)."""
    from optuna.trial import TrialState

    done = [trial for trial in study.trials if trial.state == TrialState.COMPLETE]
    if not done:
        raise FinfusionError("no trial of the sweep completed (all pruned or failed): nothing to write")
    best = study.best_trial
    path = save_config(with_values(cfg, best.params), sweep_dir / BEST_CONFIG)
    rows = [
        {"number": t.number, "state": t.state.name.lower(), "params": t.params, f"best_{monitor}": t.value}
        for t in study.trials
    ]
    write_json_atomic(sweep_dir / TRIALS_FILE, rows)
    return SweepResult(len(study.trials), best.number, float(best.value), dict(best.params), path, monitor)
