"""What a model family states in one place, and the config check every family shares.

A family (forecast, movement, portfolio, ...) is one module with one `Family` subclass instance that says:

- `sections`: the keys each config section may hold (checked on load: an unknown or misspelled key is an error that
  names it and the allowed keys); `model` is checked against the model's constructor, `task` + `optim` against the
  task's;
- `tasks`: the Lightning tasks (training/tasks.py names) that train its models;
- `data(cfg, state)`: its datasets from the lake (`FamilyData`): fitting what it fits (normalisers, split instants,
  the universe) only when `state` is None (training) and reusing the stored `state` otherwise (predict, validate);
- `predict(run, span)`: a trained run's predictions (`Predictions`), which know how they become a lake table;
- `evaluate(cfg, run_dir, progress)`: the family's honest evaluation (selection on validation, test scored once);
- `serving_config(...)` and `predict_between(run, start, end)`: what the serve jobs need (serving/family_steps.py).

The pipeline (`families/pipeline.py`) does the rest the same way for every family: build and check the model, train
through the one Trainer path, write and read the run folder.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from omegaconf import DictConfig

from finfusion.config import plain
from finfusion.errors import FinfusionError

if TYPE_CHECKING:
    import polars as pl
    from torch.utils.data import DataLoader, Dataset

    from finfusion.data.lake import Lake, WriteResult
    from finfusion.families.pipeline import LoadedRun

#: Top-level keys of every experiment config.
TOP_LEVEL = frozenset({"name", "label", "data", "model", "task", "optim", "trainer", "evaluation", "sweep"})
#: The `optim` part: AdamW with linear warm-up and cosine decay (training/schedule.py), the same for every task.
OPTIM_KEYS = frozenset({"lr", "weight_decay", "warmup_fraction", "total_steps", "min_lr_ratio", "extra_groups"})
#: A section whose keys are not checked here (validated by the code that reads it, e.g. data.synthetic).
FREE = None
Progress = Callable[[str], None]


@dataclass
class FamilyData:
    """A family's datasets and what was fitted to make them.

    `train`, `val`, `test`: datasets of sample dicts (samples/contract.py keys);
    `loader(dataset, shuffle=False, seed=0)` batches them;
    `model_arguments`: constructor arguments the data determines (e.g. n_channels, context_length), filled in when
    the model part leaves them out;
    `state`: JSON-able fitted state (normalisers, split instants, universe, vocabularies) written to the run folder
    and handed back to `Family.data` at prediction time.
    """

    train: Dataset
    val: Dataset
    test: Dataset
    loader: Callable[..., DataLoader]
    model_arguments: dict[str, Any]
    state: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def sample_keys(self) -> frozenset[str]:
        """The keys of this data's samples (read off its first sample)."""
        for part in (self.train, self.val, self.test):
            if len(part):
                return frozenset(part[0])
        raise FinfusionError("the data has no samples in any split")


class Predictions(Protocol):
    """A family's predictions for one span: rows for the lake and a short summary for the command line."""

    def __len__(self) -> int: ...

    def frame(self) -> Any:
        """The rows of the family's lake table (polars DataFrame)."""

    def write(self, lake: Lake, name: str, run_dir: Path) -> WriteResult:
        """Merge the rows into the lake table `name` (the run folder's name)."""

    def summary(self) -> list[tuple[str, str]]:
        """(label, value) lines describing what was predicted."""

    def export(self, path: Path) -> Path:
        """Write the predictions to a file (the suffixes the family supports)."""


@dataclass(frozen=True)
class TableRows:
    """Predictions held as rows of one lake table: the table's `kind` (data/schema.py) and `what` they are called in
    messages; a family adds `summary`."""

    rows: pl.DataFrame
    kind: ClassVar[str] = ""
    what: ClassVar[str] = ""

    def __len__(self) -> int:
        return self.rows.height

    def frame(self) -> pl.DataFrame:
        return self.rows

    def write(self, lake: Lake, name: str, run_dir: Path) -> WriteResult:
        from finfusion.data.lake import check_name
        from finfusion.data.schema import SCHEMAS

        metadata = {"run": str(run_dir.resolve())}
        return lake.write(SCHEMAS[self.kind], check_name(name, "run name"), self.rows, metadata=metadata)

    def export(self, path: Path) -> Path:
        return export_parquet(self.rows, path, self.what)


@dataclass(frozen=True)
class EvaluationResult:
    """A family's evaluation: test metrics per model (baselines named), lines to print (tests, files written), and
    `write_page(path, command, title)`, which writes the results page (Markdown) with the command that made it."""

    models: dict[str, dict[str, float]]
    baselines: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    write_page: Callable[[Path, str, str], Path] | None = None


@dataclass(frozen=True)
class Sources:
    """The lake datasets a serving pipeline names: bars at `freq`, their features, and texts (None: none)."""

    bars: str
    freq: str
    features: str
    texts: str | None


class Family(ABC):
    """One model family (see the module docstring)."""

    name: ClassVar[str]
    #: The lake table (data/schema.py kind) its predictions are written to.
    table: ClassVar[str]
    tasks: ClassVar[tuple[str, ...]]
    #: Tasks a model part may bring of its own (`model.task.name`) besides `tasks` (the universal family's
    #: pre-training runs the generative forecaster's own task).
    model_tasks: ClassVar[tuple[str, ...]] = ()
    #: Prediction spans `predict` accepts.
    spans: ClassVar[tuple[str, ...]]
    #: Allowed keys per section; a nested mapping checks a sub-section, FREE leaves it to its reader.
    sections: ClassVar[Mapping[str, Mapping[str, Any] | None]]

    def check(self, cfg: DictConfig) -> None:
        """Raise FinfusionError naming the first unknown key of any section (and the allowed keys)."""
        given = plain(cfg)
        _check_keys(given, dict.fromkeys(TOP_LEVEL), "")
        for section, allowed in self.sections.items():
            if allowed is not FREE and isinstance(given.get(section), Mapping):
                _check_keys(given[section], allowed, f"{section}.")
        _check_model(given.get("model", {}))
        _check_task(given.get("task", {}), given.get("optim", {}))
        self._check_model_task(given)

    def _check_model_task(self, given: Mapping[str, Any]) -> None:
        """A model part that trains with a task of its own (e.g. the diffusion forecaster's generative task) must
        name one of this family's tasks: `task.name=movement` with such a model part would train another task."""
        from finfusion.models.build import TASK_KEY

        own = given.get("model", {}).get(TASK_KEY, {}) if isinstance(given.get("model"), Mapping) else {}
        name = own.get("name") if isinstance(own, Mapping) else None
        if name is not None and str(name) not in (*self.tasks, *self.model_tasks):
            raise FinfusionError(
                f"config: task.name is '{given.get('task', {}).get('name')}' ({self.name} family) but the model part "
                f"'{given['model'].get('name')}' trains with its own task '{name}', which the {self.name} family "
                f"does not run (its tasks: {', '.join((*self.tasks, *self.model_tasks))}); choose a model of the family"
            )

    @abstractmethod
    def data(self, cfg: DictConfig, state: Mapping[str, Any] | None = None) -> FamilyData:
        """The family's datasets (see `FamilyData`)."""

    @abstractmethod
    def predict(self, run: LoadedRun, span: str) -> Predictions:
        """Predictions of a trained run over one of `spans`."""

    @abstractmethod
    def evaluate(self, cfg: DictConfig, run_dir: Path, progress: Progress) -> EvaluationResult:
        """The family's evaluation of the experiment `cfg` into `run_dir`."""

    @abstractmethod
    def serving_config(
        self, cfg: DictConfig, lake: Lake, sources: Sources, train_end: datetime, val_end: datetime
    ) -> DictConfig:
        """`cfg` pointed at the serving pipeline's lake and datasets, split at `train_end` (training samples end
        before it, future included) and `val_end` (validation samples start at `train_end` and end before it)."""

    @abstractmethod
    def predict_between(self, run: LoadedRun, start: datetime | None, end: datetime) -> pl.DataFrame:
        """Rows of the family's lake table (`table`) for every decision start < t <= end that has a full lookback,
        its future known or not (none: an empty frame)."""

    def explain(self, run: LoadedRun, symbol: str, day: date, span: str, steps: int, planted: bool) -> dict[str, Any]:
        """{"decision": the explanation of the run's decision for `symbol` on `day` in `span`} (the layout of
        evaluation/explanation.py: attributions per input, per text, attention, permutation importance); with
        `planted` (forecast runs), also "planted": how often the synthetic market's planted news item is the text that
        moved a forecast most, over the span. Families without explanations say so."""
        raise FinfusionError(
            f"the {self.name} family has no explanations yet (finfusion explain: forecast, movement, portfolio, "
            "universal, relevance, token_classification and orderbook runs)"
        )


def shuffled_loader(batch_size: int, workers: int, drop_short_last: bool = False) -> Callable[..., DataLoader]:
    """A `FamilyData.loader` batching sample dicts (samples/windows.py collate); shuffled by torch's global RNG,
    which the trainer seeds per (seed, epoch) (training/resume.py). `drop_short_last`: the shuffled loader drops a
    short last batch (a model with batch normalisation cannot train on a batch of one)."""

    def loader(dataset: Any, shuffle: bool = False, seed: int = 0) -> DataLoader:
        from torch.utils.data import DataLoader

        from finfusion.samples.windows import collate

        del seed  # the order comes from torch's global RNG, seeded by the trainer
        return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, drop_last=shuffle and drop_short_last,
                          num_workers=workers, collate_fn=collate)  # fmt: skip

    return loader


def export_parquet(rows: pl.DataFrame, path: Path, what: str) -> Path:
    """Write a family's prediction rows to `path` atomically; `what` names them in the error for another suffix."""
    from finfusion.data.atomic import atomic_path

    if path.suffix != ".parquet":
        raise FinfusionError(f"{path}: {what} export to .parquet")
    with atomic_path(path) as tmp:
        rows.write_parquet(tmp)
    return path


class LazySections(Mapping[str, Any]):
    """Sections' allowed keys read, when first checked, from the modules that define their defaults (so that finding
    a family imports nothing heavy)."""

    def __init__(self, **readers: Callable[[], Mapping[str, Any] | None]) -> None:
        self._readers = readers

    def __getitem__(self, key: str) -> Mapping[str, Any] | None:
        return self._readers[key]()

    def __iter__(self) -> Iterator[str]:
        return iter(self._readers)

    def __len__(self) -> int:
        return len(self._readers)


def trainer_keys() -> Mapping[str, Any]:
    """The `trainer` part's keys (training/trainer.py TRAINER_DEFAULTS), shared by every family."""
    from finfusion.training.trainer import TRAINER_DEFAULTS

    return TRAINER_DEFAULTS


def _check_keys(given: Mapping[str, Any], allowed: Mapping[str, Any], where: str) -> None:
    unknown = [str(key) for key in given if key not in allowed]
    if unknown:
        raise FinfusionError(
            f"config: unknown key '{where}{unknown[0]}'; allowed in {where.rstrip('.') or 'the top level'}: "
            f"{', '.join(sorted(allowed))}"
        )
    for key, sub in allowed.items():
        if isinstance(sub, Mapping) and isinstance(given.get(key), Mapping):
            _check_keys(given[key], sub, f"{where}{key}.")


def _check_model(model: Mapping[str, Any]) -> None:
    """The model part's keys against the registered class's constructor (data-determined arguments included)."""
    from finfusion.models.build import TASK_KEY
    from finfusion.models.registry import model_class

    if "name" not in model:
        raise FinfusionError("config: the model part has no 'name'")
    try:
        cls = model_class(str(model["name"]))
    except KeyError as exc:
        raise FinfusionError(f"config: model.name: {exc.args[0]}") from exc
    accepted = {name for name in inspect.signature(cls.__init__).parameters if name != "self"}
    _check_keys(model, dict.fromkeys({"name", TASK_KEY, *accepted}), "model.")


def _check_task(task: Mapping[str, Any], optim: Mapping[str, Any]) -> None:
    """`task` keys against the task's constructor, `optim` against `OPTIM_KEYS`."""
    from finfusion.training.tasks import task_class

    if "name" not in task:
        raise FinfusionError("config: the task part has no 'name'")
    try:
        cls = task_class(str(task["name"]))
    except KeyError as exc:
        raise FinfusionError(f"config: task.name: {exc.args[0]}") from exc
    accepted = {name for name in inspect.signature(cls.__init__).parameters if name not in ("self", "model")}
    _check_keys(task, dict.fromkeys({"name", *(accepted - OPTIM_KEYS)}), "task.")
    _check_keys(optim, dict.fromkeys(OPTIM_KEYS & accepted), "optim.")
