"""StockNet (ACL18) benchmark: labels, lag window, point-in-time samples, the three models, the runner, real counts."""

from __future__ import annotations

import dataclasses
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from typer.testing import CliRunner

from finfusion.commands.benchmark import app as benchmark_app
from finfusion.data.lake import Lake
from finfusion.data.sources.stocknet import ingest_stocknet
from finfusion.errors import FinfusionError
from finfusion.families.movement import evaluate_seed, family_data, scores
from finfusion.families.movement_benchmark import BenchmarkRun, ProtocolRun, check_counts
from finfusion.families.movement_benchmark_page import results_markdown
from finfusion.models.movement.fusion import MovementFusion
from finfusion.models.movement.price import MovementPrice
from finfusion.models.movement.text import MovementText
from finfusion.samples.contract import PAST, PAST_MASK, TEXT_AGE, TEXT_EMB, TEXT_MASK
from finfusion.samples.daily_movement import (
    PRICE_CHANNELS,
    PUBLISHED_COUNTS,
    DailyMovementConfig,
    DailyMovementDataset,
    DailyMovementSamples,
    build_daily_movement,
    dead_band_labels,
    stocknet_file_days,
)
from finfusion.training.losses import build_loss
from finfusion.training.tasks import MovementTask
from tests.conftest import STOCKNET, requires

DIM = 8
C = len(PRICE_CHANNELS)


def make_bars(symbols: list[str], first: str = "2013-11-01", last: str = "2016-01-08", seed: int = 0) -> pl.DataFrame:
    """Business-day bars closing 21:00 UTC with random-walk adjusted closes (adj_factor 0.9)."""
    rng = np.random.default_rng(seed)
    days = np.arange(np.datetime64(first), np.datetime64(last), dtype="datetime64[D]")
    days = days[np.is_busday(days)]
    frames = []
    for symbol in symbols:
        adj = 50.0 * np.exp(np.cumsum(rng.normal(0.0, 0.015, len(days))))
        close = adj / 0.9
        frames.append(
            pl.DataFrame(
                {
                    "symbol": symbol,
                    "ts": (days.astype("datetime64[us]") + np.timedelta64(21, "h")).astype("datetime64[us]"),
                    "open": close * (1 + rng.normal(0, 0.003, len(days))),
                    "high": close * 1.01,
                    "low": close * 0.99,
                    "close": close,
                    "adj_close": adj,
                    "volume": rng.uniform(1e5, 1e6, len(days)),
                }
            )
        )
    return pl.concat(frames).with_columns(pl.col("ts").dt.replace_time_zone("UTC"))


def make_texts(symbols: list[str], per_symbol: int = 400, seed: int = 1) -> tuple[pl.DataFrame, np.ndarray]:
    """Tweets on random calendar days of 2013-12 .. 2015-12 (published within their day) and their vectors."""
    rng = np.random.default_rng(seed)
    rows = []
    for symbol in symbols:
        offsets = rng.integers(0, 760, per_symbol)
        hours = rng.uniform(0, 23.99, per_symbol)
        for offset, hour in zip(offsets, hours, strict=True):
            day = date(2013, 12, 1) + timedelta(days=int(offset))
            published = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(hours=float(hour))
            rows.append({"symbol": symbol, "day": day, "published_at": published, "row": len(rows)})
    texts = pl.DataFrame(rows, schema_overrides={"published_at": pl.Datetime("us", "UTC")})
    return texts, rng.normal(size=(len(rows), DIM)).astype(np.float32)


@pytest.fixture(scope="module")
def small() -> tuple[pl.DataFrame, pl.DataFrame, np.ndarray]:
    bars = make_bars(["AAA", "BBB"])
    texts, vectors = make_texts(["AAA", "BBB"])
    return bars, texts, vectors


def test_dead_band_labels_follow_stocknet() -> None:
    moves = np.array([-0.02, -0.005001, -0.005, 0.0, 1e-7, 0.005499, 0.0055, 0.03])
    assert dead_band_labels(moves, DailyMovementConfig()).tolist() == [0, 0, -1, -1, -1, -1, 1, 1]


def test_targets_labels_and_splits(small: tuple[pl.DataFrame, pl.DataFrame, np.ndarray]) -> None:
    bars, texts, vectors = small
    samples = build_daily_movement(bars, texts, vectors)
    targets = samples.targets
    assert targets["label"].is_in([0, 1]).all()
    moves = targets["movement"].to_numpy()
    assert np.all((moves < -0.005) | (moves >= 0.0055))
    assert np.array_equal(targets["label"].to_numpy(), (moves > 0).astype(np.int64))
    days = targets["day"].to_numpy().astype("datetime64[D]")
    assert days.min() >= np.datetime64("2014-01-01") and days.max() < np.datetime64("2016-01-01")
    for split, start, end in (("train", "2014-01-01", "2015-08-01"), ("test", "2015-10-01", "2016-01-01")):
        picked = days[samples.rows(split)]
        assert picked.min() >= np.datetime64(start) and picked.max() < np.datetime64(end)
    assert sum(samples.counts().values()) == targets.height
    expected = (
        bars.sort("symbol", "ts")
        .with_columns(move=(pl.col("adj_close") / pl.col("adj_close").shift(1).over("symbol") - 1).round(6))
        .filter(pl.col("symbol") == "AAA", pl.col("ts").dt.date() == date(2015, 3, 3))["move"]
        .item()
    )
    row = targets.with_row_index().filter(pl.col("symbol") == "AAA", pl.col("day") == date(2015, 3, 3))
    assert row.height == (0 if -0.005 <= expected < 0.0055 else 1)
    with pytest.raises(FinfusionError, match="unknown split"):
        samples.rows("valid")


def test_full_lookback_rule_drops_early_targets() -> None:
    bars = make_bars(["AAA"], first="2013-12-30")  # first bar Mon 12-30, first movement Tue 12-31
    texts, vectors = make_texts(["AAA"], per_symbol=5)
    samples = build_daily_movement(bars, texts, vectors, DailyMovementConfig(up_threshold=0.0, down_threshold=0.0))
    days = samples.targets["day"].to_list()
    # a target t needs a movement strictly before t - 4 days: 2014-01-06 (t - 4 = 01-02) is the first that has one
    assert date(2014, 1, 3) not in days and date(2014, 1, 2) not in days
    assert min(days) == date(2014, 1, 6)


def test_steps_prices_and_tweets_of_one_target(small: tuple[pl.DataFrame, pl.DataFrame, np.ndarray]) -> None:
    bars = make_bars(["AAA"])
    vectors = np.arange(7 * DIM, dtype=np.float32).reshape(7, DIM)
    days = [date(2015, 3, d) for d in (4, 5, 6, 7, 8, 9, 10)]  # Wed 4 .. Tue 10
    texts = pl.DataFrame(
        {
            "symbol": "AAA",
            "day": days,
            "published_at": [datetime(d.year, d.month, d.day, 12, tzinfo=UTC) for d in days],
            "row": range(7),
        },
        schema_overrides={"published_at": pl.Datetime("us", "UTC")},
    )
    config = DailyMovementConfig(up_threshold=0.0, down_threshold=0.0)
    samples = build_daily_movement(bars, texts, vectors, config)
    (item,) = samples.targets.with_row_index().filter(pl.col("day") == date(2015, 3, 10))["index"]
    # target Tue 03-10: lag days in [03-06, 03-09] are Fri 6 and Mon 9 -> steps Fri 6, Mon 9, Tue 10 (T = 3)
    assert samples.step_mask[item].tolist() == [False, False, True, True, True]
    sample = samples.dataset("train").__getitem__(int(np.searchsorted(samples.rows("train"), item)))
    assert sample[PAST].shape == (5, C) and torch.all(sample[PAST][:2] == 0)
    # tweets of days 03-05 (window start t-5) .. 03-09: day 5 -> Fri 6, days 6, 7, 8 -> Mon 9, day 9 -> Tue 10
    index = samples.tweet_index[item]
    assert sorted(index[2][index[2] >= 0].tolist()) == [1]
    assert sorted(index[3][index[3] >= 0].tolist()) == [2, 3, 4]
    assert sorted(index[4][index[4] >= 0].tolist()) == [5]
    assert 0 not in index and 6 not in index  # 03-04 is before the window, 03-10 is the target day
    mask = sample[TEXT_MASK]
    assert torch.equal(sample[TEXT_EMB][4][mask[4]], torch.from_numpy(vectors[[5]]))
    assert sample[TEXT_AGE][4][mask[4]].item() == pytest.approx(0.5)  # 03-09 12:00 UTC -> 03-10 00:00 UTC
    # the last step holds Mon 03-09's close return (the day before the target), z-scored on the train span
    frame = bars.sort("ts").with_columns(
        r=pl.col("adj_close") / pl.col("adj_close").shift(1) - 1, d=pl.col("ts").dt.date()
    )
    train = frame.filter(pl.col("ts") < datetime(2015, 8, 1, tzinfo=UTC))["r"].drop_nulls()
    monday = frame.filter(pl.col("d") == date(2015, 3, 9))["r"].item()
    assert samples.price[item][4, 0] == pytest.approx((monday - train.mean()) / train.std(), rel=1e-5)


def test_most_recent_tweets_are_kept() -> None:
    bars = make_bars(["AAA"])
    day = date(2015, 3, 9)
    texts = pl.DataFrame(
        {
            "symbol": "AAA",
            "day": [day] * 5,
            "published_at": [datetime(2015, 3, 9, h, tzinfo=UTC) for h in (1, 5, 9, 13, 17)],
            "row": range(5),
        },
        schema_overrides={"published_at": pl.Datetime("us", "UTC")},
    )
    vectors = np.ones((5, DIM), dtype=np.float32)
    config = DailyMovementConfig(max_tweets=2, up_threshold=0.0, down_threshold=0.0)
    samples = build_daily_movement(bars, texts, vectors, config)
    (item,) = samples.targets.with_row_index().filter(pl.col("day") == date(2015, 3, 10))["index"]
    assert samples.tweet_index[item, 4].tolist() == [3, 4]
    assert samples.tweet_age[item, 4].tolist() == pytest.approx([11 / 24, 7 / 24])


def test_text_published_after_its_day_is_rejected(small: tuple[pl.DataFrame, pl.DataFrame, np.ndarray]) -> None:
    bars, texts, vectors = small
    late = texts.with_columns(
        pl.when(pl.col("row") == 3).then(pl.col("published_at") + pl.duration(days=2)).otherwise("published_at")
    )
    with pytest.raises(FinfusionError, match="published after the end of their file's day"):
        build_daily_movement(bars, late, vectors)


def test_stocknet_file_days_parse_source_ref() -> None:
    refs = pl.Series(["tweet/preprocessed/AAPL/2014-01-02:3", "tweet/preprocessed/BRK-A/2015-12-31:10"])
    assert stocknet_file_days(refs).to_list() == [date(2014, 1, 2), date(2015, 12, 31)]
    with pytest.raises(FinfusionError, match="does not name a StockNet day file"):
        stocknet_file_days(pl.Series(["news/2014.csv:3"]))


def test_changing_the_future_leaves_the_past_unchanged(small: tuple[pl.DataFrame, pl.DataFrame, np.ndarray]) -> None:
    bars, texts, vectors = small
    cut = date(2015, 11, 2)
    cut_ts = datetime(2015, 11, 2, tzinfo=UTC)
    rng = np.random.default_rng(5)
    scramble = pl.Series(rng.uniform(0.5, 2.0, bars.height))
    future_bars = bars.with_columns(
        [
            pl.when(pl.col("ts") >= cut_ts).then(pl.col(c) * scramble).otherwise(pl.col(c))
            for c in ("adj_close", "volume")
        ]
    )
    extra = pl.DataFrame(
        {
            "symbol": ["AAA", "BBB", "AAA"],
            "day": [cut, date(2015, 11, 20), date(2015, 12, 1)],
            "published_at": [
                datetime(2015, 11, 2, 1, tzinfo=UTC),
                datetime(2015, 11, 20, 3, tzinfo=UTC),
                datetime(2015, 12, 1, 4, tzinfo=UTC),
            ],
            "row": [len(vectors), len(vectors) + 1, len(vectors) + 2],
        },
        schema_overrides={"published_at": pl.Datetime("us", "UTC")},
    )
    future_texts = pl.concat([texts.filter(pl.col("day") < cut), extra])
    future_vectors = np.concatenate([vectors, np.full((3, DIM), 9.0, dtype=np.float32)])
    before = build_daily_movement(bars, texts, vectors)
    after = build_daily_movement(future_bars, future_texts, future_vectors)
    assert not before.targets.filter(pl.col("day") > cut).equals(after.targets.filter(pl.col("day") > cut))
    keys = ["symbol", "day"]
    old = before.targets.with_row_index("old").filter(pl.col("day") <= cut)
    new = after.targets.with_row_index("new").filter(pl.col("day") <= cut)
    both = old.join(new, on=keys, how="inner")
    assert both.height > 500
    assert both.filter(pl.col("day") < cut).height == old.filter(pl.col("day") < cut).height
    i, j = both["old"].to_numpy(), both["new"].to_numpy()
    assert np.array_equal(before.price[i], after.price[j])
    assert np.array_equal(before.step_mask[i], after.step_mask[j])
    assert np.array_equal(before.tweet_index[i], after.tweet_index[j])
    assert np.array_equal(before.tweet_age[i], after.tweet_age[j])
    strictly = both.filter(pl.col("day") < cut)
    assert strictly["label"].equals(strictly["label_right"])


def _batch(dataset: DailyMovementDataset, size: int) -> dict[str, torch.Tensor]:
    return next(iter(dataset.loader(size, shuffle=False)))


@pytest.fixture(scope="module")
def planted() -> DailyMovementSamples:
    """Samples labelled up when the last step's close channel plus 2 x the first text dimension of its tweets is > 0."""
    bars = make_bars(["AAA", "BBB", "CCC"], seed=3)
    texts, vectors = make_texts(["AAA", "BBB", "CCC"], per_symbol=700, seed=4)
    samples = build_daily_movement(bars, texts, vectors, DailyMovementConfig(max_tweets=4))
    last = samples.tweet_index[:, -1, :]
    text = np.where(last >= 0, vectors[np.maximum(last, 0), 0], 0.0).sum(axis=1)
    return dataclasses.replace(samples, labels=(samples.price[:, -1, 0] + 2 * text > 0).astype(np.int64))


@pytest.mark.parametrize(
    ("cls", "kwargs", "reachable"),
    [
        (MovementPrice, {"n_channels": C}, 0.6),
        (MovementText, {"text_dim": DIM}, 0.66),
        (MovementFusion, {"n_channels": C, "text_dim": DIM}, 0.3),
    ],
)
def test_models_shapes_and_training_steps(
    cls: type[torch.nn.Module], kwargs: dict[str, int], reachable: float, planted: DailyMovementSamples
) -> None:
    torch.manual_seed(0)
    model = cls(d_model=16, dropout=0.0, **kwargs)
    assert {PAST_MASK} <= cls.inputs and cls.outputs == frozenset({"logits", "latent"})
    train = planted.dataset("train")
    batch = _batch(train, 32)
    assert batch[PAST].shape == (32, 5, C) and batch[TEXT_EMB].shape == (32, 5, 4, DIM)
    empty = {**batch, TEXT_MASK: torch.zeros_like(batch[TEXT_MASK])}
    assert torch.isfinite(model(empty)["logits"]).all()
    outputs = model(batch)
    assert outputs["logits"].shape == (32, 2) and outputs["latent"].shape == (32, 32)
    assert torch.equal(model.classify(outputs["latent"]), outputs["logits"])
    loss_fn = build_loss("cross_entropy")
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    fixed = _batch(train, 512)
    with torch.no_grad():
        first = float(loss_fn(model(fixed), fixed))
    for _ in range(4):
        for batch in train.loader(64, shuffle=True, seed=1):
            optimizer.zero_grad()
            loss_fn(model(batch), batch).backward()
            optimizer.step()
    with torch.no_grad():
        last = float(loss_fn(model(fixed), fixed))
    assert last < min(first, reachable)  # each model learns the part of the planted signal it can see


def test_adversarial_training_adds_the_loss_at_the_worst_nearby_latent(planted: DailyMovementSamples) -> None:
    torch.manual_seed(0)
    model = MovementFusion(n_channels=C, text_dim=DIM, d_model=16, dropout=0.0)
    batch = _batch(planted.dataset("train"), 64)
    clean = build_loss("cross_entropy")(model(batch), batch).item()
    plain = MovementTask(model, adversarial_epsilon=0.0)
    assert plain._training_loss(batch).item() == pytest.approx(clean, rel=1e-6)
    total = MovementTask(model, adversarial_epsilon=0.05, adversarial_beta=1.0)._training_loss(batch).item()
    assert total - clean > clean  # the perturbed latent's loss is above the clean loss
    assert total - clean < 1.2 * clean  # and a small step away from it
    random_shift = model.classify(model(batch)["latent"] + 0.05 * F.normalize(torch.randn(64, 32), dim=-1))
    assert total - clean > build_loss("cross_entropy")({"logits": random_shift}, batch).item()
    task = MovementTask(model, adversarial_epsilon=0.05)
    task._training_loss(batch).backward()
    assert all(p.grad is not None for p in model.head.out.parameters())
    with pytest.raises(ValueError, match="needs a model that returns `latent`"):
        MovementTask(torch.nn.Linear(2, 2), adversarial_epsilon=0.1)
    with pytest.raises(ValueError, match="must be >= 0"):
        MovementTask(model, adversarial_epsilon=-0.1)


def test_evaluate_seed_selects_on_dev_and_scores_test(tmp_path: Path, planted: DailyMovementSamples) -> None:
    samples = planted
    cfg = OmegaConf.create(
        {
            "name": "tiny_fusion",
            "label": "tiny fusion model",
            "data": {"batch_size": 64},
            "model": {"name": "movement_fusion", "d_model": 16, "dropout": 0.0},
            "task": {"name": "movement", "loss": "cross_entropy"},
            "optim": {"lr": 3e-3, "weight_decay": 0.0, "warmup_fraction": 0.0},
            "trainer": {
                "max_epochs": 4,
                "accelerator": "cpu",
                "enable_progress_bar": False,
                "checkpoint": {"monitor": "val_mcc", "mode": "max", "save_top_k": 1},
                "early_stopping": {"enabled": False},
                "loggers": ["csv"],
            },
        }
    )
    data = family_data(samples, cfg)
    result = evaluate_seed(cfg, seed=0, run_dir=tmp_path / "run", data=data)
    assert 0 <= result.epoch < 4 and result.test is not None
    assert result.dev.mcc > 0.3 and result.test.mcc > 0.3  # the planted signal carries to unseen splits
    dev_only = evaluate_seed(cfg, seed=0, run_dir=tmp_path / "run", data=data, evaluate_test=False)
    assert dev_only.test is None and dev_only.dev == result.dev  # same seed, same selection
    twin = replace(result, experiment="tiny_fusion_placebo")
    run = BenchmarkRun([cfg], [ProtocolRun("all", samples, [result, twin])], "tiny")
    page = results_markdown("finfusion benchmark stocknet --data X", run)
    assert "| **tiny fusion model** |" in page and "MAN-SF" in page and "0.608" in page
    assert "| tiny fusion model, seed ensemble |" in page and "| previous_sign (direction baseline) |" in page
    assert "| tiny_fusion | tiny_fusion_placebo | +0.0000 |" in page and "placebo twin of tiny fusion model" in page
    with pytest.raises(FinfusionError, match="do not match the published benchmark"):
        check_counts(samples)


def test_scores() -> None:
    result = scores(np.array([1, 1, 0, 0]), np.array([1, 0, 0, 0]))
    assert result.accuracy == 0.75 and result.f1 == pytest.approx(2 / 3) and result.mcc == pytest.approx(0.57735, 1e-4)
    with pytest.raises(FinfusionError):
        scores(np.array([1]), np.array([1, 0]))


def test_command_reports_a_missing_copy(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        benchmark_app, ["stocknet", "--data", str(tmp_path / "nope"), "--lake", str(tmp_path / "lake")]
    )
    assert result.exit_code == 2
    assert "no StockNet copy" in result.output


@pytest.mark.realdata
@requires(STOCKNET)
def test_stocknet_published_counts_and_point_in_time_tweets(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake")
    ingest_stocknet(lake, STOCKNET)
    bars = lake.read("bars", "stocknet", freq="1d")
    texts = lake.read("text", "stocknet")
    texts = texts.with_columns(stocknet_file_days(texts["source_ref"])).explode("symbols").with_row_index("row")
    texts = texts.select(pl.col("symbols").alias("symbol"), "day", "published_at", pl.col("row").cast(pl.Int64))
    samples = build_daily_movement(bars, texts, np.zeros((texts.height, 1), dtype=np.float32))
    assert samples.counts() == PUBLISHED_COUNTS == {"train": 20_339, "dev": 2_555, "test": 3_720}
    assert round(samples.up_rate(), 3) == 0.502
    check_counts(samples)
    used = samples.tweet_index >= 0
    assert used.any(axis=(1, 2)).mean() > 0.5
    day_of_row = texts["day"].to_numpy().astype("datetime64[D]")
    target_day = samples.targets["day"].to_numpy().astype("datetime64[D]")
    item = np.nonzero(used)[0]
    tweet_day = day_of_row[samples.tweet_index[used]]
    assert np.all(tweet_day < target_day[item]) and np.all(tweet_day >= target_day[item] - np.timedelta64(5, "D"))
    assert np.all(samples.tweet_age[used] > 0)
