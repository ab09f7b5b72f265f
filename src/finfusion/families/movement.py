"""The movement family: up / down classification of the next session (the StockNet / ACL18 models: price GRU,
tweets-only and price-queried fusion, models/movement/).

- Config: `data` (lake, dataset, encoder, lag_days, max_tweets, batch_size), `model`, `task` (movement), `optim`,
  `trainer`, `evaluation` (seeds).
- Samples (samples/acl18.py, L lag days, N tweets, C price channels, D text dim): `past` [L, C], `past_mask` [L],
  `text_emb` [L, N, D], `text_mask` [L, N], `text_age` [L, N], `label`, `symbol_index`, `origin_us`. Splits: the
  published train / dev / test days; dev is the validation split.
- State: the price channels' normaliser (fitted before the train split's end).
- Predictions: P(up) and the predicted class per (symbol, decision), the lake's movements table.
- Evaluation: per seed, the checkpoint with the best dev score, scored on dev and once on test (accuracy, MCC, F1 of
  the up class), beside the majority class of the training labels.
- Explanations: the predicted class's probability attributed to the price channels, lag days and tweets
  (families/movement_explain.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from omegaconf import DictConfig

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
    from finfusion.samples.acl18 import ACL18Samples

DATA_KEYS: dict[str, Any] = dict.fromkeys(("lake", "dataset", "encoder", "lag_days", "max_tweets", "batch_size"))
EVALUATION_KEYS: dict[str, Any] = dict.fromkeys(("seeds",))
#: Prediction span -> ACL18 split.
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
    """One experiment and seed: the epoch chosen on dev, its dev scores, its test scores (None when dev only)."""

    experiment: str
    seed: int
    epoch: int
    dev: Scores
    test: Scores | None
    seconds: float


def family_data(samples: ACL18Samples, cfg: DictConfig) -> FamilyData:
    """The family's view of built ACL18 samples: train / dev / test, batches of `data.batch_size`."""
    from finfusion.samples.acl18 import PRICE_CHANNELS

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
    )


class MovementFamily(Family):
    name = "movement"
    table = "movements"
    tasks = ("movement",)
    spans = tuple(SPLIT_OF_SPAN)
    sections = LazySections(data=lambda: DATA_KEYS, evaluation=lambda: EVALUATION_KEYS, trainer=trainer_keys)

    def data(self, cfg: DictConfig, state: Mapping[str, Any] | None = None) -> FamilyData:
        from finfusion.data.lake import Lake
        from finfusion.features.normalize import FittedNormalizer
        from finfusion.samples.acl18 import ACL18Config
        from finfusion.samples.acl18_lake import load_acl18

        options = cfg.data
        config = ACL18Config(lag_days=int(options.lag_days), max_tweets=int(options.max_tweets))
        normalizer = None if state is None else FittedNormalizer.from_dict(state["normalizer"])
        lake = Lake(options.get("lake"))
        return family_data(load_acl18(lake, str(options.dataset), str(options.encoder), config, normalizer), cfg)

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
        seeds = [int(seed) for seed in cfg.get("evaluation", {}).get("seeds", [0])]
        data = self.data(cfg)
        results = []
        for seed in seeds:
            result = evaluate_seed(cfg, seed, run_dir / f"seed{seed}", data)
            progress(f"seed {seed}: epoch {result.epoch} chosen on dev (MCC {result.dev.mcc:.4f})")
            results.append(result)
        labels = data.test.labels
        majority = int(np.mean(data.train.labels) >= 0.5)
        tests = [result.test for result in results if result.test is not None]
        mean = {name: float(np.mean([getattr(test, name) for test in tests])) for name in SCORE_NAMES}
        return EvaluationResult(
            models={
                str(cfg.get("name", cfg.model.name)): mean,
                "majority_class": asdict(scores(labels, np.full_like(labels, majority))),
            },
            baselines=("majority_class",),
            notes=(f"test split scored once per seed ({', '.join(map(str, seeds))}); selection on dev",),
        )


FAMILY = MovementFamily()
