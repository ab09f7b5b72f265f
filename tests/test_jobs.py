"""Batch jobs: idempotent reruns, crash safety, --latest windows, point-in-time features, the finetune gate.

The model is a tiny linear scorer over four bar features (fitted by least squares to the next bar's return);
The command-line test serves a forecast-family experiment (DLinear) through the same jobs, from its config.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from typer.testing import CliRunner

from finfusion.commands.serve import app as serve_app
from finfusion.data.ingest import BarOptions
from finfusion.data.lake import Lake
from finfusion.data.schema import WEIGHTS
from finfusion.data.sources.synthetic import SyntheticConfig, generate_market
from finfusion.errors import FinfusionError
from finfusion.features.bars import FeatureConfig, build_features
from finfusion.features.normalize import FittedNormalizer
from finfusion.serving import jobs
from finfusion.serving.data_jobs import FeatureJobOptions, FolderSource, run_features, run_ingest
from finfusion.serving.jobs import JobError, JobRunner, PipelineSpec, Span
from finfusion.serving.model_jobs import checked_rows, run_finetune, run_predict, run_train
from finfusion.serving.model_store import ModelStore
from finfusion.serving.steps import ModelArtifact, ModelSteps
from tests.conftest import snapshot

COLUMNS = ["ret_1", "ret_5", "rv_20", "ma_ratio_5"]
VALIDATION_SHARE = 0.3
SPEC = PipelineSpec(bars="live", model="toy")

# ---------------------------------------------------------------------------------------------------------------
# The toy model's steps
# ---------------------------------------------------------------------------------------------------------------


def _design(lake: Lake, spec: PipelineSpec, span: Span) -> tuple[pl.DataFrame, torch.Tensor]:
    """Feature rows in `span` [N, symbol/ts/...] and their inputs [N, 5] (four features and a constant)."""
    frame = lake.read("features", spec.features, freq=spec.freq).filter(span.mask("ts")).sort("symbol", "ts")
    inputs = frame.select(pl.col(COLUMNS).fill_null(0.0).fill_nan(0.0)).to_numpy()
    x = torch.from_numpy(np.hstack([inputs, np.ones((frame.height, 1))])).to(torch.float64)
    return frame, x


def _train_valid(lake: Lake, spec: PipelineSpec, span: Span) -> tuple[torch.Tensor, ...]:
    """(x_train, y_train, x_valid, y_valid): target = the next bar's ret_1; the last 30% of instants validate."""
    frame, x = _design(lake, spec, span)
    target = frame.select(pl.col("ret_1").shift(-1).over("symbol")).to_series()
    keep = torch.from_numpy(target.is_not_null().to_numpy())
    y = torch.tensor(target.fill_null(0.0).to_numpy(), dtype=torch.float64)
    instants = frame["ts"].unique().sort()
    cut = instants[int(len(instants) * (1 - VALIDATION_SHARE))]
    valid = torch.from_numpy((frame["ts"] >= cut).to_numpy())
    return x[keep & ~valid], y[keep & ~valid], x[keep & valid], y[keep & valid]


def _fit(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.linalg.lstsq(x, y.unsqueeze(1)).solution.squeeze(1)


def toy_validate(lake: Lake, spec: PipelineSpec, span: Span, model: ModelArtifact) -> float:
    _, _, x_valid, y_valid = _train_valid(lake, spec, span)
    return float(((x_valid @ model.state_dict["coef"] - y_valid) ** 2).mean())


def toy_train(lake: Lake, spec: PipelineSpec, span: Span) -> ModelArtifact:
    x_train, y_train, _, _ = _train_valid(lake, spec, span)
    artifact = ModelArtifact({"coef": _fit(x_train, y_train)}, {"columns": COLUMNS})
    return replace(artifact, metrics={"val_loss": toy_validate(lake, spec, span, artifact)})


def toy_finetune(lake: Lake, spec: PipelineSpec, span: Span, base: ModelArtifact) -> ModelArtifact:
    """Refit on the span's training part (a real improvement over a poor base)."""
    x_train, y_train, _, _ = _train_valid(lake, spec, span)
    return ModelArtifact({"coef": _fit(x_train, y_train)}, base.config, {"train_rows": float(len(y_train))})


def noisy_finetune(lake: Lake, spec: PipelineSpec, span: Span, base: ModelArtifact) -> ModelArtifact:
    """A finetune gone wrong: the coefficients get large noise, so validation gets worse."""
    noise = torch.randn(base.state_dict["coef"].shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return ModelArtifact({"coef": base.state_dict["coef"] + 10.0 * noise}, base.config)


def toy_predict(lake: Lake, spec: PipelineSpec, span: Span, model: ModelArtifact) -> pl.DataFrame:
    """Market-neutral weights from the scores of each instant's feature rows (nothing after t is used)."""
    frame, x = _design(lake, spec, span)
    scored = frame.select("ts", "symbol").with_columns(score=pl.Series((x @ model.state_dict["coef"]).numpy()))
    centred = pl.col("score") - pl.col("score").mean().over("ts")
    gross = centred.abs().sum().over("ts")
    return scored.select("ts", "symbol", weight=pl.when(gross > 0).then(centred / gross).otherwise(0.0))


STEPS = ModelSteps(train=toy_train, finetune=toy_finetune, validate=toy_validate, predict=toy_predict)

# ---------------------------------------------------------------------------------------------------------------
# Data: a small synthetic market split at CUT into an early and a late drop folder
# ---------------------------------------------------------------------------------------------------------------

DAY = datetime(2020, 1, 2, 21, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def market_bars() -> pl.DataFrame:
    market = generate_market(SyntheticConfig(n_symbols=4, start="2020-01-01", end="2020-06-30", seed=3))
    return market.bars


def drop_folder(folder: Path, bars: pl.DataFrame) -> Path:
    """Bars as one CSV per symbol (date, OHLCV, adj_factor), as a vendor would drop them."""
    folder.mkdir(parents=True, exist_ok=True)
    local = bars.with_columns(date=pl.col("ts").dt.convert_time_zone("America/New_York").dt.date())
    for (symbol,), part in local.partition_by("symbol", as_dict=True).items():
        columns = ["date", "open", "high", "low", "close", "volume", "adj_factor"]
        part.select(columns).write_csv(folder / f"{symbol}.csv")
    return folder


def early(bars: pl.DataFrame) -> pl.DataFrame:
    return bars.filter(pl.col("ts").dt.date() < pl.date(2020, 5, 1))


def source(folder: Path) -> FolderSource:
    return FolderSource(folder, BarOptions(dataset=SPEC.bars))


@pytest.fixture
def runner(tmp_path: Path) -> JobRunner:
    return JobRunner(tmp_path / "lake" / "_jobs")


@pytest.fixture
def lake(tmp_path: Path) -> Lake:
    return Lake(tmp_path / "lake")


def lake_bytes(lake: Lake) -> dict[str, bytes]:
    """The lake's files without the job state folder."""
    return {k: v for k, v in snapshot(lake.root).items() if not k.startswith("_jobs/")}


# ---------------------------------------------------------------------------------------------------------------
# Ingest
# ---------------------------------------------------------------------------------------------------------------


def test_ingest_is_incremental_and_idempotent(
    tmp_path: Path, lake: Lake, runner: JobRunner, market_bars: pl.DataFrame
) -> None:
    folder = drop_folder(tmp_path / "drop", early(market_bars))
    first = run_ingest(runner, lake, source(folder))
    assert first.status == "done" and first.details["new_rows"] == {"bars/live": early(market_bars).height}
    assert runner.state("ingest.live").last_processed == early(market_bars)["ts"].max()
    before = lake_bytes(lake)
    again = run_ingest(runner, lake, source(folder))
    assert again.status == "up-to-date" and lake_bytes(lake) == before  # the second run does nothing

    drop_folder(folder, market_bars)  # the vendor appends the later bars to the same files
    later = run_ingest(runner, lake, source(folder))
    assert later.details["new_rows"] == {"bars/live": market_bars.height - early(market_bars).height}
    stored = lake.read("bars", "live", freq="1d")
    assert stored.height == market_bars.height
    assert runner.state("ingest.live").last_processed == market_bars["ts"].max()


def test_ingest_latest_only_touches_the_window(
    tmp_path: Path, lake: Lake, runner: JobRunner, market_bars: pl.DataFrame
) -> None:
    folder = drop_folder(tmp_path / "drop", market_bars)
    run_ingest(runner, lake, source(folder))
    sessions = market_bars["ts"].unique().sort()
    old_ts, new_ts = sessions[-21], sessions[-2]  # a month back, and the day before the last
    corrected = market_bars.with_columns(
        volume=pl.when(pl.col("ts").is_in([old_ts, new_ts])).then(pl.col("volume") + 1.0).otherwise("volume")
    )
    drop_folder(folder, corrected)
    window = run_ingest(runner, lake, source(folder), latest_hours=24 * 7)
    assert window.status == "done" and window.details["updated_rows"]["bars/live"] > 0
    stored = lake.read("bars", "live", freq="1d").join(
        market_bars.select("symbol", "ts", original=pl.col("volume")), on=["symbol", "ts"]
    )
    changed = stored.filter(pl.col("volume") != pl.col("original"))["ts"].unique().to_list()
    assert changed == [new_ts]  # the correction inside the last week merged; the older one is outside the window


# ---------------------------------------------------------------------------------------------------------------
# Features
# ---------------------------------------------------------------------------------------------------------------

NORMALISE = FeatureJobOptions(normalize="zscore", fit_start="2020-01-01", fit_end="2020-04-01")


def test_features_incremental_equal_full_rebuild_and_past_does_not_move(
    tmp_path: Path, lake: Lake, runner: JobRunner, market_bars: pl.DataFrame
) -> None:
    folder = drop_folder(tmp_path / "drop", early(market_bars))
    run_ingest(runner, lake, source(folder))
    first = run_features(runner, lake, SPEC, NORMALISE)
    assert first.status == "done" and first.details["normalizer"] == "fitted"
    assert run_features(runner, lake, SPEC, NORMALISE).status == "up-to-date"
    past = lake.read("features", "live", freq="1d")

    drop_folder(folder, market_bars)
    run_ingest(runner, lake, source(folder))
    second = run_features(runner, lake, SPEC, NORMALISE)
    assert second.details["normalizer"] == "reused"
    incremental = lake.read("features", "live", freq="1d")
    assert incremental.height == market_bars.height
    assert incremental.join(past, on=["symbol", "ts"], how="semi").equals(past)  # old rows untouched

    # a full rebuild on the same bars gives the same rows as the incremental runs
    bars = lake.read("bars", "live", freq="1d")
    full_z = FittedNormalizer.load(lake, SPEC.features, SPEC.freq).transform(build_features(bars, FeatureConfig()))
    assert incremental.select(full_z.columns).equals(full_z.sort("symbol", "ts"))

    # point-in-time: a different future (perturbed later bars) leaves every feature before the cut unchanged
    other = Lake(tmp_path / "other")
    future = market_bars.with_columns(
        close=pl.when(pl.col("ts").dt.date() >= pl.date(2020, 5, 1)).then(pl.col("close") * 1.5).otherwise("close"),
        high=pl.when(pl.col("ts").dt.date() >= pl.date(2020, 5, 1)).then(pl.col("high") * 1.5).otherwise("high"),
    )
    other_runner = JobRunner(other.root / "_jobs")
    run_ingest(other_runner, other, source(drop_folder(tmp_path / "drop2", future)))
    run_features(other_runner, other, SPEC, NORMALISE)
    rebuilt = other.read("features", "live", freq="1d")
    assert rebuilt.join(past, on=["symbol", "ts"], how="semi").equals(past)
    assert not rebuilt.equals(incremental)  # the perturbation did reach the later features


def test_features_latest_writes_only_the_window(
    tmp_path: Path, lake: Lake, runner: JobRunner, market_bars: pl.DataFrame
) -> None:
    run_ingest(runner, lake, source(drop_folder(tmp_path / "drop", market_bars)))
    result = run_features(runner, lake, SPEC, latest_hours=24 * 10)
    written = lake.read("features", "live", freq="1d")
    end = market_bars["ts"].max()
    assert result.status == "done" and written["ts"].min() > end - timedelta(hours=240)
    assert 0 < written["ts"].n_unique() <= 8  # at most 8 sessions in 10 calendar days
    assert run_features(runner, lake, SPEC, latest_hours=24 * 10).status == "up-to-date"


def test_features_refuse_to_mix_normalised_rows(
    tmp_path: Path, lake: Lake, runner: JobRunner, market_bars: pl.DataFrame
) -> None:
    folder = drop_folder(tmp_path / "drop", early(market_bars))
    run_ingest(runner, lake, source(folder))
    run_features(runner, lake, SPEC)
    drop_folder(folder, market_bars)
    run_ingest(runner, lake, source(folder))
    with pytest.raises(JobError, match="exist without a normaliser"):
        run_features(runner, lake, SPEC, NORMALISE)
    with pytest.raises(JobError, match="run the ingest job first"):
        run_features(runner, lake, replace(SPEC, bars="absent"))


# ---------------------------------------------------------------------------------------------------------------
# Locks and crashes
# ---------------------------------------------------------------------------------------------------------------


def test_a_job_runs_once_at_a_time_and_a_dead_holder_frees_the_lock(
    tmp_path: Path, lake: Lake, runner: JobRunner, market_bars: pl.DataFrame
) -> None:
    folder = drop_folder(tmp_path / "drop", early(market_bars))
    lock = runner.state_dir / "ingest.live.lock"
    runner.state_dir.mkdir(parents=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", f"import fcntl,sys,time; f=open({str(lock)!r},'a+'); fcntl.flock(f, fcntl.LOCK_EX); "
         "print('locked', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(JobError, match="already running"):
            run_ingest(runner, lake, source(folder))
    finally:
        holder.kill()
        holder.wait()
    assert run_ingest(runner, lake, source(folder)).status == "done"  # the kernel released the dead process's lock


def test_crash_before_the_state_is_saved_then_rerun_does_nothing_new(
    tmp_path: Path, lake: Lake, runner: JobRunner, market_bars: pl.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = drop_folder(tmp_path / "drop", market_bars)

    def crash(*_: object, **__: object) -> None:
        raise OSError("killed before the state file was written")

    monkeypatch.setattr(jobs, "write_json_atomic", crash)
    with pytest.raises(OSError, match="killed"):
        run_ingest(runner, lake, source(folder))
    monkeypatch.undo()
    assert runner.state("ingest.live").last_processed is None
    written = lake_bytes(lake)
    rerun = run_ingest(runner, lake, source(folder))
    assert rerun.status == "up-to-date" and lake_bytes(lake) == written  # work is computed from the lake


# ---------------------------------------------------------------------------------------------------------------
# Train, finetune, predict
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture
def featured(tmp_path: Path, lake: Lake, runner: JobRunner, market_bars: pl.DataFrame) -> Path:
    """A lake with the early bars and their features; returns the drop folder (for later bars)."""
    folder = drop_folder(tmp_path / "drop", early(market_bars))
    run_ingest(runner, lake, source(folder))
    run_features(runner, lake, SPEC)
    return folder


def add_later_bars(folder: Path, lake: Lake, runner: JobRunner, bars: pl.DataFrame) -> None:
    drop_folder(folder, bars)
    run_ingest(runner, lake, source(folder))
    run_features(runner, lake, SPEC)


def test_train_then_predict_idempotent_and_crash_safe(
    tmp_path: Path, lake: Lake, runner: JobRunner, featured: Path, market_bars: pl.DataFrame
) -> None:
    store = ModelStore(tmp_path / "store", SPEC.model)
    trained = run_train(runner, lake, store, SPEC, toy_train)
    version = trained.details["version"]
    assert trained.status == "done" and store.current_version() == version
    assert store.version(version).metrics["val_loss"] is not None
    assert run_train(runner, lake, store, SPEC, toy_train).status == "up-to-date"
    assert len(store.list_versions()) == 1

    calls = {"n": 0}

    def crashing_predict(*args: object) -> pl.DataFrame:
        calls["n"] += 1
        raise RuntimeError("worker killed mid-prediction")

    with pytest.raises(RuntimeError, match="mid-prediction"):
        run_predict(runner, lake, store, SPEC, crashing_predict)
    assert calls["n"] == 1 and not lake.files("weights", SPEC.model)
    done = run_predict(runner, lake, store, SPEC, toy_predict)
    weights = lake.read("weights", SPEC.model)
    assert done.status == "done" and weights["model_version"].unique().to_list() == [version]
    assert weights["ts"].n_unique() == lake.read("features", "live", freq="1d")["ts"].n_unique()
    assert weights.group_by("ts").agg(pl.col("weight").sum().abs().max())["weight"].max() < 1e-9  # market neutral
    before = lake_bytes(lake)
    assert run_predict(runner, lake, store, SPEC, toy_predict).status == "up-to-date"
    assert lake_bytes(lake) == before

    add_later_bars(featured, lake, runner, market_bars)
    later = run_predict(runner, lake, store, SPEC, toy_predict)
    new = lake.read("weights", SPEC.model).join(weights, on=["ts", "symbol"], how="anti")
    assert later.status == "done" and new["ts"].min() > weights["ts"].max()  # only the new decision instants
    assert lake.read("weights", SPEC.model).join(weights, on=["ts", "symbol"], how="semi").equals(weights)


def test_finetune_worse_on_validation_keeps_the_served_model(
    tmp_path: Path, lake: Lake, runner: JobRunner, featured: Path, market_bars: pl.DataFrame
) -> None:
    store = ModelStore(tmp_path / "store", SPEC.model)
    served = run_train(runner, lake, store, SPEC, toy_train).details["version"]
    assert run_finetune(runner, lake, store, SPEC, noisy_finetune, toy_validate).status == "up-to-date"  # no new data
    add_later_bars(featured, lake, runner, market_bars)

    result = run_finetune(runner, lake, store, SPEC, noisy_finetune, toy_validate, latest_hours=24 * 45)
    assert result.status == "rejected" and result.details["val_loss"] > result.details["base_val_loss"]
    assert store.current_version() == served  # the served model is unchanged
    rejected = store.version(result.details["candidate"])
    assert rejected.info["status"] == "rejected" and rejected.info["parent"] == served and not rejected.current
    assert run_predict(runner, lake, store, SPEC, toy_predict).details["version"] == served
    assert run_finetune(runner, lake, store, SPEC, noisy_finetune, toy_validate).status == "up-to-date"


def test_finetune_that_improves_is_promoted(
    tmp_path: Path, lake: Lake, runner: JobRunner, featured: Path, market_bars: pl.DataFrame
) -> None:
    store = ModelStore(tmp_path / "store", SPEC.model)
    end = lake.read("features", "live", freq="1d")["ts"].max()
    poor = store.save_version(
        {"coef": torch.full((5,), 0.5, dtype=torch.float64)}, {"columns": COLUMNS}, {},
        info={"kind": "train", "data": Span(None, end).as_dict()},
    )  # fmt: skip
    store.promote(poor)
    add_later_bars(featured, lake, runner, market_bars)
    result = run_finetune(runner, lake, store, SPEC, toy_finetune, toy_validate, latest_hours=24 * 45)
    assert result.status == "done" and result.details["val_loss"] < result.details["base_val_loss"]
    assert store.current_version() == result.details["candidate"] != poor
    assert [v.version for v in store.list_versions()] == [poor, result.details["candidate"]]  # previous kept
    assert result.span is not None and result.span.start == result.span.end - timedelta(hours=24 * 45)


def test_predict_output_is_checked() -> None:
    span = Span(None, DAY)
    good = pl.DataFrame({"ts": [DAY], "symbol": ["AAA"], "weight": [0.5]})
    assert checked_rows(good, WEIGHTS, span, "v1")["model_version"].to_list() == ["v1"]
    cases: list[tuple[pl.DataFrame, str]] = [
        (good.drop("weight"), "no column"),
        (good.with_columns(ts=pl.lit(DAY + timedelta(days=1))), "outside the span"),
        (pl.concat([good, good]), "two weights"),
        (good.with_columns(symbol=pl.lit("../x")), "invalid symbol"),
        (good.with_columns(weight=pl.lit(float("inf"))), "non-finite"),
        (good.with_columns(weight=pl.lit(None, dtype=pl.Float64)), "missing values"),
    ]
    for frame, message in cases:
        with pytest.raises(FinfusionError, match=message):
            checked_rows(frame, WEIGHTS, span, "v1")


def test_latest_must_be_positive() -> None:
    with pytest.raises(JobError, match="positive number of hours"):
        jobs.latest_start(DAY, 0)


# ---------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------


def test_cli_runs_the_pipeline_for_a_forecast_family_config(tmp_path: Path, market_bars: pl.DataFrame) -> None:
    folder = drop_folder(tmp_path / "drop", early(market_bars))
    lake_root, store_root = str(tmp_path / "lake"), str(tmp_path / "store")
    invoke: Callable[..., object] = CliRunner().invoke
    common = ["--lake", lake_root]
    tiny = ["data.texts.enabled=false", "data.lookback=16", "data.horizon=2", "trainer.max_epochs=1"]
    settings = [word for setting in tiny for word in ("--set", setting)]
    model = ["--config", "dlinear_synthetic", *settings, "--model", "toy", "--store", store_root, *common]
    commands = [
        ["job", "ingest", str(folder), "--dataset", "live", *common],
        ["job", "features", "live", *common],
        ["job", "train", "live", *model],
        ["job", "predict", "live", *model],
        ["job", "predict", "live", *model],
        ["job", "finetune", "live", *model],
    ]
    outputs = []
    for args in commands:
        result = invoke(serve_app, args, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        outputs.append(result.output)
    assert "ingest.live done" in outputs[0] and "train.toy done" in outputs[2] and "predict.toy done" in outputs[3]
    assert "predict.toy up-to-date" in outputs[4] and "finetune.toy up-to-date" in outputs[5]
    forecasts = Lake(tmp_path / "lake").read("forecasts", "toy")
    assert forecasts["step"].max() == 2 and forecasts["origin_ts"].n_unique() > 10
    bad = invoke(serve_app, ["job", "train", "live", "--config", "nowhere", "--store", store_root, *common])
    assert bad.exit_code != 0 and "no config file nowhere" in bad.output
