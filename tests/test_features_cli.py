"""`finfusion features build` (finfusion.commands.features) on a small synthetic lake."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner, Result

from finfusion.commands.features import app
from finfusion.data.lake import Lake
from finfusion.data.schema import BARS
from finfusion.data.sources.synthetic import SyntheticConfig, generate_market
from finfusion.features.bars import FeatureConfig, build_features
from finfusion.features.normalize import FittedNormalizer

CONFIG = SyntheticConfig(n_symbols=3, start="2019-01-01", end="2019-12-31", seed=3)


@pytest.fixture(scope="module")
def bars() -> pl.DataFrame:
    return generate_market(CONFIG).bars


@pytest.fixture
def lake(tmp_path: Path, bars: pl.DataFrame) -> Lake:
    store = Lake(tmp_path / "lake")
    store.write(BARS, "synth", bars, freq="1d", metadata={"timezone": "America/New_York"})
    return store


def _run(lake: Lake, *args: str) -> Result:
    return CliRunner().invoke(app, ["build", *args, "--lake", str(lake.root)])


def test_build_writes_every_feature_of_every_bar(lake: Lake, bars: pl.DataFrame) -> None:
    result = _run(lake, "synth")
    assert result.exit_code == 0, result.output
    n_features = len(FeatureConfig().names)
    assert f"{bars.height:,} rows x {n_features} features, 3 symbols" in result.output
    stored = lake.read("features", "synth", freq="1d")
    assert stored.equals(build_features(bars))
    assert lake.metadata("features", "synth")["source"] == "bars/synth"


def test_exogenous_and_a_normaliser_fitted_then_reused(lake: Lake, bars: pl.DataFrame) -> None:
    index = bars["symbol"][0]
    fit = _run(
        lake, "synth", "--out", "z", "--exogenous", f"synth:{index}", "--normalize", "zscore",
        "--fit-start", "2019-01-01", "--fit-end", "2019-07-01",
    )  # fmt: skip
    assert fit.exit_code == 0, fit.output
    assert "fitted on [2019-01-01, 2019-07-01)" in fit.output
    stored = lake.read("features", "z", freq="1d")
    exo = f"exo_{index.lower()}_ret_1"
    assert exo in stored.columns
    normalizer = FittedNormalizer.load(lake, "z", "1d")
    assert exo in normalizer.columns and "minute_sin_1" not in normalizer.columns
    first_half = stored.filter(pl.col("ts") < pl.datetime(2019, 7, 1, time_zone="UTC"))
    assert first_half.group_by("symbol").agg(pl.col("ret_1").mean())["ret_1"].abs().max() < 1e-9

    again = _run(lake, "synth", "--out", "z", "--exogenous", f"synth:{index}", "--normalize", "saved")
    assert again.exit_code == 0, again.output
    assert "0 files written, 3 unchanged" in again.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nope"], "no bars dataset 'nope'"),
        (["synth", "--normalize", "zscore"], "--fit-start and --fit-end"),
        (["synth", "--fit-start", "2019-01-01", "--fit-end", "2019-02-01"], "--fit-start and --fit-end"),
        (["synth", "--exogenous", "synth"], "DATASET:SYMBOL"),
        (["synth", "--exogenous", "synth:ZZZZ"], "no 1d bars of 'ZZZZ'"),
        (["synth", "--normalize", "saved"], "no fitted normaliser"),
    ],
)
def test_errors_are_one_line_and_write_nothing(lake: Lake, args: list[str], message: str) -> None:
    result = _run(lake, *args)
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())
    assert not (lake.root / "kind=features").exists()


def test_help_has_an_example() -> None:
    result = CliRunner().invoke(app, ["build", "--help"])
    assert result.exit_code == 0
    assert "finfusion features build" in result.output and "--normalize" in result.output
