"""The order-book family: mid-price movement over the next k events from windows of limit-order-book snapshots
(TransLOB, seed 001's microstructure module), against logistic regression and an LSTM on the same inputs.

- Config: `data` (samples/orderbook.py ORDERBOOK_DEFAULTS; `source: synthetic` makes the synthetic book first),
  `model` (translob, lob_lstm, lob_logistic), `task` (lob_movement: the movement task's cross-entropy over down /
  stationary / up), `optim`, `trainer`, `evaluation` (`baselines`: model parts trained the same way,
  `bootstrap`: resamples and block length of the significance test).
- Samples: `book` [T, L, 4], `label` [] (0 down, 1 stationary, 2 up; -1 unknown), `symbol_index`, `origin_us`.
- State: split instants, universe, the z-score statistics and the label's dead band alpha (training only).
- Predictions: the lake's `classifications` table (label set `mid_price`; prob_positive = P(up)).
- Evaluation: every model trained with selection on validation, the test span scored once: accuracy, macro F1,
  MCC; the model against each baseline by a paired block bootstrap of the macro-F1 difference (one-sided p).
- Explanations: the symbol's last decision of a day (families/orderbook_explain.py).
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
from finfusion.families.token_classification import ClassPredictions, class_rows

if TYPE_CHECKING:
    import polars as pl

    from finfusion.data.lake import Lake
    from finfusion.families.pipeline import LoadedRun

LABEL_SET = "mid_price"
EVALUATION_DEFAULTS: dict[str, Any] = {
    "baselines": ["lob_logistic", "lob_lstm"],
    "bootstrap": {"resamples": 2000, "block": 20},
}


def _data_keys() -> dict[str, Any]:
    from finfusion.samples.orderbook import ORDERBOOK_DEFAULTS

    split = dict.fromkeys(("train", "val", "train_end", "val_end"))
    return {**ORDERBOOK_DEFAULTS, "split": split, "synthetic": FREE}


class OrderBookFamily(Family):
    name = "orderbook"
    table = "classifications"
    tasks = ("lob_movement",)
    spans = ("test", "val", "train")
    sections = LazySections(
        data=_data_keys, trainer=trainer_keys, evaluation=lambda: {**EVALUATION_DEFAULTS, "baselines": FREE}
    )

    def data(self, cfg: DictConfig, state: Mapping[str, Any] | None = None) -> FamilyData:
        import numpy as np
        from omegaconf import OmegaConf

        from finfusion.config import plain
        from finfusion.samples import orderbook as ob
        from finfusion.samples.time_split import split_instants

        merged = OmegaConf.merge(OmegaConf.create(ob.ORDERBOOK_DEFAULTS), OmegaConf.create(plain(cfg.data)))
        options = OmegaConf.to_container(merged, resolve=True)
        lake = _book_lake(options)
        rows = lake.read("orderbooks", str(options["dataset"]))
        universe = (list(options["symbols"] or sorted(set(rows["symbol"].to_list())))) if state is None else list(
            state["symbols"])  # fmt: skip
        levels, window = int(options["levels"]), int(options["window"])
        days = ob.book_days(rows, levels, universe)
        at, change = ob.decisions(days, window, int(options["horizon"]), int(options["stride"]))
        if state is None:
            train_end, val_end = split_instants(options["split"], days.ts_us[at])
        else:
            train_end, val_end = int(state["train_end_us"]), int(state["val_end_us"])
        label_end = days.ts_us[np.minimum(at + int(options["horizon"]), len(days.ts_us) - 1)]
        known, origin = np.isfinite(change), days.ts_us[at]
        masks = {
            "train": known & (label_end < train_end),
            "val": known & (origin >= train_end) & (label_end < val_end),
            "test": origin >= val_end,
        }
        if state is None:
            fitted = ob.fit_book_state(days, change, masks["train"], train_end, float(options["stationary_share"]))
            state = {"train_end_us": train_end, "val_end_us": val_end, "symbols": universe, **fitted}
        windows = ob.BookWindows(ob.normalized(days, state), days, at, ob.book_labels(change, state["alpha"]), window)
        return FamilyData(
            train=windows.subset(masks["train"]),
            val=windows.subset(masks["val"]),
            test=windows.subset(masks["test"]),
            loader=shuffled_loader(int(options["batch_size"]), int(options["num_workers"])),
            model_arguments={"levels": levels, "window": window},
            state=dict(state),
            extra={"options": options, "everything": windows},
        )

    def predict(self, run: LoadedRun, span: str) -> ClassPredictions:
        return ClassPredictions(_rows(run, getattr(run.data, span)))

    def serving_config(
        self, cfg: DictConfig, lake: Lake, sources: Sources, train_end: datetime, val_end: datetime
    ) -> DictConfig:
        raise FinfusionError("the order-book family is not served by the bar pipelines' jobs (its data are events)")

    def predict_between(self, run: LoadedRun, start: datetime | None, end: datetime) -> pl.DataFrame:
        raise FinfusionError("the order-book family is not served by the bar pipelines' jobs (its data are events)")

    def explain(self, run: LoadedRun, symbol: str, day: date, span: str, steps: int, planted: bool) -> dict[str, Any]:
        from finfusion.families.orderbook_explain import explain_decision

        if planted:
            raise FinfusionError("--planted: the planted-news rate is measured on forecast runs, not order-book runs")
        return {"decision": explain_decision(run.model, run.data, run.cfg, symbol, day, span, steps).as_dict()}

    def evaluate(self, cfg: DictConfig, run_dir: Path, progress: Progress) -> EvaluationResult:
        from omegaconf import OmegaConf, open_dict

        from finfusion.families.pipeline import train_run
        from finfusion.forecasting.walk_forward import model_parts

        options = {**EVALUATION_DEFAULTS, **dict(cfg.get("evaluation") or {})}
        parts = model_parts(cfg, list(options["baselines"]))
        names = list(parts)
        data, scored = None, {}
        for name, part in parts.items():
            variant = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
            with open_dict(variant):
                variant.model = part
            progress(f"training {name} (selection on validation) into {run_dir / name}")
            run = train_run(variant, run_dir / name, resume="never", data=data)
            data = run.data
            scored[name] = _rows(run, data.test)
        return _scored(scored, names[0], names[1:], options)


def _book_lake(options: Mapping[str, Any]) -> Lake:
    """The lake, with the synthetic book made in it first when the source is synthetic and the dataset is absent."""
    from finfusion.data.lake import Lake

    lake = Lake(options["lake"])
    if not lake.files("orderbooks", str(options["dataset"])):
        if options["source"] != "synthetic":
            raise FinfusionError(
                f"the lake has no orderbooks dataset '{options['dataset']}': ingest LOBSTER files with "
                "`finfusion orderbook ingest`, or make the synthetic book (`finfusion orderbook synth`)"
            )
        import tempfile

        import exchange_calendars
        import polars as pl

        from finfusion.data.schema import ORDERBOOKS
        from finfusion.data.sources.lobster import read_lobster
        from finfusion.data.sources.synthetic_lob import LobConfig, write_lobster_days

        settings = {"days": 10, "events": 20_000, "effect": 2.0, "seed": 0, **dict(options["synthetic"] or {})}
        config = LobConfig(levels=int(options["levels"]), events=int(settings["events"]),
                           effect=float(settings["effect"]), seed=int(settings["seed"]))  # fmt: skip
        sessions = exchange_calendars.get_calendar("XNYS").sessions_in_range("2024-01-02", "2024-12-31")
        with tempfile.TemporaryDirectory() as scratch:
            days = [s.date() for s in sessions[: int(settings["days"])]]
            frame = pl.concat([read_lobster(day) for day in write_lobster_days(Path(scratch), "SYNL", days, config)])
        note = f"synthetic order book {settings}"
        lake.write(ORDERBOOKS, str(options["dataset"]), frame, metadata={"source": "synthetic", "notes": [note]})
    return lake


def _rows(run: LoadedRun, dataset: Any) -> pl.DataFrame:
    """CLASSIFICATIONS rows (label set mid_price; prob_positive = P(up))."""
    return class_rows(run.model, dataset, run.data.state["symbols"], LABEL_SET)


def _scored(
    scored: Mapping[str, pl.DataFrame], model: str, baselines: list[str], options: Mapping[str, Any]
) -> EvaluationResult:
    """Test metrics per model and the paired block bootstrap of the macro-F1 difference."""
    import numpy as np

    from finfusion.evaluation.classification import block_bootstrap_f1, class_metrics

    known = scored[model]["label"].is_not_null().to_numpy()
    labels = scored[model]["label"].to_numpy()[known].astype(np.int64)
    if labels.size == 0:
        raise FinfusionError("the test span has no labelled samples")
    predicted = {name: rows["predicted"].to_numpy()[known] for name, rows in scored.items()}
    metrics = {name: class_metrics(labels, values) for name, values in predicted.items()}
    bootstrap = {**EVALUATION_DEFAULTS["bootstrap"], **dict(options.get("bootstrap") or {})}
    notes, tests = [], []
    for name in baselines:
        result = block_bootstrap_f1(labels, predicted[model], predicted[name], int(bootstrap["resamples"]),
                                    int(bootstrap["block"]), seed=0)  # fmt: skip
        tests.append((name, result))
        notes.append(f"macro F1 {model} - {name}: {result['difference']:+.4f}, bootstrap p = {result['p_value']:.4f}")
    counts = np.bincount(labels, minlength=3)
    notes.append(f"test labels (down / stationary / up): {counts.tolist()}; scored once, selection on validation")

    def page(path: Path, command: str, title: str) -> Path:
        from finfusion.evaluation.classification import write_class_page

        return write_class_page(path, command, title, metrics, model, tests, notes)

    return EvaluationResult(models=metrics, baselines=tuple(baselines), notes=tuple(notes), write_page=page)


FAMILY = OrderBookFamily()
