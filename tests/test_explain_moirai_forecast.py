"""`finfusion explain` of a forecast-family Moirai run (moirai_synthetic): Moirai forecasts by drawing paths, so its
explained output is the mean of its predictive mixture (`mean_forecast`), summed over the horizon for the first
target like every forecaster's point forecast; the command attributes it completely, and the mean is the one the
model's sampled paths have."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from finfusion.data.lake import Lake
from finfusion.data.sources.synthetic import SyntheticConfig
from finfusion.data.sources.synthetic_ingest import make_and_ingest
from finfusion.evaluation.explanation import instant
from finfusion.families.pipeline import LoadedRun, load_run
from finfusion.forecasting.predict import span_windows
from finfusion.models.moirai.forecaster import Moirai
from finfusion.samples.contract import PAST
from finfusion.samples.windows import collate
from tests.test_families import TINY, TRAINER, cli

LOOKBACK, HORIZON = 32, 4  # TINY["moirai_synthetic"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A lake with a small synthetic market (3 symbols, 2018-2019)."""
    root = tmp_path_factory.mktemp("moirai-explain-lake")
    make_and_ingest(Lake(root), SyntheticConfig(n_symbols=3, start="2018-01-01", end="2019-12-31", seed=3), "synthetic")
    return root


@pytest.fixture(scope="module")
def run(lake: Path, tmp_path_factory: pytest.TempPathFactory) -> LoadedRun:
    folder = tmp_path_factory.mktemp("moirai-explain") / "run"
    trained = cli(
        "train", "--config", "moirai_synthetic", *TINY["moirai_synthetic"], *TRAINER, "--run", str(folder),
        "--lake", str(lake),
    )  # fmt: skip
    assert trained.exit_code == 0, trained.output
    return load_run(folder, [f"data.lake={lake}"])


def test_a_moirai_forecast_is_explained_per_lookback_step_and_complete(run: LoadedRun, lake: Path) -> None:
    windows = span_windows(run.data, "test")
    item = len(windows) // 2
    symbol = windows.panel.symbols[int(windows.index[item, 0])]
    at = f"{symbol}:{instant(windows.origins_us[item]).date().isoformat()}"
    result = cli("explain", str(run.run_dir), "--at", at, "--steps", "32", "--lake", str(lake))
    assert result.exit_code == 0, result.output
    day = at.rsplit(":", 1)[1]
    decision = json.loads((run.run_dir / "explanations" / f"{symbol}_{day}.json").read_text())
    difference = decision["output"] - decision["baseline_output"]
    total = sum(decision["totals"].values())
    assert abs(difference) > 1e-3  # something to attribute
    assert abs(total - difference) <= 1e-3 + 0.02 * abs(difference), (total, difference)
    assert abs(total - difference - decision["completeness_gap"]) < 1e-4
    assert decision["channels"] == ["log_return"] and len(decision["heat"]) == LOOKBACK
    with torch.no_grad():
        mean = run.model.mean_forecast(collate([windows[item]]))  # [1, H, T]
    assert mean.shape == (1, HORIZON, 1)
    assert decision["output"] == pytest.approx(float(mean[0, :, 0].sum()), abs=1e-5)


def test_the_explained_output_is_the_horizon_sum_of_the_mean_the_sampled_paths_have(run: LoadedRun) -> None:
    """The first target summed over the horizon: the mean of many sampled paths' sums agrees with the explained
    output within a few standard errors, and the output has gradients where the paths have none."""
    model = run.model
    assert isinstance(model, Moirai)
    windows = span_windows(run.data, "test")
    batch = collate([windows[k] for k in range(4)])
    draws = model.sample(batch, num_samples=4000, generator=torch.Generator().manual_seed(0))  # [4, S, H, T]
    sums = draws[..., 0].sum(dim=2)  # [4, S]
    past = batch[PAST].clone().requires_grad_(True)
    explained = model.explained_output({**batch, PAST: past})  # [4]
    (gradient,) = torch.autograd.grad(explained.sum(), past)
    assert explained.shape == (4,) and bool(gradient.abs().sum() > 0)
    error = sums.std(dim=1) / sums.shape[1] ** 0.5
    assert ((sums.mean(dim=1) - explained.detach()).abs() <= 5 * error).all(), (sums.mean(dim=1), explained, error)
