"""`finfusion explain` for token-classification runs (a BERT classifier's class, a CRF tagger's tag of the last bar:
one attribution per token of the window) and order-book runs (TransLOB, the LSTM, the logistic regression: per
snapshot and field, per level), trained on generated data: attributions complete and shaped like the window, the
JSON stored in RUN/explanations/, the order book's last decision of the day explained, one-line errors for a decision
that does not exist and for --planted."""

from __future__ import annotations

import itertools
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf, open_dict

from finfusion.config import load_config
from finfusion.evaluation.explanation import instant
from finfusion.families import family_named
from finfusion.families.orderbook_explain import FIELDS
from finfusion.families.pipeline import LoadedRun, load_run, train_run
from finfusion.families.token_classification_explain import encoder_of, last_tag_marginals
from finfusion.samples.token_sequences import vocabulary_of
from tests.test_explain_families import assert_complete, assert_refused, explain, stored
from tests.test_families import TINY, TRAINER, cli

TOKEN_DATA = [
    "data.bars=synthetic", "data.dataset=synthetic_brooks_tiny", "data.source=synthetic",
    "data.synthetic.n_symbols=2", "data.synthetic.start=2019-01-01", "data.synthetic.end=2020-12-31",
    "data.synthetic.seed=0", "data.batch_size=16", "data.window=8",
    "+model.hidden_size=16", "+model.num_heads=2", "+model.num_layers=1", "+model.intermediate_size=32",
]  # fmt: skip
WINDOW = 8
BOOK_WINDOW, BOOK_LEVELS = 20, 3  # TINY["translob_synthetic"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty lake: the token and order-book configs make their synthetic data in it when first trained."""
    return tmp_path_factory.mktemp("explain-tokens-lake")


def first_decision(run: LoadedRun, symbol_index: np.ndarray, origin_us: np.ndarray) -> str:
    """SYMBOL:DATE of the first of a span's decisions (`symbol_index` [N], `origin_us` [N])."""
    return f"{run.data.state['symbols'][int(symbol_index[0])]}:{instant(int(origin_us[0])).date().isoformat()}"


def book_decisions(run: LoadedRun) -> tuple[np.ndarray, np.ndarray]:
    """`symbol_index` [N] and `origin_us` [N] of the order-book run's test decisions."""
    test = run.data.test
    return test.days.symbol_index[test.at], test.days.ts_us[test.at]


def assert_planted_refused(run: Path, at: str, lake: Path) -> None:
    refused = cli("explain", str(run), "--at", at, "--planted", "--lake", str(lake))
    assert refused.exit_code != 0
    assert len(refused.stderr.strip().splitlines()) == 1 and "--planted: the planted-news rate" in refused.stderr


def shaken(run: LoadedRun, seed: int) -> LoadedRun:
    """The run with its weight matrices redrawn from a standard normal (the [PAD] embedding kept at zero, the CRF's
    transitions kept), so that the explained output moves far from its baseline's: completeness tested where there is
    something to attribute."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, weight in run.model.named_parameters():
            if weight.dim() > 1 and "crf" not in name:
                weight.copy_(torch.randn(weight.shape, generator=generator))
        if hasattr(run.model, "bert"):  # a token model
            embeddings = encoder_of(run.model).embeddings.word_embeddings
            embeddings.weight[embeddings.padding_idx] = 0.0
    return run


def assert_tightly_complete(decision: dict[str, Any]) -> None:
    difference = decision["output"] - decision["baseline_output"]
    assert abs(difference) > 0.03, difference  # something to attribute
    assert abs(sum(decision["totals"].values()) - difference) <= 0.02 * abs(difference)


@pytest.mark.parametrize("config", ["token_direction_synthetic", "token_pivots_synthetic"])
def test_a_token_models_call_is_explained_per_token_of_its_window(config: str, lake: Path, tmp_path: Path) -> None:
    run = tmp_path / config
    trained = cli("train", "--config", config, *TOKEN_DATA, *TRAINER, "--run", str(run), "--lake", str(lake))
    assert trained.exit_code == 0, trained.output
    loaded = load_run(run, [f"data.lake={lake}"])
    at = first_decision(loaded, loaded.data.test.column("symbol_index"), loaded.data.test.column("origin_us"))
    explained = explain(run, at, lake)
    assert explained.exit_code == 0, explained.output
    tagging = config == "token_pivots_synthetic"
    assert ("P(last bar tagged " if tagging else "P(") in explained.output
    decision = stored(run, at)
    assert_complete(decision)
    assert 0.0 <= decision["output"] <= 1.0
    assert np.shape(decision["heat"]) == (WINDOW, 1) and decision["channels"] == ["token"]
    assert sum(map(sum, decision["heat"])) == pytest.approx(decision["totals"]["tokens"], abs=1e-5)
    window = loaded.data.test[0]["tokens"]
    assert decision["heat_rows"] == vocabulary_of(loaded.data.state).decode(window)
    attention = decision["attention"]
    assert len(attention) == WINDOW and sum(attention.values()) == pytest.approx(1.0, abs=1e-4)
    assert list(attention)[-1] == f"{WINDOW - 1} {decision['heat_rows'][-1]}"
    assert set(decision["permutation"]) == {f"position {k}" for k in range(WINDOW)}
    assert decision["permutation_measure"] == "Brier score" and decision["texts"] == []
    assert 'id="explanations"' in (run / "report" / "explanations.html").read_text()
    symbol, day = at.split(":")
    assert_refused(run, f"ZZZ:{day}", lake, "symbol 'ZZZ' is not in the run's universe")
    assert_refused(run, f"{symbol}:1999-01-04", lake, "has no decision on 1999-01-04")
    assert_planted_refused(run, at, lake)
    family = family_named("token_classification")
    assert_tightly_complete(
        family.explain(shaken(loaded, 0), symbol, date.fromisoformat(day), "test", 64, False)["decision"]
    )


def test_an_order_book_call_is_explained_per_snapshot_field_and_level(lake: Path, tmp_path: Path) -> None:
    run = tmp_path / "translob"
    overrides = [*TINY["translob_synthetic"], *TRAINER]
    trained = cli("train", "--config", "translob_synthetic", *overrides, "--run", str(run), "--lake", str(lake))
    assert trained.exit_code == 0, trained.output
    loaded = load_run(run, [f"data.lake={lake}"])
    at = first_decision(loaded, *book_decisions(loaded))
    explained = explain(run, at, lake)
    assert explained.exit_code == 0, explained.output
    assert "mid-price move" in explained.output
    decision = stored(run, at)
    assert_complete(decision)
    assert np.shape(decision["heat"]) == (BOOK_WINDOW, len(FIELDS)) and decision["channels"] == list(FIELDS)
    assert list(decision["totals"]) == [f"level {level}" for level in range(1, BOOK_LEVELS + 1)]
    assert sum(map(sum, decision["heat"])) == pytest.approx(sum(decision["totals"].values()), abs=1e-5)
    assert set(decision["permutation"]) == set(FIELDS) and decision["attention"] is None
    symbol, day = at.split(":")
    instants = [instant(int(us)) for us in book_decisions(loaded)[1]]
    assert decision["decision"] == max(t for t in instants if t.date().isoformat() == day).isoformat()  # the last
    assert_refused(run, f"{symbol}:2024-01-02", lake, "has no decision on 2024-01-02")  # a training day
    assert_refused(run, f"ZZZ:{day}", lake, "symbol 'ZZZ' is not in the run's universe")
    assert_planted_refused(run, at, lake)


@pytest.mark.parametrize("part", [{"name": "lob_lstm", "hidden": 8}, {"name": "lob_logistic"}])
def test_the_order_book_baselines_are_explained_the_same_way(part: dict[str, Any], lake: Path, tmp_path: Path) -> None:
    cfg = load_config("translob_synthetic", [*TINY["translob_synthetic"], *TRAINER, f"data.lake={lake}"])
    variant = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    with open_dict(variant):
        variant.model = part
    run = shaken(train_run(variant, tmp_path / part["name"], resume="never"), 1)
    at = first_decision(run, *book_decisions(run))
    symbol, day = at.split(":")
    decision = family_named("orderbook").explain(run, symbol, date.fromisoformat(day), "test", 64, False)["decision"]
    assert decision["model"] == part["name"] and np.shape(decision["heat"]) == (BOOK_WINDOW, len(FIELDS))
    assert_tightly_complete(decision)


def test_the_last_tags_marginal_is_the_crfs_by_enumeration() -> None:
    generator = torch.Generator().manual_seed(0)
    tags, steps = 3, 4
    transitions, start, end = (torch.randn(*shape, generator=generator) for shape in ((tags, tags), (tags,), (tags,)))
    emissions = torch.randn(2, steps, tags, generator=generator)
    mask = torch.tensor([[True] * steps, [True, True, True, False]])  # the second window ends at its third bar
    found = last_tag_marginals(transitions, start, end, emissions, mask)
    for row, length in enumerate((steps, steps - 1)):
        weight = torch.zeros(tags, dtype=torch.float64)
        for path in itertools.product(range(tags), repeat=length):
            score = start[path[0]] + end[path[-1]] + sum(emissions[row, i, tag] for i, tag in enumerate(path))
            score = score + sum(transitions[a, b] for a, b in itertools.pairwise(path))
            weight[path[-1]] += torch.exp(score.double())
        torch.testing.assert_close(found[row].double(), weight / weight.sum(), atol=1e-5, rtol=1e-5)
