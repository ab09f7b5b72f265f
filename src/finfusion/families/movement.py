"""The movement family: up / down classification of the next k sessions on any daily lake dataset (the StockNet /
ACL18 models: price GRU, tweets-only and price-queried fusion, models/movement/), the StockNet benchmark among them.

- Config: `data` (lake, dataset: the bars; texts: a text dataset or null; encoder, lag_days, max_tweets, batch_size;
  horizon k, up_threshold / down_threshold (the dead band), decimals (movement rounding, null: none), splits ('acl18'
  or {train, dev, test: [start, end]}), text_days (published or stocknet_files), text_scope (symbol or market),
  label (move: the sign of the k-session move; given: the bars' own label column)),
  `model`, `task` (movement), `optim`, `trainer`, `evaluation` (seeds, folds, twins, placebo_seed).
- Samples (samples/daily_movement.py, L lag days, N texts per step, C price channels, D text dim): `past` [L, C],
  `past_mask` [L], `text_emb` [L, N, D], `text_mask` [L, N], `text_age` [L, N] (no text keys without texts),
  `label`, `symbol_index`, `origin_us`. dev is the validation split.
- State: the price channels' normaliser (fitted before the train split's end).
- Predictions: P(up) and the predicted class per (symbol, decision), the lake's movements table.
- Evaluation (families/movement_evaluation.py): walk-forward folds; per seed the checkpoint with the best dev score,
  scored once on test beside the price-only and placebo twins and the direction baselines, with paired tests.
- Explanations: the predicted class's probability attributed to the price channels, lag days and texts
  (families/movement_explain.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from omegaconf import DictConfig, OmegaConf

from finfusion.errors import FinfusionError
from finfusion.families.base import (
    EvaluationResult,
    Family,
    FamilyData,
    LazySections,
    Progress,
    Sources,
    TableRows,
    trainer_keys,
)

if TYPE_CHECKING:
    import polars as pl

    from finfusion.data.lake import Lake
    from finfusion.families.pipeline import LoadedRun
    from finfusion.samples.daily_movement import DailyMovementConfig, DailyMovementSamples
    from finfusion.samples.daily_movement_lake import DailyInputs

#: The data keys and their defaults (None: required, or null allowed as written).
DATA_DEFAULTS: dict[str, Any] = {
    "lake": None,
    "dataset": None,
    "texts": None,
    "encoder": "all-MiniLM-L6-v2",
    "lag_days": 5,
    "max_tweets": 30,
    "batch_size": 64,
    "horizon": 1,
    "up_threshold": 0.0,
    "down_threshold": 0.0,
    "decimals": None,
    "splits": None,
    "text_days": "published",
    "text_scope": "symbol",
    "label": "move",
}


def evaluation_keys() -> Mapping[str, Any]:
    from finfusion.families.movement_evaluation import EVALUATION_DEFAULTS

    return EVALUATION_DEFAULTS


#: Prediction span -> split.
SPLIT_OF_SPAN = {"train": "train", "val": "dev", "test": "test"}


@dataclass(frozen=True)
class MovementPredictions(TableRows):
    """P(up) [M], predicted class [M] and realised label [M] per (symbol, decision instant)."""

    kind: ClassVar[str] = "movements"
    what: ClassVar[str] = "movement predictions"

    def summary(self) -> list[tuple[str, str]]:
        labels, predicted = self.rows["label"].to_numpy(), self.rows["predicted"].to_numpy()
        lines = [("decisions", f"{self.rows.height:,} over {self.rows['symbol'].n_unique():,} symbols")]
        if len(labels):
            result = scores(labels, predicted)
            lines += [("predicted up", f"{float(np.mean(predicted)):.2%}")]
            lines += [("accuracy / MCC", f"{result.accuracy:.4f} / {result.mcc:.4f}")]
        return lines


def movement_rows(model: Any, dataset: Any, symbols: tuple[str, ...], batch_size: int) -> pl.DataFrame:
    """MOVEMENTS rows of `model` over an ACL18 dataset: P(up) = softmax(logits)[:, 1], the argmax class of the logits
    and the label."""
    import polars as pl
    import torch

    from finfusion.data.calendar import from_us

    model.eval()
    probs, classes, origins, symbol_index = [], [], [], []
    with torch.inference_mode():
        for batch in dataset.loader(batch_size, shuffle=False):
            logits = model(batch)["logits"]
            probs.append(torch.softmax(logits, dim=-1)[:, 1].numpy())
            classes.append(logits.argmax(dim=-1).numpy())
            origins.append(batch["origin_us"].numpy())
            symbol_index.append(batch["symbol_index"].numpy())
    prob_up = np.concatenate(probs) if probs else np.zeros(0)
    index = np.concatenate(symbol_index) if symbol_index else np.zeros(0, dtype=np.int64)
    return pl.DataFrame(
        {
            "symbol": [symbols[i] for i in index],
            "origin_ts": from_us(np.concatenate(origins) if origins else np.zeros(0, dtype=np.int64), "origin_ts"),
            "prob_up": prob_up.astype(np.float64),
            "predicted": np.concatenate(classes).astype(np.int64) if classes else np.zeros(0, dtype=np.int64),
            "label": dataset.labels.astype(np.int64),
        }
    )


@dataclass(frozen=True)
class Scores:
    """Accuracy, MCC and F1 of the up class of predicted labels."""

    accuracy: float
    mcc: float
    f1: float


SCORE_NAMES = ("accuracy", "mcc", "f1")


def scores(labels: np.ndarray, predicted: np.ndarray) -> Scores:
    """Scores of `predicted` [M] against `labels` [M] (0 down, 1 up)."""
    from finfusion.errors import FinfusionError
    from finfusion.evaluation.metric_registry import metric_table

    if labels.shape != predicted.shape or labels.size == 0:
        raise FinfusionError(f"cannot score {predicted.size} predictions against {labels.size} labels")
    table = metric_table(labels=labels, predicted=predicted, names=("accuracy", "mcc", "f1_up"))
    return Scores(accuracy=table["accuracy"], mcc=table["mcc"], f1=table["f1_up"])


@dataclass(frozen=True)
class SeedResult:
    """One experiment and seed: the epoch chosen on dev, its dev scores, its test scores and P(up) per test target
    [M_test] (None when dev only)."""

    experiment: str
    seed: int
    epoch: int
    dev: Scores
    test: Scores | None
    seconds: float
    test_prob: np.ndarray | None = None


def family_data(samples: DailyMovementSamples, cfg: DictConfig) -> FamilyData:
    """The family's view of built ACL18 samples: train / dev / test, batches of `data.batch_size`."""
    from finfusion.samples.daily_movement import PRICE_CHANNELS

    batch_size = int(cfg.data.batch_size)

    def batches(dataset: Any, shuffle: bool = False, seed: int = 0) -> Any:
        return dataset.loader(batch_size, shuffle=shuffle, seed=seed)

    arguments = {
        "n_channels": len(PRICE_CHANNELS),
        "text_dim": int(samples.vectors.shape[1]),
        "lag_days": samples.config.lag_days,
    }
    return FamilyData(
        train=samples.dataset("train"),
        val=samples.dataset("dev"),
        test=samples.dataset("test"),
        loader=batches,
        model_arguments=arguments,
        state={"normalizer": samples.normalizer.to_dict()},
        extra={"samples": samples},
    )


def evaluate_seed(
    cfg: DictConfig, seed: int, run_dir: Path, data: FamilyData, evaluate_test: bool = True
) -> SeedResult:
    """Train `cfg` with `seed` into a fresh `run_dir`, keep the checkpoint with the best dev score (the trainer's
    monitor), score it on dev and, unless `evaluate_test` is False, once on test."""
    import shutil
    import time

    import torch
    from omegaconf import OmegaConf

    from finfusion.errors import FinfusionError
    from finfusion.families.pipeline import train_run

    started = time.perf_counter()
    if run_dir.exists():
        shutil.rmtree(run_dir)
    seeded = OmegaConf.merge(cfg, {"trainer": {"seed": seed}})
    run = train_run(seeded, run_dir, resume="never", data=data)
    if run.best_checkpoint is None:
        raise FinfusionError(f"{run_dir}: training saved no checkpoint to select on dev")
    epoch = int(torch.load(run.best_checkpoint, map_location="cpu", weights_only=True)["epoch"])
    samples = data.extra["samples"]
    batch_size = int(cfg.data.batch_size)
    dev = movement_rows(run.model, samples.dataset("dev"), samples.symbols, batch_size)
    test = movement_rows(run.model, samples.dataset("test"), samples.symbols, batch_size) if evaluate_test else None
    return SeedResult(
        experiment=str(cfg.get("name", cfg.model.name)),
        seed=seed,
        epoch=epoch,
        dev=scores(dev["label"].to_numpy(), dev["predicted"].to_numpy()),
        test=None if test is None else scores(test["label"].to_numpy(), test["predicted"].to_numpy()),
        seconds=time.perf_counter() - started,
        test_prob=None if test is None else test["prob_up"].to_numpy(),
    )


class MovementFamily(Family):
    name = "movement"
    table = "movements"
    tasks = ("movement",)
    spans = tuple(SPLIT_OF_SPAN)
    sections = LazySections(data=lambda: DATA_DEFAULTS, evaluation=evaluation_keys, trainer=trainer_keys)

    def data(self, cfg: DictConfig, state: Mapping[str, Any] | None = None) -> FamilyData:
        from finfusion.features.normalize import FittedNormalizer

        normalizer = None if state is None else FittedNormalizer.from_dict(state["normalizer"])
        return family_data(daily_inputs(cfg).build(daily_config(cfg), normalizer), cfg)

    def predict(self, run: LoadedRun, span: str) -> MovementPredictions:
        samples = run.data.extra["samples"]
        dataset = samples.dataset(SPLIT_OF_SPAN[span])
        return MovementPredictions(movement_rows(run.model, dataset, samples.symbols, int(run.cfg.data.batch_size)))

    def serving_config(
        self, cfg: DictConfig, lake: Lake, sources: Sources, train_end: datetime, val_end: datetime
    ) -> DictConfig:
        raise FinfusionError(
            "the movement family's samples use the published StockNet splits and day files; the serve jobs cannot "
            "move its split yet (movement on any dataset is issue 20)"
        )

    def predict_between(self, run: LoadedRun, start: datetime | None, end: datetime) -> pl.DataFrame:
        raise FinfusionError("the movement family is not served by the jobs yet (issue 20)")

    def explain(self, run: LoadedRun, symbol: str, day: date, span: str, steps: int, planted: bool) -> dict[str, Any]:
        from finfusion.families.movement_explain import explain_target

        if planted:
            raise FinfusionError("--planted: the planted-news rate is measured on forecast runs, not movement runs")
        samples = run.data.extra["samples"]
        explained = explain_target(run.model, samples, run.cfg, symbol, day, SPLIT_OF_SPAN[span], steps)
        return {"decision": explained.as_dict()}

    def evaluate(self, cfg: DictConfig, run_dir: Path, progress: Progress) -> EvaluationResult:
        from finfusion.families.movement_evaluation import evaluate_movement

        return evaluate_movement(cfg, daily_inputs(cfg), daily_config(cfg), run_dir, progress)


def data_options(cfg: DictConfig) -> dict[str, Any]:
    """The `data` part over DATA_DEFAULTS; the bars dataset and the splits are required."""
    options = {**DATA_DEFAULTS, **OmegaConf.to_container(cfg.data)}
    for key in ("dataset", "splits"):
        if options[key] is None:
            raise FinfusionError(f"config: data.{key} is required for a movement experiment")
    return options


def daily_config(cfg: DictConfig) -> DailyMovementConfig:
    """The samples' config from the `data` part."""
    from finfusion.families.movement_evaluation import splits_of
    from finfusion.samples.daily_movement import DailyMovementConfig

    options = data_options(cfg)
    decimals = options["decimals"]
    return DailyMovementConfig(
        lag_days=int(options["lag_days"]),
        max_tweets=int(options["max_tweets"]),
        up_threshold=float(options["up_threshold"]),
        down_threshold=float(options["down_threshold"]),
        decimals=None if decimals is None else int(decimals),
        horizon=int(options["horizon"]),
        splits=splits_of(options["splits"]),
        label=str(options["label"]),
    )


def daily_inputs(cfg: DictConfig) -> DailyInputs:
    """The bars and texts the `data` part names, read from its lake."""
    from finfusion.data.lake import Lake
    from finfusion.samples.daily_movement_lake import read_daily_inputs

    options = data_options(cfg)
    texts = None if options["texts"] is None else str(options["texts"])
    return read_daily_inputs(Lake(options["lake"]), str(options["dataset"]), texts, str(options["encoder"]),
                             str(options["text_days"]), str(options["text_scope"]))  # fmt: skip


FAMILY = MovementFamily()
