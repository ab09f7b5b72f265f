"""Pre-training a universal forecaster on a lake (seed 003): its data, forecasts and evaluation.

The `data` part (UNIVERSAL_DEFAULTS):

    source: lake | synthetic     dataset, freq, lake, synthetic: as in forecasting/data.py
    symbols: null                the pre-training universe (null: every symbol of the dataset)
    start / end: null            the span of bars read (ISO dates)
    lookback, horizon, stride    windows (samples/universal.py)
    batch_assets: 10             assets per builder batch
    engine: local                where the builder's batches run: local, or ray (Ray Data; the optional extra)
    covariates: [...]            the dynamic covariates (samples/universal.py DEFAULT_COVARIATES)
    split: {train_end, val_end}  training windows end (future included) before train_end; validation windows start
                                 at train_end and end before val_end; test windows start at val_end
    batch_size, num_workers

The windows are built by the iterative builder into shards under LAKE/_cache/universal/<key>, where the key is a
digest of the builder settings and the lake's version, so a build is made once and a grown lake gets a new one.

Evaluation (`evaluation.symbols`: the assets to forecast, e.g. `unseen`, the ones the model never saw: zero-shot;
null: the pre-training universe): pre-train with selection on the validation span, then forecast the test span of
those assets once, against the random walk and seasonal naive with the empirical quantiles of their own errors and
any other baseline part (a trained one, e.g. patchtst_cpu, fitted on those assets' training span, selected on their
validation span); with `finetune_epochs` > 0 also the pre-trained model fine-tuned there. CRPS, MSIS, MSE, MAE and
Diebold-Mariano (evaluation.compare_to, evaluation.dm_loss), the report and the results page.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from finfusion.config import plain
from finfusion.errors import FinfusionError
from finfusion.forecasting.scoring import DIRECTION_BASELINES
from finfusion.models.base import Capabilities
from finfusion.samples.universal import (
    BUILD_VERSION,
    DEFAULT_COVARIATES,
    TARGET,
    BuilderConfig,
    ShardIndex,
    ShardWindows,
)

UNIVERSAL_DEFAULTS: dict[str, Any] = {
    "source": "lake",
    "dataset": "synthetic",
    "freq": "1d",
    "lake": None,
    "symbols": None,
    "start": None,
    "end": None,
    "lookback": 64,
    "horizon": 8,
    "stride": 1,
    "batch_assets": 10,
    "engine": "local",
    "covariates": list(DEFAULT_COVARIATES),
    "split": {"train_end": None, "val_end": None},
    "batch_size": 64,
    "num_workers": 0,
    "synthetic": {},
}
QUANTILES = [round(0.05 * k, 2) for k in range(1, 20)]
UNIVERSAL_EVALUATION: dict[str, Any] = {
    "symbols": None,
    "baselines": [
        {"label": "random_walk", "part": "random_walk", "set": {"quantile_levels": QUANTILES}},
        {"label": "seasonal_naive", "part": "seasonal_naive", "set": {"quantile_levels": QUANTILES, "season": 5}},
    ],
    "compare_to": ["random_walk", "seasonal_naive"],
    "dm_loss": ["crps", "absolute"],
    "direction_baselines": list(DIRECTION_BASELINES),
    "finetune_epochs": 0,
    "costs": {"half_spread_bps": 2.0, "commission_bps": 1.0, "slippage_bps": 1.0, "impact_coef": 0.0},
    "periods_per_year": 252,
    "label": None,
}


def universal_options(cfg: Mapping[str, Any] | DictConfig) -> dict[str, Any]:
    merged = OmegaConf.merge(OmegaConf.create(UNIVERSAL_DEFAULTS), plain(cfg))
    return OmegaConf.to_container(merged, resolve=True)


def builder_config(options: Mapping[str, Any], lake_root: Path, symbols: list[str] | None) -> BuilderConfig:
    return BuilderConfig(
        lake=str(lake_root),
        dataset=str(options["dataset"]),
        freq=str(options["freq"]),
        symbols=None if symbols is None else tuple(symbols),
        start=options["start"],
        end=options["end"],
        lookback=int(options["lookback"]),
        horizon=int(options["horizon"]),
        stride=int(options["stride"]),
        batch_assets=int(options["batch_assets"]),
        covariates=tuple(options["covariates"]),
    )


def shards_for(options: Mapping[str, Any], symbols: list[str] | None = None) -> ShardIndex:
    """The build of `symbols` (default: data.symbols) with the data part's settings, made when not cached."""
    from finfusion.data.lake import Lake
    from finfusion.forecasting.data import ensure_bars
    from finfusion.samples.universal import build_shards

    lake: Lake = ensure_bars(options)
    chosen = symbols if symbols is not None else training_universe(lake, options)
    config = builder_config(options, lake.root, None if chosen is None else sorted(chosen))
    settings = {**config.__dict__, "lake": None, "version": lake.state().version, "build": BUILD_VERSION}
    key = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]
    folder = lake.root / "_cache" / "universal" / key
    if (folder / "index.json").is_file():
        return ShardIndex.read(folder)
    building = folder.with_name(f"{key}.building-{uuid.uuid4().hex[:8]}")
    build_shards(config, building, str(options["engine"]))
    try:
        building.rename(folder)
    except OSError:  # another process finished the same build first
        shutil.rmtree(building, ignore_errors=True)
    return ShardIndex.read(folder)


def training_universe(lake: Any, options: Mapping[str, Any]) -> list[str] | None:
    """data.symbols: a list, a count N (the first N symbols of the dataset, sorted) or null (all of them)."""
    chosen = options["symbols"]
    if chosen is None or isinstance(chosen, list):
        return chosen
    if isinstance(chosen, bool) or not isinstance(chosen, int) or chosen < 1:
        raise FinfusionError(f"data.symbols: expected a list, a positive count or null, got {chosen!r}")
    stored = lake.symbols("bars", str(options["dataset"]), str(options["freq"]))
    if chosen > len(stored):
        raise FinfusionError(f"data.symbols: {chosen} asked, dataset '{options['dataset']}' has {len(stored)}")
    return stored[:chosen]


def evaluation_universe(lake: Any, options: Mapping[str, Any], wanted: Any) -> list[str] | None:
    """evaluation.symbols: a list, "unseen" (every symbol of the dataset outside the training universe) or null
    (the training universe)."""
    if wanted != "unseen":
        return wanted if wanted is not None else training_universe(lake, options)
    trained = set(training_universe(lake, options) or [])
    unseen = [s for s in lake.symbols("bars", str(options["dataset"]), str(options["freq"])) if s not in trained]
    if not unseen:
        raise FinfusionError("evaluation.symbols: unseen, but every symbol of the dataset is in data.symbols")
    return unseen


def split_masks(windows: ShardWindows, train_end_us: int, val_end_us: int) -> dict[str, np.ndarray]:
    """train: futures end before train_end; val: origin >= train_end, futures end before val_end; test: origin >=
    val_end."""
    origins, ends = windows.column("origin_us"), windows.column("target_us")[:, -1]
    return {
        "train": ends < train_end_us,
        "val": (origins >= train_end_us) & (ends < val_end_us),
        "test": origins >= val_end_us,
    }


def split_instants(options: Mapping[str, Any]) -> tuple[int, int]:
    from finfusion.forecasting.data import instant_us

    split = options["split"]
    if split.get("train_end") is None or split.get("val_end") is None:
        raise FinfusionError("data.split: the universal family needs train_end and val_end dates")
    train_end, val_end = instant_us(split["train_end"]), instant_us(split["val_end"])
    if val_end <= train_end:
        raise FinfusionError(f"data.split: val_end {split['val_end']} is not after train_end {split['train_end']}")
    return train_end, val_end


def forecasts_of(model: Capabilities, windows: ShardWindows, batch_size: int = 256) -> Any:
    """`Forecasts` of every window (in order): the model's point, quantiles / samples, the realised target path."""
    from finfusion.forecasting.forecast import Forecasts, predicted_batches

    parts: dict[str, list[np.ndarray]] = {}
    for batch, outputs in predicted_batches(model, windows, batch_size):
        parts.setdefault("point", []).append(outputs["point"].double().numpy())
        parts.setdefault("past", []).append(batch["past"][..., :1].double().numpy())
        for key in ("quantiles", "samples"):
            if key in outputs:
                parts.setdefault(key, []).append(outputs[key].double().numpy())
    joined = {key: np.concatenate(value) for key, value in parts.items()}
    realised = windows.column("future").astype(np.float64)
    return Forecasts(
        symbols=tuple(windows.index.symbols),
        targets=(TARGET,),
        symbol_index=windows.column("symbol_index"),
        origin_us=windows.column("origin_us"),
        target_us=windows.column("target_us"),
        point=joined["point"],
        realised=realised,
        past=joined["past"],
        levels=tuple(float(q) for q in model.quantile_levels) if "quantiles" in joined else (),  # type: ignore[attr-defined]
        quantiles=joined.get("quantiles"),
        samples=joined.get("samples"),
    )


def evaluation_options(cfg: DictConfig) -> dict[str, Any]:
    merged = OmegaConf.merge(OmegaConf.create(UNIVERSAL_EVALUATION), plain(cfg.get("evaluation") or {}))
    options = OmegaConf.to_container(merged, resolve=True)
    options["dm_loss"] = [options["dm_loss"]] if isinstance(options["dm_loss"], str) else list(options["dm_loss"])
    return options


def score_test_span(
    cfg: DictConfig,
    model: Capabilities,
    model_arguments: Mapping[str, Any],
    loader: Any,
    run_dir: Path,
    progress: Any,
) -> Any:
    """Forecast the test span of `evaluation.symbols` (default: the pre-training universe) once with the pre-trained
    `model` (zero-shot on assets it never saw), with a copy of it fine-tuned on those assets' own training span when
    `evaluation.finetune_epochs` > 0, and with the baselines (trained ones, e.g. PatchTST, fitted on that span too;
    selection on its validation span), score them (forecasting/walk_forward.py `score`) and write the report."""
    import copy

    from finfusion.evaluation.report import write_report
    from finfusion.forecasting.walk_forward import baseline_labels, model_parts, score
    from finfusion.models.build import build_model
    from finfusion.samples.universal import ShardWindows
    from finfusion.training.fitting import fit_model, seed_everything

    options = universal_options(cfg.data)
    evaluation = evaluation_options(cfg)
    train_end, val_end = split_instants(options)
    from finfusion.data.lake import Lake

    lake = Lake(options["lake"])
    trained = training_universe(lake, options)
    symbols = evaluation_universe(lake, options, evaluation["symbols"])
    index = shards_for(options, symbols)
    windows = ShardWindows(index)
    spans = split_masks(windows, train_end, val_end)
    own_train, own_val, test = (windows.subset(spans[name]) for name in ("train", "val", "test"))
    if len(test) == 0:
        raise FinfusionError("evaluation: no test windows after data.split.val_end for evaluation.symbols")
    unseen = sorted(set(index.symbols) - set(trained or index.symbols))
    progress(f"test span: {len(test):,} windows of {len(index.symbols)} assets ({len(unseen)} never seen in training)")
    baselines = [*evaluation["baselines"], *evaluation["direction_baselines"]]
    parts = model_parts(cfg, baselines)
    label = str(evaluation["label"] or cfg.model.name)
    forecasts = {f"{label}_zero_shot" if unseen else label: forecasts_of(model, test)}
    epochs = int(evaluation["finetune_epochs"])
    if epochs > 0:
        tuned_cfg = cfg.copy()
        tuned_cfg.trainer.max_epochs = epochs
        tuned = copy.deepcopy(model).train()  # the pre-trained model was left in eval mode
        progress(f"  fine-tuning {label} for {epochs} epochs on {len(own_train):,} windows of the test assets")
        fit_model(tuned_cfg, tuned, own_train, own_val, loader, run_dir / "finetuned", resume="never")
        forecasts[f"{label}_finetuned"] = forecasts_of(tuned, test)
    for name, part in list(parts.items())[1:]:
        part_cfg = cfg.copy()
        part_cfg.model = OmegaConf.create(part)
        seed_everything(part_cfg)
        baseline = build_model(part, model_arguments)
        fit_model(part_cfg, baseline, own_train, own_val, loader, run_dir / "baselines" / name, resume="never")
        forecasts[name] = forecasts_of(baseline, test)
        progress(f"  {name}: forecast {len(test):,} windows")
    scored = score(forecasts, baseline_labels(baselines), evaluation, run_dir)
    origins = test.column("origin_us")
    scored.folds, scored.fold_bounds = 1, [(int(origins.min()), int(origins.max()))]
    scored.design = (
        f"one pre-training (selection on the validation span), the test span from {options['split']['val_end']} "
        f"scored once on {len(index.symbols)} assets, {len(unseen)} of them never seen in training"
    )
    write_report(run_dir)
    return scored
