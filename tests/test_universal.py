"""The iterative per-asset builder (seed 003) and the universal family on a small generated market: shards equal a
direct computation, do not depend on the batch size, hold nothing from after a window's decision, and leave no
temporary files; a pre-training run is a checkpoint a forecast experiment starts from."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from finfusion.data.lake import Lake
from finfusion.data.schema import BARS
from finfusion.data.sources.synthetic import SyntheticConfig
from finfusion.data.sources.synthetic_ingest import make_and_ingest
from finfusion.errors import FinfusionError
from finfusion.features.bars import build_features
from finfusion.samples.universal import EXCESS, MARKET, BuilderConfig, ShardWindows, build_shards


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("universal-lake")
    make_and_ingest(Lake(root), SyntheticConfig(n_symbols=5, start="2018-01-01", end="2019-12-31", seed=2), "syn")
    return root


def config(lake: Path, **changes: object) -> BuilderConfig:
    settings = {"lake": str(lake), "dataset": "syn", "lookback": 30, "horizon": 5, "stride": 3, "batch_assets": 2}
    return BuilderConfig(**{**settings, **changes})  # type: ignore[arg-type]


def test_shards_hold_the_features_and_market_return_of_a_direct_computation(market: Path, tmp_path: Path) -> None:
    built = build_shards(config(market), tmp_path / "shards")
    assert built.shards == ["part-00000", "part-00001", "part-00002"]  # 5 assets in batches of 2
    assert not list((tmp_path / "shards").glob("_tmp-*"))  # each batch's temporary files were removed
    windows = ShardWindows(built)
    assert np.isfinite(windows.column("past")).all()  # windows start once every covariate's warm-up is over
    bars = Lake(market).read("bars", "syn", freq="1d")
    features = build_features(bars)
    market_return = features.group_by("ts").agg(pl.col("ret_1").drop_nulls().mean().alias(MARKET))
    direct = features.join(market_return, on="ts").with_columns((pl.col("ret_1") - pl.col(MARKET)).alias(EXCESS))
    origins, symbols = windows.column("origin_us"), windows.column("symbol_index")
    for row in (0, len(windows) // 2, len(windows) - 1):
        symbol = built.symbols[int(symbols[row])]
        mine = direct.filter(pl.col("symbol") == symbol).sort("ts")
        ts = mine["ts"].dt.epoch("us").to_numpy()
        at = int(np.searchsorted(ts, origins[row]))
        expected = mine.select(built.columns).to_numpy()
        sample = windows[row]
        np.testing.assert_allclose(sample["past"].numpy(), expected[at - 29 : at + 1], rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(sample["future"][:, 0].numpy(), expected[at + 1 : at + 6, 0], rtol=1e-6)


def test_the_build_does_not_depend_on_the_batch_size(market: Path, tmp_path: Path) -> None:
    one = ShardWindows(build_shards(config(market, batch_assets=1), tmp_path / "one"))
    all_at_once = ShardWindows(build_shards(config(market, batch_assets=10), tmp_path / "all"))
    for name in ("past", "future", "origin_us", "symbol_index"):
        np.testing.assert_array_equal(one.column(name), all_at_once.column(name))


def test_nothing_after_a_decision_reaches_its_past(market: Path, tmp_path: Path) -> None:
    """Bars after `cut` are changed (every asset, so the market return too): windows decided before `cut` keep
    their past bit for bit."""
    bars = Lake(market).read("bars", "syn", freq="1d")
    cut = pl.datetime(2019, 6, 3, 21, time_zone="UTC")
    later = pl.col("ts") >= cut
    changed = bars.with_columns(
        [pl.when(later).then(pl.col(c) * 1.7).otherwise(pl.col(c)).alias(c) for c in ("open", "high", "low", "close")]
        + [pl.when(later).then(pl.col("volume") * 3).otherwise(pl.col("volume")).alias("volume")]
    )
    other = Lake(tmp_path / "changed")
    other.write(BARS, "syn", changed, freq="1d")
    before = ShardWindows(build_shards(config(market), tmp_path / "a"))
    after = ShardWindows(build_shards(config(tmp_path / "changed"), tmp_path / "b"))
    decided = before.column("origin_us") < int(bars.filter(later)["ts"].dt.epoch("us").min())
    np.testing.assert_array_equal(before.column("origin_us"), after.column("origin_us"))
    np.testing.assert_array_equal(before.column("past")[decided], after.column("past")[decided])
    assert not np.array_equal(before.column("past")[~decided], after.column("past")[~decided], equal_nan=True)


def test_an_unknown_symbol_or_covariate_is_one_line(market: Path, tmp_path: Path) -> None:
    with pytest.raises(FinfusionError, match="symbol 'NOPE' is not in bars dataset 'syn'"):
        build_shards(config(market, symbols=("NOPE",)), tmp_path / "x")
    with pytest.raises(FinfusionError, match="unknown covariate 'rsi_99'"):
        build_shards(config(market, covariates=("rsi_99",)), tmp_path / "y")


def test_a_pretraining_run_is_a_checkpoint_a_forecast_model_starts_from(market: Path, tmp_path: Path) -> None:
    from finfusion.config import load_config
    from finfusion.families.pipeline import train_run
    from finfusion.models.registry import build_model

    overrides = [
        f"data.lake={market}", "data.source=lake", "data.dataset=syn", "data.symbols=3", "data.lookback=32",
        "data.horizon=4", "data.stride=4", "data.split.train_end=2019-06-01", "data.split.val_end=2019-09-01",
        "trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
        "trainer.enable_progress_bar=false", "model.num_samples=4", "task.val_num_samples=2",
    ]  # fmt: skip
    run = train_run(load_config("moirai_pretrain_synthetic", overrides), tmp_path / "run", resume="never")
    assert run.data.state["symbols"] == Lake(market).symbols("bars", "syn", "1d")[:3]
    started = build_model("moirai", n_channels=1, context_length=32, horizon=4, patch_size=8,
                          pretrained=str(tmp_path / "run"))  # fmt: skip
    for name, tensor in run.model.module.state_dict().items():
        torch.testing.assert_close(started.module.state_dict()[name], tensor, rtol=0, atol=0)


def test_two_process_ddp_on_cpu_trains_the_universal_family(market: Path, tmp_path: Path) -> None:
    """`trainer.strategy=ddp` with 2 CPU processes (gloo) through `finfusion train`: both ranks train on their share
    of the batches and rank 0 writes the run folder."""
    import os
    import subprocess
    import sys

    run = tmp_path / "ddp"
    command = [
        sys.executable, "-m", "finfusion", "train", "--config", "moirai_pretrain_synthetic", "--run", str(run),
        "--lake", str(market), "data.source=lake", "data.dataset=syn", "data.symbols=3", "data.lookback=32",
        "data.horizon=4", "data.stride=4", "data.split.train_end=2019-06-01", "data.split.val_end=2019-09-01",
        "trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
        "trainer.enable_progress_bar=false", "trainer.strategy=ddp", "trainer.devices=2", "trainer.accelerator=cpu",
        "trainer.loggers=[csv]", "model.num_samples=4", "task.val_num_samples=2", "data.batch_size=16",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "MEMBER: 1/2" in done.stderr and "MEMBER: 2/2" in done.stderr
    assert {"config.yaml", "model.safetensors", "state.json"} <= {p.name for p in run.iterdir()}


def test_a_forecast_experiment_forecasts_zero_shot_from_a_pretraining_run(market: Path, tmp_path: Path) -> None:
    from finfusion.config import load_config
    from finfusion.families.pipeline import predict_run, train_run

    common = [f"data.lake={market}", "data.source=lake", "data.dataset=syn", "data.lookback=32", "data.horizon=4",
              "trainer.limit_train_batches=2", "trainer.limit_val_batches=1", "trainer.enable_progress_bar=false",
              "model.num_samples=4"]  # fmt: skip
    pretraining = load_config(
        "moirai_pretrain_synthetic",
        [
            *common,
            "data.symbols=3",
            "data.stride=4",
            "data.split.train_end=2019-06-01",
            "data.split.val_end=2019-09-01",
            "trainer.max_epochs=1",
            "task.val_num_samples=2",
        ],
    )
    pretrained = train_run(pretraining, tmp_path / "pretrained", resume="never")
    zero_shot = load_config(
        "moirai_synthetic", [*common, "trainer.max_epochs=0", f"model.pretrained={tmp_path / 'pretrained'}"]
    )
    run = train_run(zero_shot, tmp_path / "zero_shot", resume="never")
    for name, tensor in pretrained.model.module.state_dict().items():
        torch.testing.assert_close(run.model.module.state_dict()[name], tensor, rtol=0, atol=0)
    shutil.rmtree(tmp_path / "pretrained")  # the run folder alone predicts: it stored the architecture
    forecasts = predict_run(tmp_path / "zero_shot", "test").forecasts
    assert len(forecasts) > 0 and np.isfinite(forecasts.point).all()


def test_the_builder_on_ray_data_writes_the_same_shards(market: Path, tmp_path: Path) -> None:
    ray = pytest.importorskip("ray", reason="the ray extra is not installed")
    local = ShardWindows(build_shards(config(market), tmp_path / "local"))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        distributed = ShardWindows(build_shards(config(market), tmp_path / "ray", engine="ray"))
    finally:
        ray.shutdown()
    assert distributed.index.counts == local.index.counts
    for name in ("past", "future", "origin_us", "symbol_index", "target_us"):
        np.testing.assert_array_equal(distributed.column(name), local.column(name))
    assert not list((tmp_path / "ray").glob("_tmp-*"))
