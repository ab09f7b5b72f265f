"""The placebo twin: the same model trained and tested on texts whose contents are permuted across dates. Each text
keeps its time, symbols and place in the windows; what it says (its embedding and document) comes from another."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from finfusion.config import load_config
from finfusion.errors import FinfusionError
from finfusion.forecasting.data import build_experiment_panel, data_options
from finfusion.forecasting.texts import align_panel_texts, permuted_contents
from finfusion.forecasting.walk_forward import evaluate_experiment, subset_steps
from tests.test_families import FORECAST_DATA, MULTIMODAL, TRAINER, WALK_FORWARD, market

__all__ = ["market"]  # the module-scoped lake fixture of test_families.py


def test_permuted_contents_move_what_texts_say_not_when_they_were_said() -> None:
    hashes = [f"h{i}" for i in range(6)]
    hashed = pl.DataFrame(
        {
            "published_at": list(range(6)),
            "symbols": [["AAA"]] * 3 + [["BBB"]] * 3,
            "document": [f"text {i}" for i in range(6)],
            "text_hash": hashes,
        }
    )
    embeddings = pl.DataFrame({"text_hash": hashes[::-1], "vector": [[float(i), -float(i)] for i in range(6)][::-1]})
    placebo_texts, placebo_vectors = permuted_contents(hashed, embeddings, seed=1)
    assert placebo_texts.drop("document").equals(hashed.drop("document"))  # times, symbols, hashes kept
    vector_of = dict(zip(placebo_vectors["text_hash"], placebo_vectors["vector"].to_list(), strict=True))
    moved = 0
    for text_hash, document in zip(placebo_texts["text_hash"], placebo_texts["document"], strict=True):
        donor = int(document.removeprefix("text "))
        assert vector_of[text_hash] == [float(donor), -float(donor)]  # vector and document come from one donor
        moved += donor != int(text_hash.removeprefix("h"))
    assert moved > 0
    assert sorted(map(tuple, placebo_vectors["vector"].to_list())) == sorted(map(tuple, embeddings["vector"].to_list()))
    again, _ = permuted_contents(hashed, embeddings.reverse(), seed=1)
    assert again.equals(placebo_texts)  # seeded, whatever the order the embeddings come in


def config(market: Path, *extra: str) -> object:
    return load_config(
        "multimodal_tiny", [f"data.lake={market}", "data.dataset=synthetic", *FORECAST_DATA, *MULTIMODAL, *extra]
    )


def test_the_placebo_sees_the_same_news_days_with_other_contents(market: Path) -> None:
    options = data_options(config(market).data)
    panel = build_experiment_panel(options)
    real, placebo = align_panel_texts(options, panel), align_panel_texts(options, panel, placebo_seed=0)
    assert real is not None and placebo is not None
    assert np.array_equal(real.mask, placebo.mask) and np.array_equal(real.no_news, placebo.no_news)
    news = real.mask.any(axis=1)
    changed = ~np.isclose(real.padded()[news], placebo.padded()[news]).all(axis=(1, 2))
    assert changed.mean() > 0.9  # almost every news day reads another day's texts


def test_an_evaluation_trains_and_tests_the_placebo_twin(market: Path, tmp_path: Path) -> None:
    cfg = config(
        market,
        *WALK_FORWARD,
        *TRAINER,
        "evaluation.baselines=[{label: placebo, texts: permuted}, random_walk]",
        "evaluation.compare_to=[placebo, random_walk]",
        "evaluation.direction_baselines=[majority_class]",
        "evaluation.dm_loss=[crps, direction]",
    )
    evaluation = evaluate_experiment(cfg, tmp_path / "eval", progress=lambda _: None)
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert list(metrics["models"])[:3] == ["multimodal", "placebo", "random_walk"]
    losses = {(t["model"], t["baseline"], t["loss"]) for t in evaluation.metrics.significance}
    assert {("multimodal", "placebo", "CRPS"), ("multimodal", "placebo", "direction error")} <= losses
    assert (tmp_path / "eval" / "folds" / "placebo" / "fold_0").is_dir()


def test_a_placebo_without_texts_or_with_another_permutation_is_refused(market: Path, tmp_path: Path) -> None:
    off = config(market, "data.texts.enabled=false", "model.use_text=false", *WALK_FORWARD, *TRAINER,
                 "evaluation.baselines=[{label: placebo, texts: permuted}]")  # fmt: skip
    with pytest.raises(FinfusionError, match=r"placebo twin placebo permutes texts, and data\.texts is off"):
        evaluate_experiment(off, tmp_path / "off", progress=lambda _: None)
    odd = config(market, *WALK_FORWARD, *TRAINER, "evaluation.baselines=[{label: placebo, texts: reversed}]")
    with pytest.raises(FinfusionError, match="texts: reversed"):
        evaluate_experiment(odd, tmp_path / "odd", progress=lambda _: None)


def test_with_and_without_texts_subsets_split_the_test_windows(market: Path, tmp_path: Path) -> None:
    cfg = config(
        market,
        *WALK_FORWARD,
        *TRAINER,
        "evaluation.baselines=[{label: price_only, set: {use_text: false}}]",
        "evaluation.compare_to=[price_only]",
        "evaluation.direction_baselines=[]",
        "evaluation.dm_loss=[crps]",
        "evaluation.subsets=[with_texts, without_texts]",
    )
    evaluation = evaluate_experiment(cfg, tmp_path / "eval", progress=lambda _: None)
    scored = evaluation.metrics.models["multimodal"]
    assert {"crps_with_texts", "crps_without_texts"} <= scored.keys()
    subsets = {t["subset"] for t in evaluation.metrics.significance}
    assert {"all", "with_texts", "without_texts"} <= subsets


class _Windows:
    """Three test windows; the second sees no text."""

    index = np.zeros((3, 2), dtype=np.int64)

    def text_ids(self, item: int) -> list[str]:
        return [] if item == 1 else ["t"]


def test_with_and_without_texts_take_whole_windows_and_partition_them() -> None:
    target_us = np.zeros((3, 4), dtype=np.int64)
    seen = subset_steps("with_texts", None, _Windows(), target_us)  # type: ignore[arg-type]
    unseen = subset_steps("without_texts", None, _Windows(), target_us)  # type: ignore[arg-type]
    assert seen.tolist() == [[True] * 4, [False] * 4, [True] * 4]
    assert (seen ^ unseen).all()
