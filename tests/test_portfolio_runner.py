"""The portfolio family end to end on a small synthetic lake through the one pipeline: train, validation metrics,
rebuild from stored parts, predict into the WEIGHTS table, backtest with costs (and by hand), fine-tune from trained
weights, and the comparison with equal weights and the price-only twin."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from finfusion.config import load_config
from finfusion.data.calendar import from_us
from finfusion.data.lake import Lake
from finfusion.data.sources.synthetic import SyntheticConfig
from finfusion.data.sources.synthetic_ingest import make_and_ingest
from finfusion.evaluation.portfolio_plots import comparison_figure, portfolio_figures
from finfusion.evaluation.weights_backtest import equal_weights, evaluate_weights
from finfusion.families.pipeline import TrainedRun, load_run, run_from_parts, train_run, validation_metrics
from finfusion.families.portfolio import FAMILY as PORTFOLIO
from finfusion.families.portfolio_comparison import STRATEGIES, compare_on_synthetic
from finfusion.families.run_folder import STATE_FILE
from finfusion.models.build import WEIGHTS_FILE
from finfusion.portfolio.inputs import loader
from finfusion.portfolio.predict import model_weights
from finfusion.samples.contract import FUTURE
from finfusion.training.portfolio_loss import portfolio_returns
from finfusion.training.tasks import sharpe_ratio
from tests.portfolio_helpers import OVERRIDES, TEXT_DIM, fake_embeddings

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Lake:
    store = Lake(tmp_path_factory.mktemp("portfolio") / "lake")
    make_and_ingest(store, SyntheticConfig(n_symbols=3, start="2019-01-01", end="2019-12-31", seed=2))
    fake_embeddings(store)
    return store


@pytest.fixture(scope="module")
def run(lake: Lake, tmp_path_factory: pytest.TempPathFactory) -> TrainedRun:
    cfg = load_config("cga_daily", [*OVERRIDES, f"data.lake={lake.root}"])
    return train_run(cfg, tmp_path_factory.mktemp("run") / "v1")


def test_training_saves_a_complete_run_with_its_validation_metrics(run: TrainedRun) -> None:
    assert (run.run_dir / WEIGHTS_FILE).is_file() and (run.run_dir / STATE_FILE).is_file()
    loaded = load_run(run.run_dir)
    symbols = loaded.data.state["symbols"]
    assert symbols == sorted(symbols) and len(symbols) == 3 and loaded.data.state["text_dim"] == TEXT_DIM
    metrics = validation_metrics(loaded)
    assert metrics == pytest.approx(validation_metrics(run)) and np.isfinite(metrics["val_loss"])
    val = run.data.val
    weights = torch.from_numpy(model_weights(loaded.model, val, k=2))
    future = torch.stack([val[i][FUTURE] for i in range(len(val))])
    pnl = portfolio_returns(weights.float(), future)[:, 0]
    assert metrics["val_sharpe"] == pytest.approx(sharpe_ratio(pnl, 252.0), rel=1e-4, abs=1e-6)


def test_stored_parts_reproduce_the_run(run: TrainedRun) -> None:
    weights = {key: value.clone() for key, value in run.model.state_dict().items()}
    rebuilt = run_from_parts(run.cfg, run.data.state, weights)
    batch = next(iter(loader(run.data.val, 8)))
    assert torch.equal(rebuilt.model(batch)["logits"], run.model(batch)["logits"])
    assert rebuilt.data.state == run.data.state
    assert validation_metrics(rebuilt) == pytest.approx(validation_metrics(run), rel=1e-5)


def test_predicted_weights_go_to_the_lake_table(lake: Lake, run: TrainedRun) -> None:
    predictions = PORTFOLIO.predict(run, "test")
    predictions.write(lake, "cga", run.run_dir)
    frame = predictions.frame()
    stored = lake.read("weights", "cga")
    assert stored.sort("ts", "symbol").equals(frame.sort("ts", "symbol"))
    per_ts = frame.group_by("ts").agg(gross=pl.col("weight").abs().sum(), held=(pl.col("weight") != 0).sum())
    assert ((per_ts["gross"] - 1.0).abs() < 1e-5).all() and (per_ts["held"] <= 2).all()
    assert frame["ts"].min() >= datetime(2019, 10, 15, tzinfo=UTC)
    assert (frame["model_version"] == "v1").all() and frame["ts"].n_unique() * 3 == frame.height
    bars = lake.read("bars", "synthetic", freq="1d")
    evaluation = evaluate_weights(frame, bars, {"costs": {}})
    assert {"sharpe", "total_return", "max_drawdown", "annual_turnover", "pnl"} <= set(evaluation.kpis)
    assert evaluation.equity.height == frame["ts"].n_unique()  # the last decision is the last bar
    assert set(portfolio_figures(evaluation)) == {"equity", "rolling_sharpe", "weights"}
    baseline = evaluate_weights(equal_weights(frame["ts"], run.data.state["symbols"]), bars, {"costs": {}})
    assert len(comparison_figure({"cga": evaluation, "equal_weight": baseline}).data) == 2


def test_backtest_of_weights_by_hand() -> None:
    ts = from_us(np.array([1, 2, 3, 4]) * 86_400_000_000, "ts")
    bars = pl.DataFrame(
        {
            "symbol": ["A"] * 4 + ["B"] * 4,
            "ts": pl.concat([ts, ts]),
            "close": [10.0, 10.0, 11.0, 11.0, 20.0, 20.0, 19.0, 19.0],
            "volume": [1e6] * 8,
        }
    )
    weights = pl.DataFrame({"ts": [ts[1], ts[1]], "symbol": ["A", "B"], "weight": [0.5, -0.5]})
    no_costs = {"costs": {"half_spread_bps": 0, "commission_bps": 0, "slippage_bps": 0, "impact_coef": 0}}
    evaluation = evaluate_weights(weights, bars, no_costs)
    assert evaluation.equity["strategy"].to_list() == pytest.approx([1.0, 1.0 + 0.5 * 0.1 + 0.5 * 0.05])
    costly = evaluate_weights(weights, bars, {"costs": {"impact_coef": 0}})
    assert costly.kpis["pnl"] == pytest.approx(1e6 * 0.075 - 1e6 * 4e-4, rel=1e-3)


def test_finetuning_starts_from_the_trained_weights_and_state(run: TrainedRun, tmp_path: Path) -> None:
    cfg = load_config("cga_daily", [*OVERRIDES, f"data.lake={run.cfg.data.lake}", "trainer.max_epochs=1"])
    data = PORTFOLIO.data(cfg, run.data.state)
    tuned = train_run(cfg, tmp_path / "tuned", resume="never", data=data, initial_weights=run.model.state_dict())
    assert tuned.data.state == run.data.state  # the stored universe and normaliser, not refitted
    before, after = run.model.state_dict(), tuned.model.state_dict()
    assert any(not torch.equal(before[key], after[key]) for key in before)  # it trained further
    assert np.isfinite(validation_metrics(tuned)["val_loss"])


def test_comparison_on_a_small_synthetic_market_writes_its_report(tmp_path: Path) -> None:
    """The plumbing of the acceptance experiment (MiniLM embeddings, both variants, the baseline, the report) on a
    market too small and a training too short for the numbers to mean anything."""
    market = SyntheticConfig(n_symbols=3, start="2019-01-01", end="2019-12-31", seed=2)
    sharpe = compare_on_synthetic(tmp_path, market=market, overrides=[*OVERRIDES, "trainer.max_epochs=1"])
    assert set(sharpe) == set(STRATEGIES) and all(np.isfinite(list(sharpe.values())))
    report = json.loads((tmp_path / "comparison.json").read_text())
    assert report["sharpe"] == pytest.approx(sharpe)
    assert all(0.0 <= p <= 1.0 for p in report["p_value_cga_beats"].values())
    assert report["kpis"]["cga"]["bars"] == report["kpis"]["equal_weight"]["bars"]
    assert (tmp_path / "comparison.html").read_text().count("plotly-graph-div") == 4
