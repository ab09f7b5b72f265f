"""`finfusion explain` beyond the forecast family: a movement classifier's call (price channels, lag days, tweets,
attention) and a portfolio model's weight (its inputs, the other assets', each text), trained on generated data;
attributions shaped like the inputs and complete (they sum to the output minus the baseline's); unknown symbols and
days are one-line errors; families without explanations (the masked-LM tokens family) say so in one line."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
import torch
from typer.testing import Result

from finfusion.data.lake import Lake
from finfusion.data.sources.stocknet import ingest_stocknet
from finfusion.data.sources.synthetic import SyntheticConfig
from finfusion.data.sources.synthetic_ingest import make_and_ingest
from finfusion.errors import FinfusionError
from finfusion.evaluation.explain import text_occlusion
from finfusion.families import family_named
from finfusion.families.pipeline import load_run
from finfusion.models.portfolio.timesnet import TimesNetEncoder, dominant_frequencies
from finfusion.samples.contract import TEXT_EMB, TEXT_MASK
from finfusion.samples.daily_movement import PRICE_CHANNELS
from tests.portfolio_helpers import OVERRIDES, fake_embeddings
from tests.test_families import MOVEMENT, TINY, TRAINER, cli, write_stocknet_copy

STEPS = "32"


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A lake with a small synthetic market (3 symbols, 2019, planted news) and a StockNet copy (2 symbols), their
    texts embedded by a function of their hashes (no encoder in the loop)."""
    root = tmp_path_factory.mktemp("explain-lake")
    store = Lake(root)
    make_and_ingest(store, SyntheticConfig(n_symbols=3, start="2019-01-01", end="2019-12-31", seed=2))
    ingest_stocknet(store, write_stocknet_copy(tmp_path_factory.mktemp("stocknet"), ("AAA", "BBB")), "stocknet")
    fake_embeddings(store)
    fake_embeddings(store, "stocknet")
    return root


def explain(run: Path, at: str, lake: Path) -> Result:
    return cli("explain", str(run), "--at", at, "--steps", STEPS, "--lake", str(lake))


def stored(run: Path, at: str) -> dict[str, Any]:
    symbol, day = at.rsplit(":", 1)
    return json.loads((run / "explanations" / f"{symbol}_{day}.json").read_text())


def assert_complete(decision: dict[str, Any]) -> None:
    """The attributions sum to the output minus the baseline's output (Integrated Gradients' completeness)."""
    difference = decision["output"] - decision["baseline_output"]
    total = sum(decision["totals"].values())
    assert abs(total - difference) <= 1e-3 + 0.02 * abs(difference), (total, difference)
    assert abs(total - difference - decision["completeness_gap"]) < 1e-4


def assert_refused(run: Path, at: str, lake: Path, message: str) -> None:
    refused = explain(run, at, lake)
    assert refused.exit_code != 0
    assert len(refused.stderr.strip().splitlines()) == 1 and message in refused.stderr, refused.stderr


@pytest.mark.parametrize("config", ["stocknet_fusion", "stocknet_text"])
def test_a_movement_call_is_explained_per_price_channel_lag_day_and_tweet(
    config: str, lake: Path, tmp_path: Path
) -> None:
    run = tmp_path / config
    trained = cli("train", "--config", config, *MOVEMENT, "--run", str(run), "--lake", str(lake))
    assert trained.exit_code == 0, trained.output
    samples = load_run(run, [f"data.lake={lake}"]).data.extra["samples"]
    test = samples.rows("test")
    row = int(test[np.flatnonzero((samples.tweet_index[test] >= 0).any(axis=(1, 2)))[0]])
    target = samples.targets.row(row, named=True)
    at = f"{target['symbol']}:{target['day'].isoformat()}"
    explained = explain(run, at, lake)
    assert explained.exit_code == 0, explained.output
    assert "P(up)" in explained.output or "P(down)" in explained.output
    decision = stored(run, at)
    assert_complete(decision)
    assert 0.0 <= decision["output"] <= 1.0
    reads_prices = config == "stocknet_fusion"
    lag, tweets = samples.config.lag_days, int((samples.tweet_index[row] >= 0).sum())
    assert decision["channels"] == (list(PRICE_CHANNELS) if reads_prices else [])
    assert np.shape(decision["heat"]) == ((lag, len(PRICE_CHANNELS)) if reads_prices else (0,))
    if reads_prices:
        assert sum(map(sum, decision["heat"])) == pytest.approx(decision["totals"]["price inputs"], abs=1e-5)
    assert len(decision["texts"]) == tweets and {t["id"] for t in decision["texts"]} <= set(samples.texts["id"])
    per_tweet = sum(t["integrated_gradients"] for t in decision["texts"])
    assert per_tweet == pytest.approx(decision["totals"]["tweets"], abs=1e-5)
    steps = int(samples.step_mask[row].sum())
    assert len(decision["attention"]) == steps and sum(decision["attention"].values()) == pytest.approx(1.0, abs=1e-4)
    assert all(0.0 <= t["attention"] <= 1.0 for t in decision["texts"])
    assert decision["permutation_measure"] == "Brier score" and "tweets" in decision["permutation"]
    assert_refused(run, f"ZZZ:{target['day'].isoformat()}", lake, "symbol 'ZZZ' is not in the run's universe")
    assert_refused(run, f"{target['symbol']}:2015-10-03", lake, "has no decision on 2015-10-03")  # a Saturday


def test_a_portfolio_weight_is_explained_per_input_channel_bar_and_text(lake: Path, tmp_path: Path) -> None:
    run = tmp_path / "cga"
    trained = cli("train", "--config", "cga_daily", *OVERRIDES, "--run", str(run), "--lake", str(lake))
    assert trained.exit_code == 0, trained.output
    data = load_run(run, [f"data.lake={lake}"]).data
    portfolio = data.extra["portfolio"]
    first = int(np.searchsorted(portfolio.ts, np.datetime64("2019-10-15", "us").astype(np.int64)))
    day = np.datetime64(int(portfolio.ts[first]), "us").astype(object).date().isoformat()
    lookback, channels = 8, len(portfolio.columns)
    explained = {}
    for symbol in portfolio.symbols:
        result = explain(run, f"{symbol}:{day}", lake)
        assert result.exit_code == 0, result.output
        decision = stored(run, f"{symbol}:{day}")
        assert_complete(decision)
        assert np.shape(decision["heat"]) == (lookback, channels) and decision["channels"] == list(portfolio.columns)
        own = decision["totals"][f"{symbol} price inputs"]
        assert sum(map(sum, decision["heat"])) == pytest.approx(own, abs=1e-5)
        assert decision["texts"] and decision["permutation_measure"].startswith("negative Sharpe")
        per_text = sum(t["integrated_gradients"] for t in decision["texts"])
        assert per_text == pytest.approx(decision["totals"]["texts"], abs=1e-5)
        explained[symbol] = decision
    held = [s for s, d in explained.items() if d["explained"].startswith("weight")]
    assert len(held) == 2  # task.k=2 of 3 symbols; the third's score is explained
    assert sum(abs(explained[s]["output"]) for s in held) == pytest.approx(1.0, abs=1e-5)
    assert 'id="explanations"' in (run / "report" / "explanations.html").read_text()
    assert_refused(run, f"ZZZ:{day}", lake, "symbol 'ZZZ' is not in the run's universe")
    assert_refused(run, f"{portfolio.symbols[0]}:2019-10-13", lake, "has no decision on 2019-10-13")  # a Sunday


def test_held_periods_keep_timesnets_choice_along_an_attribution_path() -> None:
    torch.manual_seed(0)
    encoder = TimesNetEncoder(3, 16, d_model=8, d_ff=8, top_k=2).eval()
    x = torch.randn(4, 16, 3)
    hidden = encoder.embed(x) + encoder.position  # the first block's input [4, 16, 8]
    block = encoder.blocks[0]
    with torch.no_grad():
        free = encoder(x)
        with encoder.held_periods(x):
            assert torch.allclose(encoder(x), free, atol=1e-6)
            path = torch.cat([hidden * alpha for alpha in (0.1, 0.5, 1.0)])  # the steps of a path, stacked
            index, _ = block.frequencies(path)
        picked, _ = dominant_frequencies(hidden, 2)
    assert torch.equal(index, picked.repeat(3, 1))  # x's own choice, tiled over the path
    assert block.held is None  # released on leaving


def test_occlusion_follows_a_mask_of_tweets_per_lag_day() -> None:
    batch = {TEXT_EMB: torch.randn(2, 3, 4, 5), TEXT_MASK: torch.rand(2, 3, 4) > 0.5}

    def output(b: dict[str, torch.Tensor]) -> torch.Tensor:
        return (b[TEXT_EMB][..., 0] * b[TEXT_MASK]).sum(dim=(1, 2))

    effects = text_occlusion(output, batch)
    assert effects.shape == (2, 3, 4)
    assert torch.allclose(effects, batch[TEXT_EMB][..., 0] * batch[TEXT_MASK], atol=1e-6)


def test_a_family_without_explanations_says_so_in_one_line(tmp_path: Path) -> None:
    """The masked-LM `tokens` family explains nothing: the family says so, and the command in one line."""
    with pytest.raises(FinfusionError, match=r"^the tokens family has no explanations yet \(.*\)$"):
        family_named("tokens").explain(cast(Any, None), "AAA", date(2020, 1, 2), "test", 8, False)
    run, lake = tmp_path / "run", tmp_path / "lake"
    trained = cli("train", "--config", "token_mlm_synthetic", *TINY["token_mlm_synthetic"], *TRAINER, "--run",
                  str(run), "--lake", str(lake))  # fmt: skip
    assert trained.exit_code == 0, trained.output
    refused = explain(run, "AAA:2020-06-01", lake)
    assert refused.exit_code != 0 and "Traceback" not in refused.stderr
    assert refused.stderr.strip().splitlines() == [
        "error: the tokens family has no explanations yet (finfusion explain: forecast, movement, portfolio, "
        "universal, relevance, token_classification and orderbook runs)"
    ]
