"""The shared feature pipeline (finfusion.features.pipeline): the command and the features job write the same rows."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from finfusion.commands.features import app
from finfusion.data.lake import Lake
from finfusion.data.schema import BARS
from finfusion.data.sources.synthetic import SyntheticConfig, generate_market
from finfusion.errors import FinfusionError
from finfusion.features.pipeline import SAVED, Exogenous, NormalizerFit, build_feature_set
from finfusion.serving.data_jobs import FeatureJobOptions, run_features
from finfusion.serving.jobs import JobRunner, PipelineSpec

FIT = NormalizerFit("robust", "2019-01-01", "2019-06-01")


@pytest.fixture
def lake(tmp_path: Path) -> Lake:
    store = Lake(tmp_path / "lake")
    bars = generate_market(SyntheticConfig(n_symbols=2, start="2019-01-01", end="2019-09-30", seed=4)).bars
    store.write(BARS, "synth", bars, freq="1d", metadata={"timezone": "America/New_York"})
    return store


def test_command_and_job_write_identical_features(lake: Lake) -> None:
    built = CliRunner().invoke(
        app, ["build", "synth", "--out", "cli", "--normalize", FIT.method, "--fit-start", FIT.fit_start,
              "--fit-end", FIT.fit_end, "--lake", str(lake.root)],
    )  # fmt: skip
    assert built.exit_code == 0, built.output
    options = FeatureJobOptions(FIT.method, FIT.fit_start, FIT.fit_end)
    job = run_features(JobRunner.for_lake(lake), lake, PipelineSpec(bars="synth", features_name="job"), options)
    assert job.status == "done" and job.details["normalizer"] == "fitted"
    assert lake.read("features", "job", freq="1d").equals(lake.read("features", "cli", freq="1d"))
    described = {name: lake.metadata("features", name) for name in ("job", "cli")}
    assert described["job"] == {**described["cli"], "dataset": "job"}


def test_saved_normaliser_is_reused_and_never_dropped(lake: Lake) -> None:
    fitted = build_feature_set(lake, "synth", "1d", "z", FIT)
    reused = build_feature_set(lake, "synth", "1d", "z", SAVED)
    assert reused.frame.equals(fitted.frame) and reused.normalizer == fitted.normalizer
    with pytest.raises(FinfusionError, match="stored normaliser"):
        build_feature_set(lake, "synth", "1d", "z", None)


def test_exogenous_specs() -> None:
    assert Exogenous.parse("indices:^VIX") == Exogenous("indices", "^VIX")
    assert Exogenous.parse("indices:^VIX").prefix == "exo_vix"
    with pytest.raises(FinfusionError, match="DATASET:SYMBOL"):
        Exogenous.parse("indices")


def test_exogenous_columns_join_as_of_the_close(lake: Lake) -> None:
    symbol = lake.read("bars", "synth", freq="1d")["symbol"][0]
    built = build_feature_set(lake, "synth", "1d", "x", None, exogenous=[Exogenous("synth", symbol)])
    own = built.frame.filter(pl.col("symbol") == symbol)
    assert own[f"exo_{symbol.lower()}_ret_1"].equals(own["ret_1"], check_names=False)
    with pytest.raises(FinfusionError, match="no 1d bars of 'NOPE'"):
        build_feature_set(lake, "synth", "1d", "x", None, exogenous=[Exogenous("synth", "NOPE")])
