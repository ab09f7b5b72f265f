"""The relevance family's parts (seed 004): the planted macro and policy context of the synthetic market, point-in-time
series features, weekly samples whose features never see the future, the dual-tower model and its loss."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from finfusion.data.calendar import to_us
from finfusion.data.lake import Lake
from finfusion.data.sources.synthetic import SyntheticConfig, generate_market
from finfusion.data.sources.synthetic_context import ContextConfig
from finfusion.data.sources.synthetic_ingest import config_fingerprint, ingest_market, planted_sensitivity
from finfusion.features.bars import FeatureConfig, build_features
from finfusion.features.series_asof import series_features
from finfusion.models.relevance.module import DualTowerRelevance
from finfusion.relevance.importance import group_columns
from finfusion.samples.contract import CONTEXT, ORIGIN_US, STOCK, SYMBOL_INDEX
from finfusion.samples.relevance import (
    STOCK_GROUPS,
    feature_groups,
    fit_state,
    forward_returns,
    raw_samples,
    relevance_options,
    samples_from,
    split_masks,
    weekly_decisions,
)
from finfusion.training.relevance_loss import RelevanceLoss, magnitude_loss, orthogonality_loss

US_PER_DAY = 86_400_000_000
CONTEXT_MARKET = SyntheticConfig(n_symbols=6, start="2018-01-01", end="2019-12-31", seed=5, context=ContextConfig())
SERIES = {"policy": ["policy_rate"], "macro": ["activity_index", "consumer_sentiment"]}


def us(text: str) -> int:
    return int(to_us(pl.Series([text]).str.to_datetime(time_zone="UTC"))[0])


def test_a_market_without_context_is_unchanged_and_hashes_as_before() -> None:
    plain = SyntheticConfig(n_symbols=3, start="2019-01-01", end="2019-06-30")
    assert config_fingerprint(SyntheticConfig()) == "5d16abb6ecffb918"  # the fingerprint stored lakes carry
    market = generate_market(plain)
    assert market.series is None and market.sensitive == {}
    with_context = generate_market(replace(plain, context=ContextConfig(policy_sensitive_share=0.0,
                                                                        macro_sensitive_share=0.0)))  # fmt: skip
    # no stock is sensitive: the same prices, only the series are added
    assert with_context.bars.equals(market.bars)
    assert with_context.series is not None and set(with_context.series["series"]) == {
        "policy_rate", "activity_index", "consumer_sentiment"}  # fmt: skip


def test_planted_effects_move_the_sensitive_stocks_and_no_other() -> None:
    config = replace(CONTEXT_MARKET, news_rate=0.0, noise_news_rate=0.0)
    with_effects = generate_market(config)
    without = generate_market(replace(config, context=replace(config.context, policy_effect=0.0, macro_effect=0.0)))
    moved = (
        with_effects.bars.join(without.bars, on=["symbol", "ts"], suffix="_0")
        .group_by("symbol")
        .agg(((pl.col("close") / pl.col("close_0")).log().abs().max() > 1e-9).alias("moved"))
    )
    moved_symbols = set(moved.filter("moved")["symbol"])
    sensitive = with_effects.sensitive
    assert moved_symbols == set(sensitive["policy"]) | set(sensitive["macro"])
    assert set(sensitive["policy"]).isdisjoint(sensitive["macro"]) and len(sensitive["policy"]) == 2


def test_the_ground_truth_is_stored_with_the_series(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake")
    market = generate_market(CONTEXT_MARKET)
    ingest_market(lake, market, "ctx")
    assert planted_sensitivity(lake, "ctx") == market.sensitive
    stored = lake.read("series", "ctx")
    assert stored.height == market.series.height
    revised = stored.filter(pl.col("series") == "activity_index").group_by("period").len()
    assert (revised["len"] == 2).all()  # each month: the first release and its revision


def test_series_features_read_the_vintage_known_at_each_instant() -> None:
    rows = pl.DataFrame(
        {
            "series": ["gdp"] * 3,
            "period": ["2024-01-01", "2024-01-01", "2024-04-01"],
            "published_at": ["2024-04-25 12:30", "2024-05-30 12:30", "2024-07-25 12:30"],
            "value": [1.6, 1.3, 2.8],
        }
    ).with_columns(pl.col("period", "published_at").str.to_datetime(time_zone="UTC"))
    instants = np.array([us("2024-04-01"), us("2024-05-01"), us("2024-06-01"), us("2024-08-01")])
    features = series_features(rows, ["gdp"], instants)
    level = features["gdp_level"]
    assert np.isnan(level[0])  # nothing released yet
    assert level[1] == 1.6 and level[2] == 1.3 and level[3] == 2.8  # the first release, then the revision
    assert np.isnan(features["gdp_change"][2]) and features["gdp_change"][3] == pytest.approx(2.8 - 1.3)
    # the age counts from the period's first release, not from its revision
    assert features["gdp_age"][2] == pytest.approx((us("2024-06-01") - us("2024-04-25 12:30")) / US_PER_DAY)


def test_weekly_decisions_take_each_weeks_last_bar_and_no_unfinished_week() -> None:
    days = np.array(["2024-01-01", "2024-01-03", "2024-01-05", "2024-01-08", "2024-01-09"], dtype="datetime64[D]")
    ts = (days.astype("datetime64[us]").astype(np.int64)) + 21 * 3_600_000_000  # closes
    assert weekly_decisions(ts).tolist() == [2]  # Friday the 5th; the week of the 8th is not over at the 9th
    returns = forward_returns(ts, np.array([0.0, 0.1, 0.2, 0.3, 0.5]), np.array([2]), [3, 30])
    assert returns[0, 0] == pytest.approx(0.3 - 0.2) and np.isnan(returns[0, 1])  # 30 days are not there yet


def _samples(lake: Lake, texts: bool) -> object:
    options = relevance_options(
        {"dataset": "ctx", "lake": str(lake.root), "series": SERIES, "texts": {"enabled": texts, "components": 4}}
    )
    return raw_samples(options, lake, None), options


def _perturbed_after(market: object, cut: pl.Datetime) -> object:
    """The market with every bar, text and series release after `cut` changed."""
    rng = np.random.default_rng(0)
    late = pl.col("ts") > cut
    factor = pl.Series(rng.uniform(0.5, 1.5, market.bars.height))
    bars = market.bars.with_columns(
        [pl.when(late).then(pl.col(c) * factor).otherwise(pl.col(c)).alias(c) for c in ("open", "high", "low", "close")]
    ).with_columns(pl.when(late).then(pl.col("volume") * 3).otherwise(pl.col("volume")).alias("volume"))
    late_text = pl.col("published_at") > cut
    texts = market.texts.filter(~late_text | (pl.int_range(pl.len()) % 2 == 0)).with_columns(
        pl.when(late_text).then(pl.lit("Totally different headline")).otherwise("title").alias("title")
    )
    series = market.series.with_columns(
        pl.when(pl.col("published_at") > cut).then(pl.col("value") + 7.0).otherwise("value").alias("value")
    )
    return replace(market, bars=bars, texts=texts, series=series)


@pytest.mark.parametrize("texts", [False, True], ids=["series-and-bars", "with-news"])
def test_no_context_or_stock_feature_sees_the_future(tmp_path: Path, texts: bool) -> None:
    market = generate_market(CONTEXT_MARKET)
    cut = pl.datetime(2019, 3, 15, time_zone="UTC")
    cut_us = us("2019-03-15")
    lakes = []
    for name, version in (("a", market), ("b", _perturbed_after(market, cut))):
        lake = Lake(tmp_path / name)
        ingest_market(lake, version, "ctx")
        lakes.append(lake)
    (raw_a, options), (raw_b, _) = _samples(lakes[0], texts), _samples(lakes[1], texts)
    assert np.array_equal(raw_a.origin_us, raw_b.origin_us)
    past = raw_a.origin_us <= cut_us
    assert past.sum() > 100 and (~past).sum() > 50
    for name in ("stock", "series", *(["news_mean", "news_count"] if texts else [])):
        a, b = getattr(raw_a, name), getattr(raw_b, name)
        # embeddings of one text batched with other texts differ in the last float32 digits (padding), nothing more
        np.testing.assert_allclose(a[past], b[past], rtol=0, atol=1e-6 if name == "news_mean" else 0, err_msg=name)
        assert not np.array_equal(np.nan_to_num(a[~past]), np.nan_to_num(b[~past])), f"{name} ignores the data"
    # the labels do look ahead, and the fitted state sees only training samples
    train_end = us("2019-01-01")
    masks = [
        split_masks(raw.origin_us, np.isfinite(raw.forward_return).all(axis=1), 30, train_end, cut_us)
        for raw in (raw_a, raw_b)
    ]
    assert np.array_equal(masks[0]["train"], masks[1]["train"])
    states = [
        fit_state(raw, options, mask["train"], train_end, cut_us)
        for raw, mask in zip((raw_a, raw_b), masks, strict=True)
    ]
    _assert_same(states[0], states[1])
    samples, finite = samples_from(raw_a, states[0])
    assert len(samples) == int(finite.sum()) and set(feature_groups(states[0])[0]) == (
        {"news", "policy", "macro"} if texts else {"policy", "macro"})  # fmt: skip


def _assert_same(a: object, b: object) -> None:
    """Equal fitted states: names exactly, numbers to 1e-5 (the embeddings' last float32 digits)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys()
        for key in a:
            _assert_same(a[key], b[key])
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _assert_same(x, y)
    elif isinstance(a, float):
        assert a == pytest.approx(b, abs=1e-5)
    else:
        assert a == b


def test_towers_give_the_seeds_shapes_and_batch_norm_serves_one_sample() -> None:
    torch.manual_seed(0)
    model = DualTowerRelevance(context_dim=12, stock_dim=25, horizons=[7, 30])
    batch = {"context": torch.randn(16, 12), "stock": torch.randn(16, 25)}
    out = model(batch)
    assert out["score"].shape == (16, 2) and out["direction_logits"].shape == (16, 2, 2)
    assert out["context_embedding"].shape == (16, 32) and out["stock_embedding"].shape == (16, 64)
    assert out["score"].abs().max() <= 1.0
    widths = [m.out_features for m in model.context_tower.layers if isinstance(m, torch.nn.Linear)]
    assert widths == [128, 64, 32]
    assert [m.out_features for m in model.stock_tower.layers if isinstance(m, torch.nn.Linear)] == [256, 128, 64]
    model.eval()
    single = model({"context": batch["context"][:1], "stock": batch["stock"][:1]})
    together = model(batch)
    torch.testing.assert_close(single["score"], together["score"][:1])  # eval BatchNorm: running statistics
    context, stock = model.extract_embeddings(batch["context"], batch["stock"])
    torch.testing.assert_close(context, together["context_embedding"])
    torch.testing.assert_close(stock, together["stock_embedding"])
    model.train()
    with pytest.raises(ValueError):
        model({"context": batch["context"][:1], "stock": batch["stock"][:1]})  # training BatchNorm needs a batch


def test_orthogonality_loss_is_zero_for_orthogonal_embeddings_and_positive_otherwise() -> None:
    a = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    b = torch.tensor([[0.0, 3.0, 0.0], [0.0, 0.0, -1.0]])
    assert float(orthogonality_loss(a, b)) == pytest.approx(0.0, abs=1e-7)
    assert float(orthogonality_loss(a, a)) == pytest.approx(1.0)
    assert float(magnitude_loss(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]))) == pytest.approx(0.0)


def test_the_multitask_loss_weighs_its_terms_and_skips_unknown_labels() -> None:
    outputs = {
        "score": torch.tensor([[0.5, 0.0], [0.0, 0.0]]),
        "direction_logits": torch.zeros(2, 2, 2),
        "context_embedding": torch.tensor([[1.0, 0.0], [1.0, 0.0]]),
        "stock_embedding": torch.tensor([[1.0, 0.0], [1.0, 0.0]]),
        "stock_projection": torch.tensor([[0.0, 1.0], [0.0, 1.0]]),
    }
    batch = {
        "relevance": torch.tensor([[1.0, 9.0], [0.0, 9.0]]),
        "direction": torch.tensor([[1, 1], [0, 1]]),
        "label_mask": torch.tensor([[True, False], [True, False]]),
    }
    terms = RelevanceLoss((1.0, 1.0), (0.5, 0.5), 0.01).terms(outputs, batch)
    assert float(terms["regression_0"]) == pytest.approx(0.125)  # (0.5^2 + 0) / 2
    assert float(terms["regression_1"]) == 0.0  # no known 30-day label: the 9s are never read
    assert float(terms["classification_0"]) == pytest.approx(np.log(2.0))
    assert float(terms["loss"]) == pytest.approx(0.125 + 0.5 * np.log(2.0))


def test_a_trained_run_predicts_every_week_between_two_instants_from_its_stored_state(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from finfusion.config import load_config
    from finfusion.families.base import Sources
    from finfusion.families.pipeline import load_run, train_run

    lake = Lake(tmp_path / "lake")
    ingest_market(lake, generate_market(CONTEXT_MARKET), "ctx")
    cfg = load_config(
        "dual_tower_synthetic",
        [f"data.lake={lake.root}", "data.source=lake", "data.dataset=ctx", "data.texts.enabled=false",
         "data.split.train_end=2019-01-01", "data.split.val_end=2019-06-01", "trainer.max_epochs=1",
         "trainer.enable_progress_bar=false"],
    )  # fmt: skip
    trained = train_run(cfg, tmp_path / "run", resume="never")
    run = load_run(tmp_path / "run")
    test_rows = run.family.predict(run, "test").frame()
    start, end = datetime(2019, 6, 1, tzinfo=UTC), datetime(2019, 12, 31, tzinfo=UTC)
    between = run.family.predict_between(run, start, end)
    # the latest weeks have no 30-day label yet and are predicted all the same
    assert between["origin_ts"].max() > test_rows.filter(pl.col("label").is_not_null())["origin_ts"].max()
    assert between["label"].null_count() > 0
    shared = between.join(test_rows, on=["symbol", "origin_ts", "horizon_days"], suffix="_test")
    assert shared.height > 0 and (shared["score"] == shared["score_test"]).all()
    served = run.family.serving_config(cfg, lake, Sources("ctx", "1d", "features", None), start, end)
    assert served.data.split.train_end == start.isoformat() and served.data.texts.enabled is False
    assert trained.data.state == run.data.state  # nothing refitted when the run is loaded


def test_a_loaded_runs_feature_groups_name_the_columns_that_hold_their_features(tmp_path: Path) -> None:
    """state.json is written with sorted keys; the state stores its feature groups as ordered [group, names] pairs,
    so a loaded run's group columns hold the features they name (they came back alphabetical: macro, policy; ohlcv,
    returns, technical, volatility, over columns in the samples' order)."""
    from finfusion.config import load_config
    from finfusion.families.pipeline import load_run, train_run

    lake = Lake(tmp_path / "lake")
    ingest_market(lake, generate_market(CONTEXT_MARKET), "ctx")
    cfg = load_config(
        "dual_tower_synthetic",
        [f"data.lake={lake.root}", "data.source=lake", "data.dataset=ctx", "data.texts.enabled=false",
         "data.split.train_end=2019-01-01", "data.split.val_end=2019-06-01", "trainer.max_epochs=1",
         "trainer.limit_train_batches=2", "trainer.limit_val_batches=1", "trainer.enable_progress_bar=false"],
    )  # fmt: skip
    train_run(cfg, tmp_path / "run", resume="never")
    run = load_run(tmp_path / "run")
    state, test = run.data.state, run.data.test
    context_groups, stock_groups = feature_groups(state)
    assert list(context_groups) == ["policy", "macro"] and list(stock_groups) == list(STOCK_GROUPS)
    origin_us = test.column(ORIGIN_US)
    symbols = [state["symbols"][int(i)] for i in test.column(SYMBOL_INDEX)]
    context = series_features(lake.read("series", "ctx"), [*SERIES["policy"], *SERIES["macro"]], origin_us)
    bars = build_features(lake.read("bars", "ctx", freq="1d"), FeatureConfig())
    row_of = {(s, t): k for k, (s, t) in enumerate(zip(bars["symbol"], to_us(bars["ts"]).tolist(), strict=True))}
    rows = [row_of[(symbol, int(t))] for symbol, t in zip(symbols, origin_us, strict=True)]
    stock = {name: bars[name].to_numpy()[rows] for names in STOCK_GROUPS.values() for name in names}
    stored = {
        key: test.column(key) * np.asarray(state[f"{key}_std"]) + np.asarray(state[f"{key}_mean"])
        for key in (CONTEXT, STOCK)
    }  # the samples' columns, unnormalised [N, F]
    for name, (key, columns) in group_columns(context_groups, stock_groups).items():
        group = name.split(":", 1)[1]
        features = (context_groups if key == CONTEXT else stock_groups)[group]
        for column, feature in zip(columns, features, strict=True):
            expected = (context if key == CONTEXT else stock)[feature]
            np.testing.assert_allclose(stored[key][:, column], expected, rtol=1e-4, atol=1e-4, err_msg=feature)
