"""Walk-forward evaluation with refit: every fold fits every model again on its own past, then forecasts its test.

The `evaluation` part of the config:

    walk_forward:
      mode: expanding       # or rolling
      first_test: null      # a date: the first test block starts there (its train block ends validate + embargo
                            # periods before it: rolling, `train` periods long; expanding, from the first period)
      train: 500            # periods (distinct decision instants) in the first train block
      validate: 100         # periods for early stopping / checkpoint choice (0: none)
      test: 100             # periods per test block; blocks tile the rest of the timeline (the last may be shorter)
      step: null            # default: test
      embargo: null         # default: the horizon H (no label window reaches across a gap)
      max_folds: null
    baselines: [random_walk, drift]   # registry or configs/model part names, or {label, part, set} (model_parts);
                                       # {label: placebo, texts: permuted}: the placebo twin, the model fed texts
                                       # whose contents are permuted across dates (placebo_seed: 0)
    label: null                        # the experiment model's name in the tables (default: its model name)
    compare_to: [random_walk]          # Diebold-Mariano of every other model against each of these
    dm_loss: absolute                  # crps (sampled / quantile models), or a list
    direction_baselines: [majority_class, previous_sign, drift_sign, logistic_direction]
                                       # sign forecasts (models/direction_baselines.py); every model's direction
                                       # error is tested against the best of them on the test windows (the
                                       # hardest reference), never against a forecast without a sign
    subsets: []                        # also score on subsets of (window, step) pairs: planted_news (synthetic
                                       # events), with_texts / without_texts (decisions that see a text / none)
    costs: {half_spread_bps: 2.0, commission_bps: 1.0, slippage_bps: 1.0, impact_coef: 0.0}
    periods_per_year: 252

Each fold's normaliser is fitted on the bars before its first held-out decision instant; the splitter purges
training windows whose label windows overlap held-out ones. Outputs in the run folder: metrics.json (every model,
the baselines marked, Diebold-Mariano of each non-baseline against `random_walk`), forecasts.parquet (models with
quantiles or samples), backtest/ (the experiment model's sign strategy) and report.html.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import numpy as np
import polars as pl
from omegaconf import DictConfig, OmegaConf

from finfusion.config import find_config_dir, plain, save_config
from finfusion.data.calendar import to_us
from finfusion.data.lake import Lake
from finfusion.errors import FinfusionError
from finfusion.evaluation.costs import CostModel
from finfusion.evaluation.metric_registry import metric_goals
from finfusion.evaluation.report import write_report
from finfusion.evaluation.run_layout import Metrics, write_equity, write_forecasts, write_metrics, write_weights
from finfusion.evaluation.splits import Split, WalkForward
from finfusion.features.align import AlignedText
from finfusion.forecasting.data import (
    ExperimentData,
    build_experiment_panel,
    data_options,
    instant_us,
    window_config,
)
from finfusion.forecasting.forecast import PER_WINDOW, Forecasts, report_frame, run_forecasts
from finfusion.forecasting.scoring import (
    DIRECTION_BASELINES,
    DM_LOSSES,
    dm_against,
    forecast_metrics,
    has_direction,
    sign_backtest,
    trading_metrics,
    usable_rows,
)
from finfusion.forecasting.texts import align_panel_texts, with_texts
from finfusion.models.base import Capabilities
from finfusion.models.build import build_model
from finfusion.samples.text_windows import TextWindowDataset
from finfusion.samples.windows import EPOCH, Panel, WindowDataset
from finfusion.training.fitting import fit_model, seed_everything
from finfusion.training.trainer import CONFIG_FILE

REFERENCE = "random_walk"
EVALUATION_DEFAULTS: dict[str, Any] = {
    "walk_forward": {
        "mode": "expanding",
        "first_test": None,
        "train": 500,
        "validate": 100,
        "test": 100,
        "step": None,
        "embargo": None,
        "max_folds": None,
    },
    "baselines": [REFERENCE, "drift"],
    "compare_to": [REFERENCE],
    "dm_loss": "absolute",
    "direction_baselines": list(DIRECTION_BASELINES),
    "placebo_seed": 0,
    "subsets": [],
    "label": None,
    "costs": {"half_spread_bps": 2.0, "commission_bps": 1.0, "slippage_bps": 1.0, "impact_coef": 0.0},
    "periods_per_year": 252,
}

Progress = Callable[[str], None]


def evaluation_options(cfg: Mapping[str, Any] | DictConfig | None) -> dict[str, Any]:
    """The evaluation part over `EVALUATION_DEFAULTS`, with `dm_loss` as a list of known losses."""
    given = {} if cfg is None else plain(cfg)
    options = plain(OmegaConf.merge(OmegaConf.create(EVALUATION_DEFAULTS), given))
    losses = [options["dm_loss"]] if isinstance(options["dm_loss"], str) else list(options["dm_loss"])
    unknown = [loss for loss in losses if loss not in DM_LOSSES]
    if unknown or not losses:
        raise FinfusionError(f"evaluation.dm_loss: unknown {unknown or 'empty list'}; use {', '.join(DM_LOSSES)}")
    options["dm_loss"] = losses
    return options


def model_parts(cfg: DictConfig, baselines: list[str | Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """{display name: model part}: the experiment's own model first (named by `evaluation.label`, else its model
    name), then each baseline. A baseline is a registry name or a configs/model part name, or a mapping
    {label, part, set}: the part (default: the experiment's own model) with the `set` keys changed (e.g. the
    price-only twin: {label: price_only, set: {use_text: false}})."""
    own = plain(cfg.model)
    parts = {str(cfg.get("evaluation", {}).get("label") or own["name"]): own}
    for entry in baselines:
        if isinstance(entry, Mapping):
            base = own if entry.get("part") is None else _part(cfg, str(entry["part"]))
            parts.setdefault(str(entry["label"]), {**base, **dict(entry.get("set") or {})})
        else:
            parts.setdefault(str(entry), _part(cfg, str(entry)))
    return parts


def _part(cfg: DictConfig, name: str) -> dict[str, Any]:
    """configs/model/<name>.yaml resolved against the experiment's data part, else just the registry name."""
    path = find_config_dir() / "model" / f"{name}.yaml"
    if not path.is_file():
        return {"name": name}
    resolved = OmegaConf.create({"data": cfg.data, "model": OmegaConf.load(path)})
    OmegaConf.resolve(resolved)
    return {"name": name, **plain(resolved.model)}


def placebo_labels(baselines: list[str | Mapping[str, Any]]) -> list[str]:
    """Labels of the placebo twins: baseline entries with `texts: permuted` (the part, default the experiment's own
    model, trained and tested on texts whose contents are permuted across dates: forecasting/texts.py
    `permuted_contents`, seeded by `placebo_seed`)."""
    labels = []
    for entry in baselines:
        if isinstance(entry, Mapping) and "texts" in entry:
            if entry["texts"] != "permuted":
                raise FinfusionError(f"evaluation.baselines: texts: {entry['texts']} (use texts: permuted)")
            labels.append(str(entry["label"]))
    return labels


def baseline_labels(baselines: list[str | Mapping[str, Any]]) -> list[str]:
    return [str(b["label"]) if isinstance(b, Mapping) else str(b) for b in baselines]


def splitter(options: Mapping[str, Any], origins_us: np.ndarray, horizon: int) -> WalkForward:
    """The WalkForward of the options; `first_test` (a date) sets the train block so the first test starts there."""
    embargo = horizon if options["embargo"] is None else int(options["embargo"])
    train, start = int(options["train"]), 0
    if options["first_test"] is not None:
        periods = np.unique(origins_us)
        first = int(np.searchsorted(periods, instant_us(options["first_test"])))
        before = first - int(options["validate"]) - (2 if options["validate"] else 1) * embargo  # train periods
        if options["mode"] == "expanding":  # every train block starts at the first period
            train = before
        elif before < train:  # rolling: `train` periods that end before the first test's validate block
            raise FinfusionError(
                f"evaluation: first_test {options['first_test']} leaves {max(before, 0)} periods before it for a "
                f"rolling train block of walk_forward.train = {train}; lower train or move first_test later"
            )
        else:
            start = before - train
        if train < 1:
            raise FinfusionError(f"evaluation: first_test {options['first_test']} leaves no training periods")
    return WalkForward(
        train=train,
        validate=int(options["validate"]),
        test=int(options["test"]),
        step=None if options["step"] is None else int(options["step"]),
        mode=options["mode"],
        embargo=embargo,
        start=start,
    )


def fold_data(
    panel: Panel, options: Mapping[str, Any], windows: WindowDataset, split: Split, aligned: AlignedText | None
) -> ExperimentData:
    """The fold's datasets with a normaliser fitted on the bars before its first held-out decision instant."""
    held_out = split.validate if split.validate.size else split.test
    start = int(windows.origins_us[held_out].min())
    config = dataclasses.replace(windows.config, normalize=True, train_end=EPOCH + timedelta(microseconds=start))
    fold = with_texts(WindowDataset(panel, config, index=windows.index), aligned)
    return ExperimentData(
        panel=panel,
        config=config,
        train=fold.subset(split.train),
        val=fold.subset(split.validate),
        test=fold.subset(split.test),
        train_end_us=start,
        val_end_us=int(windows.origins_us[split.test].min()),
        batch_size=int(options["batch_size"]),
        num_workers=int(options["num_workers"]),
        freq=str(options["freq"]),
        aligned=aligned,
    )


#: Subsets of (window, step) pairs a walk-forward also scores and tests (`evaluation.subsets`).
SUBSETS = ("planted_news", "with_texts", "without_texts")


def subset_events(
    data_opts: Mapping[str, Any], names: list[str], aligned: AlignedText | None
) -> dict[str, pl.DataFrame | None]:
    """The ground truth of each named subset, read once before any fold trains; an unknown name, or a subset the
    data cannot give, raises. `planted_news`: the synthetic market's events table; `with_texts` / `without_texts`
    (any data with texts): the windows whose decision sees at least one text / none (no ground truth needed)."""
    events: dict[str, pl.DataFrame | None] = {}
    for name in names:
        if name not in SUBSETS:
            raise FinfusionError(f"evaluation: unknown subset '{name}' (known: {', '.join(SUBSETS)})")
        if aligned is None:
            raise FinfusionError(f"evaluation: the {name} subset needs data.texts.enabled")
        events[name] = (
            Lake(data_opts["lake"]).read("events", str(data_opts["dataset"])) if name == "planted_news" else None
        )
    return events


def subset_steps(name: str, events: pl.DataFrame | None, test: TextWindowDataset, target_us: np.ndarray) -> np.ndarray:
    """[M, H] bool: the (window, step) pairs of subset `name` among the test windows (`subset_events`)."""
    if events is not None:
        return planted_news_steps(events, test, target_us)
    seen = np.array([bool(test.text_ids(k)) for k in range(len(test.index))], dtype=bool)
    picked = seen if name == "with_texts" else ~seen
    return np.repeat(picked[:, None], target_us.shape[1], axis=1)


def planted_news_steps(events: pl.DataFrame, test: TextWindowDataset, target_us: np.ndarray) -> np.ndarray:
    """[M, H] bool: step j of window k (bar instants `target_us` [M, H]) falls in a session moved by a planted item
    among the texts window k sees at its decision bar (events: sessions first_session_ts .. + horizon - 1), so a
    model is scored on the days the news moves prices, not on the other steps of its path."""
    sessions = np.unique(np.concatenate(test.panel.ts))  # every bar instant of the panel: one per session
    first = np.searchsorted(sessions, to_us(events["first_session_ts"]))  # the first session's bar
    spans = {
        (text_id, symbol): sessions[start : start + horizon]
        for text_id, symbol, start, horizon in zip(
            events["text_id"].to_list(), events["symbol"].to_list(), first.tolist(), events["horizon"].to_list(),
            strict=True,
        )
    }  # fmt: skip
    symbols = test.panel.symbols
    mask = np.zeros(target_us.shape, dtype=bool)
    for k, (s, _) in enumerate(test.index):
        for text_id in test.text_ids(k):
            moved = spans.get((text_id, symbols[s]))
            if moved is not None:
                mask[k] |= np.isin(target_us[k], moved)
    return mask


def concat_forecasts(parts: list[Forecasts]) -> Forecasts:
    """One model's forecasts of several folds, in fold order."""
    first = parts[0]
    present = [key for key in PER_WINDOW if getattr(first, key) is not None]
    stacked = {key: np.concatenate([getattr(p, key) for p in parts]) for key in present}
    return dataclasses.replace(first, **stacked)


@dataclass
class Evaluation:
    """What `evaluate_experiment` measured."""

    metrics: Metrics
    folds: int
    windows: int
    forecasts: dict[str, Forecasts] = field(repr=False)
    fold_bounds: list[tuple[int, int]] = field(default_factory=list)
    #: How the test windows were produced, for the results page.
    design: str = "walk-forward with refit"


def fit_fold(cfg: DictConfig, data: ExperimentData, run_dir: Path) -> Capabilities:
    """The experiment's model fitted on one fold's training windows (best validation weights), from scratch in a
    fresh `run_dir` (checkpoints of an earlier evaluation in the same folder are removed first)."""
    if run_dir.exists():
        shutil.rmtree(run_dir)
    seed_everything(cfg)
    model = build_model(cfg.model, data.model_arguments)
    fit_model(cfg, model, data.train, data.val, data.batches, run_dir, resume="never")
    return model


def evaluate_experiment(cfg: DictConfig, run_dir: str | Path, progress: Progress = print) -> Evaluation:
    """Walk-forward evaluation of the experiment's model and the baselines into `run_dir`."""
    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run / CONFIG_FILE)
    data_opts = data_options(cfg.data)
    options = evaluation_options(cfg.get("evaluation"))
    wf_opts = options["walk_forward"]
    panel = build_experiment_panel(data_opts)
    aligned = align_panel_texts(data_opts, panel)
    windows = WindowDataset(panel, dataclasses.replace(window_config(data_opts, None), normalize=False))
    wf = splitter(wf_opts, windows.origins_us, windows.config.horizon)
    folds = list(wf.split(windows.origins_us, windows.future_end_us))
    if wf_opts["max_folds"] is not None:
        folds = folds[: int(wf_opts["max_folds"])]
    if not folds:
        raise FinfusionError(
            f"evaluation: the timeline is too short for one fold (needs {wf.test_start(0) + 1} periods)"
        )
    baselines = [*options["baselines"], *options["direction_baselines"]]
    parts = model_parts(cfg, baselines)
    placebos = placebo_labels(options["baselines"])
    if placebos and aligned is None:
        raise FinfusionError(f"evaluation: the placebo twin {placebos[0]} permutes texts, and data.texts is off")
    permuted = align_panel_texts(data_opts, panel, int(options["placebo_seed"])) if placebos else None
    collected: dict[str, list[Forecasts]] = {name: [] for name in parts}
    events = subset_events(data_opts, list(options["subsets"]), aligned)
    flags: dict[str, list[np.ndarray]] = {name: [] for name in events}
    bounds = []
    for split in folds:
        data = fold_data(panel, data_opts, windows, split, aligned)
        placebo_data = fold_data(panel, data_opts, windows, split, permuted) if placebos else data
        bounds.append((int(data.test.origins_us.min()), int(data.test.origins_us.max())))
        sizes = f"{len(data.train)} train, {len(data.val)} val, {len(data.test)} test windows"
        progress(f"fold {split.fold + 1}/{len(folds)}: {sizes}")
        for name, part in parts.items():
            fold_cfg = cfg.copy()
            fold_cfg.model = OmegaConf.create(part)
            own = placebo_data if name in placebos else data
            model = fit_fold(fold_cfg, own, run / "folds" / name / f"fold_{split.fold}")
            collected[name].append(run_forecasts(model, own.test))
            progress(f"  {name}: forecast {len(data.test)} windows")
        target_us = collected[next(iter(parts))][-1].target_us
        for name, truth in events.items():  # texts are aligned, so the fold's windows carry them
            flags[name].append(subset_steps(name, truth, cast(TextWindowDataset, data.test), target_us))
    forecasts = {name: concat_forecasts(items) for name, items in collected.items()}
    subsets = {name: np.concatenate(parts) for name, parts in flags.items()}
    evaluation = score(forecasts, baseline_labels(baselines), options, run, subsets)
    evaluation.folds, evaluation.fold_bounds = len(folds), bounds
    write_report(run)
    return evaluation


def score(
    forecasts: dict[str, Forecasts],
    baselines: list[str],
    options: Mapping[str, Any],
    run: Path,
    subsets: Mapping[str, np.ndarray] | None = None,
) -> Evaluation:
    """Metrics (also on each subset of (window, step) pairs [N, H], suffixed `_<subset>`), Diebold-Mariano of every
    model (baselines included) against each reference of `compare_to` but itself, and of every model with a sign
    against the best direction baseline (direction error: the paired test of per-decision correctness, averaged per
    decision instant, with the long-run variance of the horizon), on all windows and on each subset (the subsets'
    steps still overlap), forecasts and the first model's backtest."""
    rows = np.logical_and.reduce([usable_rows(f) for f in forecasts.values()])
    if not rows.any():
        raise FinfusionError("evaluation: no test window has a complete realised path")
    costs = CostModel(**options["costs"])
    ppy = int(options["periods_per_year"])
    horizon = next(iter(forecasts.values())).point.shape[1]
    views = {"all": {name: fc.select(rows) for name, fc in forecasts.items()}}
    for subset, steps in (subsets or {}).items():
        if (picked := rows[:, None] & steps).any():
            views[subset] = {name: fc.at_steps(picked) for name, fc in forecasts.items()}
    references = [name for name in options["compare_to"] if name in forecasts]
    table: dict[str, dict[str, float]] = {}
    backtests = {}
    for name, fc in forecasts.items():
        backtests[name] = sign_backtest(fc, rows, costs, ppy)
        table[name] = {**forecast_metrics(fc, rows), **trading_metrics(backtests[name], ppy)}
        for subset, view in views.items():
            if subset != "all":
                every = np.ones(len(view[name]), dtype=bool)
                table[name].update({f"{k}_{subset}": v for k, v in forecast_metrics(view[name], every).items()})
    signs = [name for name in options.get("direction_baselines", []) if name in forecasts]
    # the hardest sign reference of each view: the best direction baseline on its own windows
    accuracy = {subset: "directional_accuracy" + ("" if subset == "all" else f"_{subset}") for subset in views}
    best_sign = (
        {subset: max(signs, key=lambda name: table[name][key]) for subset, key in accuracy.items()} if signs else {}
    )
    tests = []
    for name in forecasts:
        for subset, view in views.items():
            if len(view[name]) <= 2 * horizon:
                continue
            every = np.ones(len(view[name]), dtype=bool)
            for reference in references if name not in signs else ():  # sign forecasts: direction only
                # no direction test of or against a forecast without a sign (the random walk's zero return)
                signed = has_direction(view[reference], every) and has_direction(view[name], every)
                tests += [
                    dm_against(view[name], view[reference], every, name, reference, loss, subset, horizon)
                    for loss in options["dm_loss"]
                    if name != reference and (loss != "direction" or signed)
                ]
            sign = best_sign.get(subset)
            if sign is not None and name not in signs and has_direction(view[name], every):
                tests.append(dm_against(view[name], view[sign], every, name, sign, "direction", subset, horizon))
    names = list(dict.fromkeys(name for values in table.values() for name in values))
    goals = {**metric_goals(names), **metric_goals(names, prefix="price_")}
    metrics = Metrics(models=table, baselines=[b for b in baselines if b in table], goals=goals, significance=tests)
    write_metrics(run, metrics)
    frames = [f for name, fc in forecasts.items() if (f := report_frame(fc.select(rows), name)) is not None]
    if frames:
        shared = set.intersection(*(set(f.columns) for f in frames))
        write_forecasts(run, pl.concat([f.select([c for c in f.columns if c in shared]) for f in frames]))
    first = next(iter(forecasts))
    write_equity(run, backtests[first].equity_frame())
    write_weights(run, backtests[first].weights_frame())
    return Evaluation(metrics=metrics, folds=0, windows=int(rows.sum()), forecasts=forecasts)
