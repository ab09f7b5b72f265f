"""The portfolio family: long/short weights over a universe from its prices and news (the Cross-Gated Attention
model of seed 002, and its price-only twin with `model.use_news: false`).

- Config: `data` (portfolio/inputs.py keys, plus `lake`), `model` (models/portfolio/cga.py), `task` (portfolio),
  `optim`, `trainer`, `evaluation` (periods_per_year, rebalance_every, initial_capital, cash_rate, costs).
- Samples (samples/portfolio.py, A assets, L lookback, F features): `past` [A, L, F], `past_mask` [A, L],
  `returns` over the horizon, and with news `news_emb`, `news_mask`, `news_coverage`.
- State: the universe (asset order), the normaliser fitted before `train_end`, the text dimension.
- Predictions: top-k weights per decision bar, the lake's weights table (dataset = run name).
- Evaluation: the model trained with selection on validation, its weights at every `rebalance_every`-th bar of the
  test span backtested with costs against the equal-weight portfolio rebalanced at the same bars.
- Explanations: a symbol's weight attributed to its inputs, the other assets' and each text (portfolio/explain.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig

from finfusion.errors import FinfusionError
from finfusion.families.base import (
    FREE,
    EvaluationResult,
    Family,
    FamilyData,
    LazySections,
    Progress,
    Sources,
    export_parquet,
    trainer_keys,
)

if TYPE_CHECKING:
    import polars as pl

    from finfusion.data.lake import Lake, WriteResult
    from finfusion.evaluation.weights_backtest import PortfolioEvaluation
    from finfusion.families.pipeline import LoadedRun

DATA_KEYS: dict[str, Any] = dict.fromkeys(
    (
        "lake", "bars", "freq", "features", "texts", "encoder", "symbols", "inputs", "lookback", "horizon", "stride",
        "train_end", "val_end", "batch_size",
    )
)  # fmt: skip
EVALUATION_KEYS: dict[str, Any] = {
    **dict.fromkeys(("periods_per_year", "rebalance_every", "initial_capital", "cash_rate")),
    "costs": FREE,
}


def _uses_news(cfg: DictConfig) -> bool:
    return bool(cfg.model.get("use_news", True))


@dataclass
class WeightPredictions:
    """Weights [ts, symbol, weight, model_version] decided at each bar of a span."""

    weights: pl.DataFrame
    k: int

    def __len__(self) -> int:
        return self.weights.height

    def frame(self) -> pl.DataFrame:
        return self.weights

    def write(self, lake: Lake, name: str, run_dir: Path) -> WriteResult:
        from finfusion.data.lake import check_name
        from finfusion.data.schema import WEIGHTS

        metadata = {"run": str(run_dir.resolve()), "k": self.k}
        return lake.write(WEIGHTS, check_name(name, "run name"), self.weights, metadata=metadata)

    def summary(self) -> list[tuple[str, str]]:
        decisions = self.weights["ts"].unique().sort()
        if decisions.is_empty():
            return [("decisions", "0")]
        span = f"{decisions.len():,} decisions, {decisions[0]} .. {decisions[-1]}"
        return [("weights", span), ("symbols", f"{self.weights['symbol'].n_unique():,}")]

    def export(self, path: Path) -> Path:
        return export_parquet(self.weights, path, "portfolio weights")


#: One microsecond: turns a closed span end into the half-open bounds of `PortfolioDataset.split`.
TICK = timedelta(microseconds=1)


class PortfolioFamily(Family):
    name = "portfolio"
    table = "weights"
    tasks = ("portfolio",)
    spans = ("test", "val", "all")
    sections = LazySections(data=lambda: DATA_KEYS, evaluation=lambda: EVALUATION_KEYS, trainer=trainer_keys)

    def data(self, cfg: DictConfig, state: Mapping[str, Any] | None = None) -> FamilyData:
        from finfusion.data.lake import Lake
        from finfusion.features.normalize import FittedNormalizer
        from finfusion.portfolio.inputs import build_data, load_inputs, loader, split_windows, window_config
        from finfusion.samples.portfolio import PortfolioDataset

        lake = Lake(cfg.data.get("lake"))
        config = window_config(cfg.data)
        inputs = load_inputs(lake, cfg.data, news=_uses_news(cfg))
        if state is None:
            data = build_data(inputs, config)
        else:
            normalizer = FittedNormalizer.from_dict(state["normalizer"])
            data = build_data(inputs, config, normalizer=normalizer, symbols=list(state["symbols"]))
        splits = split_windows(PortfolioDataset(data, config), cfg.data)
        text_dim = None if data.news is None else int(data.news.dim)
        batch_size = int(cfg.data.batch_size)

        def batches(dataset: PortfolioDataset, shuffle: bool = False, seed: int = 0) -> Any:
            return loader(dataset, batch_size, shuffle=shuffle, seed=seed)

        arguments: dict[str, Any] = {"n_features": len(config.inputs), "n_assets": len(data.symbols)}
        if text_dim is not None:
            arguments["text_dim"] = text_dim
        return FamilyData(
            train=splits.train,
            val=splits.val,
            test=splits.test,
            loader=batches,
            model_arguments=arguments,
            state={"symbols": list(data.symbols), "normalizer": data.normalizer.to_dict(), "text_dim": text_dim},
            extra={"portfolio": data, "lake": lake, "inputs": inputs},
        )

    def predict(self, run: LoadedRun, span: str, every: int = 1) -> WeightPredictions:
        from finfusion.portfolio.inputs import span_bounds, window_config
        from finfusion.portfolio.predict import model_weights, weights_frame
        from finfusion.samples.portfolio import PortfolioDataset

        cfg = run.cfg
        config = window_config(cfg.data, require_future=False, stride=every)
        start, end = span_bounds(cfg.data, span)
        decisions = PortfolioDataset(run.data.extra["portfolio"], config).split(start, end, purge=False)
        if len(decisions) == 0:
            raise FinfusionError(f"no decision bar with a full lookback in the {span} span")
        k = int(cfg.task.k)
        weights = model_weights(run.model, decisions, k, int(cfg.data.batch_size))
        symbols = list(run.data.state["symbols"])
        return WeightPredictions(weights_frame(decisions.origins_us, symbols, weights, run.run_dir.name), k)

    def serving_config(
        self, cfg: DictConfig, lake: Lake, sources: Sources, train_end: datetime, val_end: datetime
    ) -> DictConfig:
        from omegaconf import OmegaConf, open_dict

        served = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
        texts = None
        if _uses_news(cfg):
            texts = sources.texts or sources.bars
            if not lake.files("text", texts):
                raise FinfusionError(
                    f"the model reads news but {lake.root} has no text dataset '{texts}': ingest texts (serve job "
                    "ingest --texts) or serve the price-only twin (model.use_news=false)"
                )
        with open_dict(served):
            served.data.update(
                {
                    "lake": str(lake.root),
                    "bars": sources.bars,
                    "freq": sources.freq,
                    "features": sources.features,
                    "texts": texts,
                    "train_end": train_end.isoformat(),
                    "val_end": val_end.isoformat(),
                }
            )
        return served

    def predict_between(self, run: LoadedRun, start: datetime | None, end: datetime) -> pl.DataFrame:
        from dataclasses import replace

        from finfusion.portfolio.inputs import window_config
        from finfusion.portfolio.predict import model_weights, weights_frame
        from finfusion.samples.portfolio import PortfolioDataset

        config = replace(window_config(run.cfg.data, require_future=False), stride=1)
        first = None if start is None else start + TICK
        decisions = PortfolioDataset(run.data.extra["portfolio"], config).split(first, end + TICK, purge=False)
        weights = model_weights(run.model, decisions, int(run.cfg.task.k), int(run.cfg.data.batch_size))
        symbols = list(run.data.state["symbols"])
        return weights_frame(decisions.origins_us, symbols, weights, "").drop("model_version")

    def explain(self, run: LoadedRun, symbol: str, day: date, span: str, steps: int, planted: bool) -> dict[str, Any]:
        from finfusion.portfolio.explain import explain_weight

        if planted:
            raise FinfusionError("--planted: the planted-news rate is measured on forecast runs, not portfolio runs")
        data, inputs = run.data.extra["portfolio"], run.data.extra["inputs"]
        explained = explain_weight(run.model, data, inputs, run.cfg, symbol, day, span, steps)
        return {"decision": explained.as_dict()}

    def evaluate(self, cfg: DictConfig, run_dir: Path, progress: Progress) -> EvaluationResult:
        from finfusion.families.pipeline import train_run

        progress(f"training {cfg.model.name} (selection on validation) into {run_dir / 'model'}")
        run = train_run(cfg, run_dir / "model", resume="never")
        model, equal = backtest_test_span(run)
        label = "price_only" if not _uses_news(cfg) else str(cfg.model.name)
        decisions = model.weights["ts"].n_unique()
        return EvaluationResult(
            models={label: model.kpis, "equal_weight": equal.kpis},
            baselines=("equal_weight",),
            notes=(f"test span from {cfg.data.val_end}: {decisions:,} decisions, costs included",),
        )


def backtest_test_span(run: LoadedRun) -> tuple[PortfolioEvaluation, PortfolioEvaluation]:
    """The backtests with costs of the run's weights at every `evaluation.rebalance_every`-th bar of the test span
    (from `data.val_end`, which no training or validation window reaches) and of the equal-weight portfolio
    rebalanced at the same bars; the weights are also written to the run's lake (dataset = run folder name)."""
    from finfusion.evaluation.weights_backtest import equal_weights, evaluate_weights

    cfg = run.cfg
    predictions = FAMILY.predict(run, "test", every=int(cfg.evaluation.get("rebalance_every", 1)))
    lake = run.data.extra["lake"]
    predictions.write(lake, run.run_dir.name, run.run_dir)
    bars = lake.read("bars", str(cfg.data.bars), freq=str(cfg.data.freq))
    model = evaluate_weights(predictions.weights, bars, cfg.evaluation)
    equal = evaluate_weights(equal_weights(model.weights["ts"], run.data.state["symbols"]), bars, cfg.evaluation)
    return model, equal


FAMILY = PortfolioFamily()
