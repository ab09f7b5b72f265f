"""`finfusion explain` for the relevance family (a stock's 7-day relevance score per context / stock feature and
feature group) and the universal family (the mean of Moirai's next-bar forecast distribution per lookback bar and
channel), on tiny runs trained on a generated market with macro and policy context: attributions shaped like the
inputs and complete (they sum to the output minus the baseline's), the explained output the model's own, unknown
symbols, days without a decision and --planted one-line errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from finfusion.data.lake import Lake
from finfusion.data.sources.synthetic import SyntheticConfig, generate_market
from finfusion.data.sources.synthetic_context import ContextConfig
from finfusion.data.sources.synthetic_ingest import ingest_market
from finfusion.evaluation.explanation import instant
from finfusion.families.pipeline import LoadedRun, load_run
from finfusion.forecasting.universal_explain import first_step_mean
from finfusion.models.moirai.distribution import PatchMixture
from finfusion.relevance.importance import group_columns
from finfusion.samples.contract import ORIGIN_US, SYMBOL_INDEX
from finfusion.samples.relevance import feature_groups
from finfusion.samples.windows import collate
from tests.portfolio_helpers import fake_embeddings
from tests.test_families import TRAINER, cli

STEPS = "32"
MARKET = SyntheticConfig(n_symbols=4, start="2017-01-01", end="2019-12-31", seed=5, context=ContextConfig())
RELEVANCE = [
    "data.source=lake", "data.dataset=ctx", "data.texts.components=2", "data.split.train_end=2018-10-01",
    "data.split.val_end=2019-04-01", "data.batch_size=16", *TRAINER,
]  # fmt: skip
UNIVERSAL = [
    "data.source=lake", "data.dataset=ctx", "data.symbols=3", "data.lookback=32", "data.horizon=4", "data.stride=4",
    "data.split.train_end=2019-03-01", "data.split.val_end=2019-08-01", "model.num_samples=4",
    "task.val_num_samples=2", *TRAINER,
]  # fmt: skip


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated market of 4 stocks over 2017-2019 with policy and macro series and news, the news embedded by a
    function of their hashes (no encoder in the loop)."""
    root = tmp_path_factory.mktemp("explain-context-lake")
    ingest_market(Lake(root), generate_market(MARKET), "ctx")
    fake_embeddings(Lake(root), "ctx")
    return root


def trained(config: str, overrides: list[str], lake: Path, run: Path) -> LoadedRun:
    result = cli("train", "--config", config, *overrides, "--run", str(run), "--lake", str(lake))
    assert result.exit_code == 0, result.output
    return load_run(run, [f"data.lake={lake}"])


@pytest.fixture(scope="module")
def relevance_run(lake: Path, tmp_path_factory: pytest.TempPathFactory) -> LoadedRun:
    return trained("dual_tower_synthetic", RELEVANCE, lake, tmp_path_factory.mktemp("relevance") / "run")


@pytest.fixture(scope="module")
def universal_run(lake: Path, tmp_path_factory: pytest.TempPathFactory) -> LoadedRun:
    return trained("moirai_pretrain_synthetic", UNIVERSAL, lake, tmp_path_factory.mktemp("universal") / "run")


def explain(run: LoadedRun, at: str, lake: Path, *extra: str) -> Any:
    return cli("explain", str(run.run_dir), "--at", at, "--steps", STEPS, "--lake", str(lake), *extra)


def explained(run: LoadedRun, at: str, lake: Path) -> dict[str, Any]:
    """The stored explanation of `at`, after checking the command's output and the attributions' completeness."""
    result = explain(run, at, lake)
    assert result.exit_code == 0, result.output
    symbol, day = at.rsplit(":", 1)
    decision = json.loads((run.run_dir / "explanations" / f"{symbol}_{day}.json").read_text())
    difference = decision["output"] - decision["baseline_output"]
    total = sum(decision["totals"].values())
    assert abs(total - difference) <= 1e-3 + 0.02 * abs(difference), (total, difference)
    assert abs(total - difference - decision["completeness_gap"]) < 1e-4
    assert sum(map(sum, decision["heat"])) == pytest.approx(total, abs=1e-5)
    np.testing.assert_allclose(decision["channel_attributions"], np.sum(decision["heat"], axis=0), atol=1e-6)
    assert decision["texts"] == [] and decision["attention"] is None
    return decision


def assert_refused(run: LoadedRun, at: str, lake: Path, message: str, *extra: str) -> None:
    """The command fails with `message` on one line, its last (loading a relevance run loads the text encoder, whose
    progress bar may come first)."""
    refused = explain(run, at, lake, *extra)
    assert refused.exit_code != 0
    last = refused.stderr.strip().splitlines()[-1]
    assert last.startswith("error:") and message in last and "Traceback" not in refused.stderr, refused.stderr


def decision_at(symbols: list[str], symbol_index: np.ndarray, origin_us: np.ndarray, row: int) -> str:
    return f"{symbols[int(symbol_index[row])]}:{instant(int(origin_us[row])).date().isoformat()}"


def test_a_relevance_score_is_explained_per_feature_and_feature_group(relevance_run: LoadedRun, lake: Path) -> None:
    run, state = relevance_run, relevance_run.data.state
    test = run.data.test
    row = len(test) // 2
    at = decision_at(state["symbols"], test.column(SYMBOL_INDEX), test.column(ORIGIN_US), row)
    decision = explained(run, at, lake)
    assert decision["explained"].startswith("the 7-day relevance score")
    with torch.no_grad():
        score = float(run.model(collate([test[row]]))["score"][0, 0])
    assert decision["output"] == pytest.approx(score, abs=1e-5)
    context_groups, stock_groups = feature_groups(state)
    assert list(context_groups) == ["news", "policy", "macro"]  # the columns' order, as stored
    columns = group_columns(context_groups, stock_groups)
    assert set(decision["totals"]) == set(columns) == set(decision["permutation"])
    names = [name for groups in (context_groups, stock_groups) for group in groups.values() for name in group]
    assert decision["channels"] == names and names[:3] == ["news_pc1", "news_pc2", "news_count"]
    assert (
        np.shape(decision["heat"]) == (1, len(names)) == (1, test[row]["context"].numel() + test[row]["stock"].numel())
    )
    assert decision["heat_rows"] == ["decision week"]
    for name, (key, cols) in columns.items():
        offset = 0 if key == "context" else test[row]["context"].numel()
        in_group = sum(decision["heat"][0][offset + c] for c in cols)
        assert in_group == pytest.approx(decision["totals"][name], abs=1e-6)
    assert decision["permutation_measure"] == "squared error of the 7-day score"
    symbol, day = at.split(":")
    assert_refused(run, f"ZZZ:{day}", lake, "symbol 'ZZZ' is not in the run's universe")
    assert_refused(run, f"{symbol}:2019-06-02", lake, "has no decision on 2019-06-02")  # a Sunday
    assert_refused(run, at, lake, "--planted: the planted-news rate is measured on forecast runs", "--planted")


def test_a_universal_forecast_is_explained_per_lookback_bar_and_channel(universal_run: LoadedRun, lake: Path) -> None:
    run = universal_run
    test = run.data.test
    row = len(test) // 2
    at = decision_at(test.index.symbols, test.column("symbol_index"), test.column("origin_us"), row)
    decision = explained(run, at, lake)
    assert "ret_1" in decision["explained"] and "horizon step 1" in decision["explained"]
    columns = list(test.index.columns)
    assert decision["channels"] == columns and np.shape(decision["heat"]) == (32, len(columns))
    assert set(decision["totals"]) == {"target history (ret_1)", "covariates"}
    assert sum(row[0] for row in decision["heat"]) == pytest.approx(decision["totals"]["target history (ret_1)"])
    assert set(decision["permutation"]) == set(columns)
    with torch.no_grad():
        mean = float(first_step_mean(run.model, collate([test[row]]))[0])
    assert decision["output"] == pytest.approx(mean, abs=1e-6)
    symbol, day = at.split(":")
    assert_refused(run, f"ZZZ:{day}", lake, "symbol 'ZZZ' is not in the run's universe")
    assert_refused(run, f"{symbol}:2019-10-13", lake, "has no decision on 2019-10-13")  # a Sunday
    assert_refused(run, at, lake, "--planted: the planted-news rate is measured on forecast runs", "--planted")


def test_the_explained_universal_output_is_the_mean_of_the_paths_moirai_draws(universal_run: LoadedRun) -> None:
    """The mean of many paths the model samples at horizon step 1 (of the target) agrees with the mixture's mean
    within a few standard errors."""
    model, test = universal_run.model, universal_run.data.test
    batch = collate([test[k] for k in range(4)])
    draws = model.sample(batch, num_samples=4000, generator=torch.Generator().manual_seed(0))[:, :, 0, 0]  # [4, S]
    with torch.no_grad():
        mean = first_step_mean(model, batch)
    error = draws.std(dim=1) / draws.shape[1] ** 0.5
    assert ((draws.mean(dim=1) - mean).abs() <= 5 * error).all(), (draws.mean(dim=1), mean, error)


def test_the_mixture_mean_weighs_the_components_means_and_maps_them_back_to_the_series_units() -> None:
    ones = torch.ones(1, 1, 1)
    mixture = PatchMixture(
        components=("normal", "student_t"),
        log_weights=torch.log(torch.tensor([0.25, 0.75])).expand(1, 1, 1, 2),
        parameters=({"loc": 1.0 * ones, "scale": ones}, {"df": 5.0 * ones, "loc": 3.0 * ones, "scale": ones}),
        loc=0.5 * ones,
        scale=2.0 * ones,
    )
    assert float(mixture.mean()) == pytest.approx((0.25 * 1.0 + 0.75 * 3.0) * 2.0 + 0.5)
