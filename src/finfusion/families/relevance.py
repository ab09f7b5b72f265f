"""The relevance family: how strongly, and in which direction, a week's context (news, policy, macro) bears on each
stock over the next 7 and 30 days (the dual-tower model of seed 004).

- Config: `data` (samples/relevance.py RELEVANCE_DEFAULTS), `model` (dual_tower), `task` (relevance: the multi-task
  loss), `optim` (per-tower learning rates by `extra_groups`), `trainer`, `evaluation` (relevance/evaluation.py
  EVALUATION_DEFAULTS: baselines, Diebold-Mariano settings, importance).
- Samples: `context` [Fc], `stock` [Fs], `relevance` / `direction` / `label_mask` / `forward_return` [K],
  `symbol_index`, `origin_us` (samples/relevance.py).
- State: split instants, universe, feature groups, the news projection, z-scores and label scales.
- Predictions: the lake's `relevance` table (dataset = run name): score, up / down probabilities per stock, week
  and horizon.
- Evaluation: training with selection on validation, the test span scored once against the zero score, ridge
  regression and LightGBM on the same features (and, for direction, the majority class and the previous sign),
  Diebold-Mariano tests, feature-group importance (permutation, integrated gradients) and the context x stock heat
  map.
- Explanations (`finfusion explain`): the first horizon's score of one stock and week, per feature and feature group
  (relevance/explain.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

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
    TableRows,
    shuffled_loader,
    trainer_keys,
)

if TYPE_CHECKING:
    import polars as pl

    from finfusion.data.lake import Lake
    from finfusion.families.pipeline import LoadedRun


def _data_keys() -> dict[str, Any]:
    from finfusion.samples.relevance import RELEVANCE_DEFAULTS

    return {**RELEVANCE_DEFAULTS, "split": dict.fromkeys(("train", "val", "train_end", "val_end")), "synthetic": FREE}


def _evaluation_keys() -> dict[str, Any]:
    from finfusion.relevance.evaluation import EVALUATION_DEFAULTS

    return EVALUATION_DEFAULTS


@dataclass(frozen=True)
class RelevancePredictions(TableRows):
    """A relevance run's rows for one span (see families/base.py Predictions)."""

    kind: ClassVar[str] = "relevance"
    what: ClassVar[str] = "relevance predictions"

    def summary(self) -> list[tuple[str, str]]:
        import polars as pl

        rows = self.rows
        lines = [("decisions", f"{rows['origin_ts'].n_unique():,} weeks x {rows['symbol'].n_unique():,} symbols")]
        for (days,), part in rows.group_by("horizon_days", maintain_order=True):
            known = part.filter(pl.col("label").is_not_null())
            text = f"mean score {part['score'].mean():+.3f}"
            if known.height:
                hits = ((known["prob_up"] > 0.5) == (known["forward_return"] > 0)).mean()
                text += f", direction accuracy {hits:.2%} over {known.height:,} known labels"
            lines.append((f"{days}-day", text))
        return lines


class RelevanceFamily(Family):
    name = "relevance"
    table = "relevance"
    tasks = ("relevance",)
    spans = ("test", "val", "train")
    sections = LazySections(data=_data_keys, trainer=trainer_keys, evaluation=_evaluation_keys)

    def data(self, cfg: DictConfig, state: Mapping[str, Any] | None = None) -> FamilyData:
        import numpy as np

        from finfusion.forecasting.data import ensure_bars
        from finfusion.samples.relevance import (
            feature_groups,
            fit_state,
            raw_samples,
            relevance_options,
            samples_from,
            split_masks,
        )
        from finfusion.samples.time_split import split_instants

        options = relevance_options(cfg.data)
        lake = ensure_bars(options)
        if state is not None and list(state["horizons"]) != options["horizons"]:
            raise FinfusionError(
                f"the run was trained on horizons {state['horizons']}, the config asks for {options['horizons']}"
            )
        raw = raw_samples(options, lake, options["symbols"] if state is None else state["symbols"])
        if state is None:
            train_end, val_end = split_instants(options["split"], raw.origin_us)
        else:
            train_end, val_end = int(state["train_end_us"]), int(state["val_end_us"])
        known = np.isfinite(raw.forward_return).all(axis=1)
        masks = split_masks(raw.origin_us, known, max(options["horizons"]), train_end, val_end)
        if state is None:
            state = fit_state(raw, options, masks["train"], train_end, val_end)
        samples, finite = samples_from(raw, state)
        # a training batch of one sample cannot be batch-normalised: the shuffled loader drops a short last batch
        loader = shuffled_loader(int(options["batch_size"]), int(options["num_workers"]), drop_short_last=True)
        context_groups, stock_groups = feature_groups(state)
        context_names = [name for names in context_groups.values() for name in names]
        stock_names = [name for names in stock_groups.values() for name in names]
        return FamilyData(
            train=samples.subset(masks["train"][finite]),
            val=samples.subset(masks["val"][finite]),
            test=samples.subset(masks["test"][finite]),
            loader=loader,
            model_arguments={
                "context_dim": len(context_names),
                "stock_dim": len(stock_names),
                "horizons": options["horizons"],
            },
            state=dict(state),
            extra={"options": options, "everything": samples, "lake": lake},
        )

    def predict(self, run: LoadedRun, span: str) -> RelevancePredictions:
        from finfusion.relevance.predict import relevance_rows

        state = run.data.state
        return RelevancePredictions(
            relevance_rows(run.model, getattr(run.data, span), state["symbols"], state["horizons"])
        )

    def serving_config(
        self, cfg: DictConfig, lake: Lake, sources: Sources, train_end: datetime, val_end: datetime
    ) -> DictConfig:
        from omegaconf import OmegaConf, open_dict

        served = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
        with open_dict(served):
            served.data.source = "lake"
            served.data.lake = str(lake.root)
            served.data.dataset = sources.bars
            served.data.freq = sources.freq
            served.data.split = {"train_end": train_end.isoformat(), "val_end": val_end.isoformat()}
            if sources.texts is None:
                served.data.texts = {"enabled": False}
            else:
                served.data.texts.dataset = sources.texts
        return served

    def predict_between(self, run: LoadedRun, start: datetime | None, end: datetime) -> pl.DataFrame:
        import numpy as np

        from finfusion.relevance.predict import relevance_rows
        from finfusion.samples.contract import ORIGIN_US
        from finfusion.samples.portfolio import instant_us

        everything = run.data.extra["everything"]
        origins = everything.column(ORIGIN_US)
        first = np.iinfo(np.int64).min if start is None else instant_us(start)
        chosen = everything.subset((origins > first) & (origins <= instant_us(end)))
        state = run.data.state
        return relevance_rows(run.model, chosen, state["symbols"], state["horizons"])

    def explain(self, run: LoadedRun, symbol: str, day: date, span: str, steps: int, planted: bool) -> dict[str, Any]:
        from finfusion.relevance.explain import explain_score

        if planted:
            raise FinfusionError("--planted: the planted-news rate is measured on forecast runs, not relevance runs")
        samples = getattr(run.data, span)
        explained = explain_score(run.model, samples, run.data.state, str(run.cfg.model.name), symbol, day, steps)
        return {"decision": explained.as_dict()}

    def evaluate(self, cfg: DictConfig, run_dir: Path, progress: Progress) -> EvaluationResult:
        from finfusion.data.sources.synthetic_ingest import planted_sensitivity
        from finfusion.families.pipeline import train_run
        from finfusion.relevance.evaluation import MODEL, planted_ranks, score_relevance, write_relevance_page
        from finfusion.relevance.page import write_html_report

        progress(f"training {cfg.model.name} (selection on validation) into {run_dir / 'model'}")
        run = train_run(cfg, run_dir / "model", resume="never")
        options = run.data.extra["options"]
        series_dataset = str(options["series"]["dataset"] or options["dataset"])
        planted = planted_sensitivity(run.data.extra["lake"], series_dataset)
        progress("scoring the test span once against the baselines; feature-group importance")
        evaluation = score_relevance(run.cfg, run.model, run.data, planted, seed=int(cfg.trainer.get("seed", 0)))
        report = write_html_report(evaluation, run_dir / "report" / "relevance.html")
        notes = [
            f"Diebold-Mariano ({t['loss']}, {t['horizon']}d) {MODEL} vs {t['baseline']}: p = {t['p_value']:.4f}"
            for t in evaluation.tests
        ]
        for row in planted_ranks(evaluation) if planted else []:
            firsts = ", ".join(f"{group} {count}" for group, count in sorted(row["first"].items()))
            notes.append(f"context group ranked first for the {row['count']} {row['stocks']}-planted stocks: {firsts}")
        notes += [*evaluation.notes, f"report: {report}"]

        def page(path: Path, command: str, title: str) -> Path:
            return write_relevance_page(evaluation, path, command, title)

        return EvaluationResult(
            models=evaluation.metrics, baselines=evaluation.baselines, notes=tuple(notes), write_page=page
        )


FAMILY = RelevanceFamily()
