"""The forecast family: point, quantile and sampled-path forecasts of future bars (PatchTST, DLinear, the HF
TimeSeriesTransformer, LightGBM, the baselines and the multimodal diffusion forecaster).

- Config: `data` (forecasting/data.py keys), `model`, `task` (forecast or generative), `optim`, `trainer`,
  `evaluation` (forecasting/walk_forward.py keys).
- Samples: windows of the panel (samples/windows.py; with texts samples/text_windows.py): `past` [L, C],
  `past_mask` [L], `future` [H, T], `future_mask` [H], `scale_loc`/`scale_scale` [1, T], `symbol_index`, `origin_us`
  and, with texts, `text_emb` [N, D], `text_mask` [N] (and `text_ids` [N, S], `text_ids_mask` [N, S]).
- State: the split instants and the normaliser fitted before `train_end`.
- Predictions: the lake's forecasts table (dataset = run name) and `.npz` / `.parquet` exports.
- Evaluation: walk-forward with refit against the baselines (forecasting/walk_forward.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig

from finfusion.families.base import (
    FREE,
    EvaluationResult,
    Family,
    FamilyData,
    LazySections,
    Progress,
    Sources,
    trainer_keys,
)

if TYPE_CHECKING:
    import polars as pl

    from finfusion.data.lake import Lake, WriteResult
    from finfusion.families.pipeline import LoadedRun
    from finfusion.forecasting.data import ExperimentData
    from finfusion.forecasting.forecast import Forecasts
    from finfusion.forecasting.walk_forward import Evaluation


def _data_keys() -> dict[str, Any]:
    from finfusion.forecasting.data import DATA_DEFAULTS
    from finfusion.forecasting.texts import TEXT_DEFAULTS

    return {**DATA_DEFAULTS, "split": FREE, "synthetic": FREE, "texts": dict(TEXT_DEFAULTS)}


def _evaluation_keys() -> dict[str, Any]:
    from finfusion.forecasting.walk_forward import EVALUATION_DEFAULTS

    return {**EVALUATION_DEFAULTS, "costs": FREE, "baselines": FREE}


@dataclass
class ForecastPredictions:
    """Forecasts over a span and, per window, the texts it saw (None without texts)."""

    forecasts: Forecasts
    texts: list[str] | None

    def __len__(self) -> int:
        return len(self.forecasts)

    def frame(self) -> Any:
        from finfusion.forecasting.forecast import lake_frame

        return lake_frame(self.forecasts)

    def write(self, lake: Lake, name: str, run_dir: Path) -> WriteResult:
        from finfusion.forecasting.predict import write_forecasts_to_lake

        return write_forecasts_to_lake(self.forecasts, name, run_dir, lake)

    def summary(self) -> list[tuple[str, str]]:
        from finfusion.forecasting.predict import forecast_summary

        rows = forecast_summary(self.forecasts).sort("symbol").iter_rows()
        return [(symbol, f"{windows:,} windows, {first} .. {last}") for symbol, windows, first, last in rows]

    def export(self, path: Path) -> Path:
        from finfusion.forecasting.predict import export

        return export(self.forecasts, path, self.texts)


def family_data(data: ExperimentData) -> FamilyData:
    """The family's view of the experiment's windows (the windows themselves under `extra["experiment"]`)."""
    return FamilyData(
        train=data.train,
        val=data.val,
        test=data.test,
        loader=data.batches,
        model_arguments=data.model_arguments,
        state=data.state(),
        extra={"experiment": data},
    )


class ForecastFamily(Family):
    name = "forecast"
    table = "forecasts"
    tasks = ("forecast", "generative")
    spans = ("test", "val", "train", "all", "latest")
    sections = LazySections(data=_data_keys, trainer=trainer_keys, evaluation=_evaluation_keys)

    def data(self, cfg: DictConfig, state: Mapping[str, Any] | None = None) -> FamilyData:
        from finfusion.forecasting.data import build_experiment_data

        return family_data(build_experiment_data(cfg.data, state))

    def predict(self, run: LoadedRun, span: str) -> ForecastPredictions:
        from finfusion.data.lake import Lake
        from finfusion.forecasting.data import data_options
        from finfusion.forecasting.forecast import run_forecasts
        from finfusion.forecasting.predict import span_windows, window_texts

        windows = span_windows(run.data.extra["experiment"], span)
        options = data_options(run.cfg.data)
        texts = window_texts(windows, Lake(options["lake"]), options)
        return ForecastPredictions(run_forecasts(run.model, windows), texts)

    def serving_config(
        self, cfg: DictConfig, lake: Lake, sources: Sources, train_end: datetime, val_end: datetime
    ) -> DictConfig:
        from omegaconf import OmegaConf, open_dict

        served = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
        with open_dict(served):
            served.data.update(
                {
                    "lake": str(lake.root),
                    "source": "lake",
                    "dataset": sources.bars,
                    "freq": sources.freq,
                    "split": {"train_end": train_end.isoformat(), "val_end": val_end.isoformat()},
                }
            )
            if served.data.get("texts", {}).get("enabled"):
                served.data.texts.dataset = sources.texts or sources.bars
        return served

    def predict_between(self, run: LoadedRun, start: datetime | None, end: datetime) -> pl.DataFrame:
        import polars as pl

        from finfusion.data.schema import FORECASTS
        from finfusion.forecasting.forecast import lake_frame, run_forecasts
        from finfusion.forecasting.predict import windows_between

        windows = windows_between(run.data.extra["experiment"], start, end)
        if len(windows) == 0:
            return pl.DataFrame(schema={column.name: column.dtype for column in FORECASTS.columns})
        return lake_frame(run_forecasts(run.model, windows))

    def explain(self, run: LoadedRun, symbol: str, day: date, span: str, steps: int, planted: bool) -> dict[str, Any]:
        from finfusion.forecasting.explain import explain_decision, planted_rate

        experiment = run.data.extra["experiment"]
        explained = explain_decision(run.model, experiment, run.cfg, symbol, day, span, steps)
        result: dict[str, Any] = {"decision": explained.as_dict()}
        if planted:
            rate = planted_rate(run.model, experiment, run.cfg, span, steps)
            result["planted"] = {
                "span": span,
                "windows": rate.windows,
                "first_by_integrated_gradients": rate.first_by_integrated_gradients,
                "first_by_occlusion": rate.first_by_occlusion,
                "rate_integrated_gradients": rate.rate(rate.first_by_integrated_gradients),
                "rate_occlusion": rate.rate(rate.first_by_occlusion),
                "rate_by_chance": rate.chance,
                "p_value": rate.p_value,
            }
        return result

    def evaluate(self, cfg: DictConfig, run_dir: Path, progress: Progress) -> EvaluationResult:
        from finfusion.evaluation.run_layout import missing_parts
        from finfusion.forecasting.walk_forward import evaluate_experiment

        evaluation = evaluate_experiment(cfg, run_dir, progress=progress)
        return scored_result(evaluation, cfg, run_dir, [f"  missing: {part}" for part in missing_parts(run_dir)])


def scored_result(evaluation: Evaluation, cfg: DictConfig, run_dir: Path, extra: list[str]) -> EvaluationResult:
    """The `EvaluationResult` of scored forecasts: metrics, one line per Diebold-Mariano test (its loss named), the
    report's path and the results page writer."""
    from finfusion.forecasting.results import write_results
    from finfusion.forecasting.scoring import collapse_warnings

    notes = [
        f"Diebold-Mariano ({test['loss']}, {test.get('subset', 'all')}) {test['model']} vs {test['baseline']}: "
        f"p = {test['p_value']:.4f}"
        for test in evaluation.metrics.significance
    ]
    notes += collapse_warnings(evaluation.forecasts)
    notes.append(f"report: {run_dir / 'report' / 'report.html'}")

    def page(path: Path, command: str, title: str) -> Path:
        return write_results(path, evaluation, cfg, command, title)

    return EvaluationResult(
        models=evaluation.metrics.models,
        baselines=tuple(evaluation.metrics.baselines),
        notes=tuple(notes + extra),
        write_page=page,
    )


FAMILY = ForecastFamily()
