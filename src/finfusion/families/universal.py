"""The universal family: pre-training a forecaster on many assets of a lake (Moirai, seed 003), forecasting assets it
never saw.

- Config: `data` (forecasting/universal.py UNIVERSAL_DEFAULTS), `model` (a generative forecaster: moirai), `task`
  (pretrain: the generative task's NLL training on these samples), `optim`, `trainer`, `evaluation`
  (UNIVERSAL_EVALUATION: the assets to forecast, baselines, Diebold-Mariano settings).
- Samples: windows from the iterative per-asset builder's shards (samples/universal.py): `past` [L, C] (the target
  ret_1 then the covariates), `past_mask` [L], `future` [H, 1], `future_mask` [H], `symbol_index`, `origin_us`.
- State: the split instants, the universe and the columns.
- Predictions: the lake's forecasts table (dataset = run name), like the forecast family's.
- Evaluation: pre-training with selection on validation, then the test span of `evaluation.symbols` forecast once.
- Explanations (`finfusion explain`): the mean of the next bar's forecast distribution of one asset and day, per
  lookback bar and channel (forecasting/universal_explain.py).

A pre-training run is also a checkpoint folder: a forecast experiment starts from it with `model.pretrained=RUN`
(zero-shot with `trainer.max_epochs=0`, fine-tuned otherwise).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
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
    shuffled_loader,
    trainer_keys,
)

if TYPE_CHECKING:
    import polars as pl

    from finfusion.data.lake import Lake
    from finfusion.families.forecast import ForecastPredictions
    from finfusion.families.pipeline import LoadedRun


def _data_keys() -> dict[str, Any]:
    from finfusion.forecasting.universal import UNIVERSAL_DEFAULTS

    return {**UNIVERSAL_DEFAULTS, "split": dict.fromkeys(("train_end", "val_end")), "synthetic": FREE}


def _evaluation_keys() -> dict[str, Any]:
    from finfusion.forecasting.universal import UNIVERSAL_EVALUATION

    return {**UNIVERSAL_EVALUATION, "baselines": FREE, "costs": FREE}


class UniversalFamily(Family):
    name = "universal"
    table = "forecasts"
    tasks = ("pretrain",)
    model_tasks = ("generative",)
    spans = ("test", "val")
    sections = LazySections(data=_data_keys, trainer=trainer_keys, evaluation=_evaluation_keys)

    def data(self, cfg: DictConfig, state: Mapping[str, Any] | None = None) -> FamilyData:

        from finfusion.forecasting.universal import shards_for, split_instants, split_masks, universal_options
        from finfusion.samples.universal import ShardWindows

        options = universal_options(cfg.data)
        if state is None:
            train_end, val_end = split_instants(options)
            index = shards_for(options)
        else:
            train_end, val_end = int(state["train_end_us"]), int(state["val_end_us"])
            index = shards_for(options, list(state["symbols"]))
            if index.columns != list(state["columns"]):
                raise FinfusionError(
                    f"the run was trained on columns {state['columns']}, the data gives {index.columns}"
                )
        windows = ShardWindows(index)
        masks = split_masks(windows, train_end, val_end)
        return FamilyData(
            train=windows.subset(masks["train"]),
            val=windows.subset(masks["val"]),
            test=windows.subset(masks["test"]),
            loader=shuffled_loader(int(options["batch_size"]), int(options["num_workers"])),
            model_arguments={
                "n_channels": len(index.columns),
                "target_index": [0],
                "context_length": int(options["lookback"]),
                "horizon": int(options["horizon"]),
                "freq": str(options["freq"]),
            },
            state={
                "train_end_us": train_end,
                "val_end_us": val_end,
                "symbols": index.symbols,
                "columns": index.columns,
            },
            extra={"options": options},
        )

    def predict(self, run: LoadedRun, span: str) -> ForecastPredictions:
        from finfusion.families.forecast import ForecastPredictions
        from finfusion.forecasting.universal import forecasts_of

        return ForecastPredictions(forecasts_of(run.model, getattr(run.data, span)), None)

    def serving_config(
        self, cfg: DictConfig, lake: Lake, sources: Sources, train_end: datetime, val_end: datetime
    ) -> DictConfig:
        from finfusion.families.forecast import FAMILY as FORECAST

        return FORECAST.serving_config(cfg, lake, sources, train_end, val_end)  # the same data keys: lake, split

    def predict_between(self, run: LoadedRun, start: datetime | None, end: datetime) -> pl.DataFrame:
        import numpy as np
        import polars as pl

        from finfusion.data.calendar import to_us
        from finfusion.forecasting.forecast import lake_frame
        from finfusion.forecasting.universal import forecasts_of
        from finfusion.samples.universal import ShardWindows

        everything = ShardWindows(run.data.test.index)
        origins = everything.column("origin_us")
        first = -np.inf if start is None else int(to_us(pl.Series([start]))[0])
        chosen = everything.subset((origins > first) & (origins <= int(to_us(pl.Series([end]))[0])))
        return lake_frame(forecasts_of(run.model, chosen))

    def explain(self, run: LoadedRun, symbol: str, day: date, span: str, steps: int, planted: bool) -> dict[str, Any]:
        from finfusion.forecasting.universal_explain import explain_forecast

        if planted:
            raise FinfusionError("--planted: the planted-news rate is measured on forecast runs, not universal runs")
        windows = getattr(run.data, span)
        explained = explain_forecast(run.model, windows, str(run.cfg.model.name), symbol, day, steps)
        return {"decision": explained.as_dict()}

    def evaluate(self, cfg: DictConfig, run_dir: Path, progress: Progress) -> EvaluationResult:
        from finfusion.families.forecast import scored_result
        from finfusion.families.pipeline import train_run
        from finfusion.forecasting.universal import score_test_span

        progress(f"pre-training {cfg.model.name} (selection on validation) into {run_dir / 'model'}")
        run = train_run(cfg, run_dir / "model", resume="never")
        evaluation = score_test_span(cfg, run.model, run.data.model_arguments, run.data.loader, run_dir, progress)
        return scored_result(evaluation, cfg, run_dir, [])


FAMILY = UniversalFamily()
