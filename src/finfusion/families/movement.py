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
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from omegaconf import DictConfig

from finfusion.families.base import EvaluationResult, Family, FamilyData, LazySections, Progress, trainer_keys

if TYPE_CHECKING:
    import polars as pl

    from finfusion.data.lake import Lake, WriteResult
    from finfusion.families.pipeline import LoadedRun

DATA_KEYS: dict[str, Any] = dict.fromkeys(("lake", "dataset", "encoder", "lag_days", "max_tweets", "batch_size"))
EVALUATION_KEYS: dict[str, Any] = dict.fromkeys(("seeds",))
#: Prediction span -> ACL18 split.
SPLIT_OF_SPAN = {"train": "train", "val": "dev", "test": "test"}


@dataclass
class MovementPredictions:
    """P(up) [M], predicted class [M] and realised label [M] per (symbol, decision instant)."""

    rows: pl.DataFrame

    def __len__(self) -> int:
        return self.rows.height

    def frame(self) -> pl.DataFrame:
        return self.rows

    def write(self, lake: Lake, name: str, run_dir: Path) -> WriteResult:
        from finfusion.data.lake import check_name
        from finfusion.data.schema import MOVEMENTS

        return lake.write(MOVEMENTS, check_name(name, "run name"), self.rows, metadata={"run": str(run_dir.resolve())})

    def summary(self) -> list[tuple[str, str]]:
        from finfusion.evaluation.metrics import mcc

        labels, predicted = self.rows["label"].to_numpy(), self.rows["predicted"].to_numpy()
        accuracy = float(np.mean(labels == predicted)) if len(labels) else float("nan")
        return [
            ("decisions", f"{self.rows.height:,} over {self.rows['symbol'].n_unique():,} symbols"),
            ("predicted up", f"{float(np.mean(predicted)) if len(predicted) else float('nan'):.2%}"),
            ("accuracy / MCC", f"{accuracy:.4f} / {mcc(labels, predicted):.4f}"),
        ]

    def export(self, path: Path) -> Path:
        from finfusion.data.atomic import atomic_path
        from finfusion.errors import FinfusionError

        if path.suffix != ".parquet":
            raise FinfusionError(f"{path}: movement predictions export to .parquet")
        with atomic_path(path) as tmp:
            self.rows.write_parquet(tmp)
        return path


def movement_rows(model: Any, dataset: Any, symbols: tuple[str, ...], batch_size: int) -> pl.DataFrame:
    """MOVEMENTS rows of `model` over an ACL18 dataset: P(up) = softmax(logits)[:, 1], the argmax class, the label."""
    import polars as pl
    import torch

    from finfusion.data.calendar import from_us

    model.eval()
    probs, origins, symbol_index = [], [], []
    with torch.inference_mode():
        for batch in dataset.loader(batch_size, shuffle=False):
            probs.append(torch.softmax(model(batch)["logits"], dim=-1)[:, 1].numpy())
            origins.append(batch["origin_us"].numpy())
            symbol_index.append(batch["symbol_index"].numpy())
    prob_up = np.concatenate(probs) if probs else np.zeros(0)
    index = np.concatenate(symbol_index) if symbol_index else np.zeros(0, dtype=np.int64)
    return pl.DataFrame(
        {
            "symbol": [symbols[i] for i in index],
            "origin_ts": from_us(np.concatenate(origins) if origins else np.zeros(0, dtype=np.int64), "origin_ts"),
            "prob_up": prob_up.astype(np.float64),
            "predicted": (prob_up > 0.5).astype(np.int64),
            "label": dataset.labels.astype(np.int64),
        }
    )


class MovementFamily(Family):
    name = "movement"
    tasks = ("movement",)
    spans = tuple(SPLIT_OF_SPAN)
    sections = LazySections(data=lambda: DATA_KEYS, evaluation=lambda: EVALUATION_KEYS, trainer=trainer_keys)

    def data(self, cfg: DictConfig, state: Mapping[str, Any] | None = None) -> FamilyData:
        from finfusion.data.lake import Lake
        from finfusion.features.normalize import FittedNormalizer
        from finfusion.samples.acl18 import PRICE_CHANNELS, ACL18Config
        from finfusion.samples.acl18_lake import load_acl18

        options = cfg.data
        config = ACL18Config(lag_days=int(options.lag_days), max_tweets=int(options.max_tweets))
        normalizer = None if state is None else FittedNormalizer.from_dict(state["normalizer"])
        lake = Lake(options.get("lake"))
        samples = load_acl18(lake, str(options.dataset), str(options.encoder), config, normalizer)
        batch_size = int(options.batch_size)
        seed = int(cfg.get("trainer", {}).get("seed", 0))

        def batches(dataset: Any, shuffle: bool = False) -> Any:
            return dataset.loader(batch_size, shuffle=shuffle, seed=seed)

        arguments = {
            "n_channels": len(PRICE_CHANNELS),
            "text_dim": int(samples.vectors.shape[1]),
            "lag_days": config.lag_days,
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

    def predict(self, run: LoadedRun, span: str) -> MovementPredictions:
        samples = run.data.extra["samples"]
        dataset = samples.dataset(SPLIT_OF_SPAN[span])
        return MovementPredictions(movement_rows(run.model, dataset, samples.symbols, int(run.cfg.data.batch_size)))

    def evaluate(self, cfg: DictConfig, run_dir: Path, progress: Progress) -> EvaluationResult:
        from omegaconf import OmegaConf

        from finfusion.acl18_benchmark import scores
        from finfusion.families.pipeline import train_run

        seeds = [int(seed) for seed in cfg.get("evaluation", {}).get("seeds", [0])]
        data = self.data(cfg)
        per_seed: list[dict[str, float]] = []
        for seed in seeds:
            seeded = OmegaConf.merge(cfg, {"trainer": {"seed": seed}})
            run = train_run(seeded, run_dir / f"seed{seed}", resume="never", data=data)
            test = self.predict(run, "test").rows
            dev = self.predict(run, "val").rows
            dev_scores = scores(dev["label"].to_numpy(), dev["predicted"].to_numpy())
            test_scores = scores(test["label"].to_numpy(), test["predicted"].to_numpy())
            progress(f"seed {seed}: dev accuracy {dev_scores.accuracy:.4f} MCC {dev_scores.mcc:.4f}")
            per_seed.append({"accuracy": test_scores.accuracy, "mcc": test_scores.mcc, "f1_up": test_scores.f1})
        labels = data.test.labels
        majority = int(np.mean(data.train.labels) >= 0.5)
        baseline = scores(labels, np.full_like(labels, majority))
        mean = {name: float(np.mean([row[name] for row in per_seed])) for name in per_seed[0]}
        return EvaluationResult(
            models={
                str(cfg.get("name", cfg.model.name)): mean,
                "majority_class": {"accuracy": baseline.accuracy, "mcc": baseline.mcc, "f1_up": baseline.f1},
            },
            baselines=("majority_class",),
            notes=(f"test split scored once per seed ({', '.join(map(str, seeds))}); selection on dev",),
        )


FAMILY = MovementFamily()
