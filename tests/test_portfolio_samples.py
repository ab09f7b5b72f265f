"""Portfolio samples: the common timeline, missing bars, news binned to the first bar after publication, coverage,
the training-span normaliser, purged splits, batches of consecutive decisions, and the point-in-time rule."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import polars as pl
import pytest
import torch
from torch.utils.data import DataLoader

from finfusion.data.calendar import from_us, to_us
from finfusion.data.sources.synthetic import SyntheticConfig, SyntheticMarket, generate_market
from finfusion.errors import FinfusionError
from finfusion.features.bars import build_features
from finfusion.samples import contract as c
from finfusion.samples.contract import NEWS_COVERAGE, NEWS_EMB, NEWS_MASK
from finfusion.samples.portfolio import (
    ContiguousBatches,
    PortfolioConfig,
    PortfolioData,
    PortfolioDataset,
    bin_news,
    build_portfolio_data,
    instant_us,
)
from finfusion.samples.windows import collate
from tests.sample_helpers import perturb_after, texts_with_embeddings

TRAIN_END = "2019-07-01"
INPUTS = ("log_return", "body", "range_hl", "volume_z_20")
L, H, A = 10, 4, 4


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def market() -> SyntheticMarket:
    return generate_market(SyntheticConfig(n_symbols=A, start="2019-01-01", end="2019-12-31", seed=5))


def config(**overrides: object) -> PortfolioConfig:
    base: dict[str, object] = {"lookback": L, "horizon": H, "inputs": INPUTS, "train_end": TRAIN_END}
    return PortfolioConfig(**(base | overrides))  # type: ignore[arg-type]


def build(bars: pl.DataFrame, texts: pl.DataFrame, **kwargs: object) -> PortfolioData:
    hashed, embeddings = texts_with_embeddings(texts)
    return build_portfolio_data(
        bars, config(), features=build_features(bars), texts=hashed, embeddings=embeddings, **kwargs
    )  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def data(market: SyntheticMarket) -> PortfolioData:
    return build(market.bars, market.texts)


def test_batch_follows_the_portfolio_contract(data: PortfolioData) -> None:
    dataset = PortfolioDataset(data, config())
    batch = next(iter(DataLoader(dataset, batch_sampler=ContiguousBatches(len(dataset), 8), collate_fn=collate)))
    shapes = {
        c.PAST: (8, A, L, len(INPUTS)), c.PAST_MASK: (8, A, L), c.FUTURE: (8, A, H), c.FUTURE_MASK: (8, A, H),
        NEWS_EMB: (8, A, L, 2), NEWS_MASK: (8, A, L), NEWS_COVERAGE: (8, A, L, A), c.ORIGIN_US: (8,),
    }  # fmt: skip
    assert {key: tuple(value.shape) for key, value in batch.items()} == shapes
    assert batch[c.PAST].dtype == torch.float32 and batch[c.PAST_MASK].dtype == torch.bool
    assert (batch[c.ORIGIN_US][1:] > batch[c.ORIGIN_US][:-1]).all()
    assert (batch[NEWS_EMB][~batch[NEWS_MASK]] == 0).all()
    assert (batch[NEWS_COVERAGE].sum(-1)[batch[NEWS_MASK]] >= 1).all()
    assert int(batch[NEWS_MASK].sum()) > 0
    assert len(dataset) == len(data.ts) - L + 1 - H


def test_future_holds_the_next_simple_returns_and_missing_bars_are_masked(market: SyntheticMarket) -> None:
    symbol = sorted(market.bars["symbol"].unique())[1]
    dropped_ts = market.bars.filter(pl.col("symbol") == symbol)["ts"][100]
    bars = market.bars.filter(~((pl.col("symbol") == symbol) & (pl.col("ts") == dropped_ts)))
    data = build(bars, market.texts)
    row = int(np.searchsorted(data.ts, to_us(pl.Series([dropped_ts]))[0]))
    assert not data.present[1, row] and data.present[0, row]
    assert np.isnan(data.returns[1, row])
    closes = bars.filter(pl.col("symbol") == symbol).with_columns(price=pl.col("close") * pl.col("adj_factor"))
    before, after = closes.filter(pl.col("ts") < dropped_ts)["price"][-1], closes.filter(pl.col("ts") > dropped_ts)
    assert data.returns[1, row + 1] == pytest.approx(after["price"][0] / before - 1.0)
    dataset = PortfolioDataset(data, config())
    item = int(np.flatnonzero(dataset.positions == row - 1)[0])
    sample = dataset[item]
    assert not sample[c.FUTURE_MASK][1, 0] and sample[c.FUTURE][1, 0] == 0
    assert sample[c.FUTURE][0, 0] == pytest.approx(data.returns[0, row], rel=1e-6)
    later = dataset[item + 3]
    assert not later[c.PAST_MASK][1, L - 3] and (later[c.PAST][1, L - 3] == 0).all()


def test_news_lands_on_the_first_bar_closing_after_it_with_mean_and_coverage() -> None:
    ts = np.array([100, 200, 300, 400], dtype=np.int64) * 1_000_000
    rows = [  # id, published (s), symbols, vector
        ("a", 150, ["X"], [1.0, 0.0]),
        ("b", 199, ["X"], [3.0, 2.0]),
        ("c", 200, ["X", "Y"], [0.0, 4.0]),  # at a bar's close: the next bar; two symbols
        ("d", 50, ["Z"], [5.0, 5.0]),  # before the first bar: bar 0
        ("e", 400, ["X"], [9.0, 9.0]),  # at the last close: no bar left
        ("f", 250, ["Q"], [9.0, 9.0]),  # outside the universe
    ]
    texts = pl.DataFrame(
        {
            "id": [r[0] for r in rows],
            "published_at": from_us(np.array([r[1] for r in rows]) * 1_000_000, "published_at"),
            "symbols": [r[2] for r in rows],
            "text_hash": [f"h{r[0]}" for r in rows],
        }
    )
    embeddings = pl.DataFrame(
        {"text_hash": [f"h{r[0]}" for r in rows], "vector": [r[3] for r in rows]},
        schema={"text_hash": pl.String, "vector": pl.List(pl.Float32)},
    )
    news = bin_news(texts, embeddings, ts, ["X", "Y", "Z"])
    assert news.index.shape == (3, 4) and news.dim == 2
    has = news.index >= 0
    assert has.tolist() == [[False, True, True, False], [False, False, True, False], [True, False, False, False]]
    assert news.mean[news.index[0, 1]].tolist() == [2.0, 1.0]
    assert news.mean[news.index[0, 2]].tolist() == [0.0, 4.0]
    assert news.mean[news.index[1, 2]].tolist() == [0.0, 4.0]
    assert news.coverage[news.index[0, 1]].tolist() == [True, False, False]
    assert news.coverage[news.index[0, 2]].tolist() == [True, True, False]
    assert news.coverage[news.index[2, 0]].tolist() == [False, False, True]
    with pytest.raises(FinfusionError, match="no embedding"):
        bin_news(texts, embeddings.head(2), ts, ["X", "Y", "Z"])


def test_normaliser_uses_only_the_training_span(market: SyntheticMarket, data: PortfolioData) -> None:
    train_end = datetime(2019, 7, 1, tzinfo=UTC)
    shaken = market.bars.with_columns(
        pl.when(pl.col("ts") >= train_end).then(pl.col(p) * 1.5).otherwise(pl.col(p)).alias(p)
        for p in ("open", "high", "low", "close", "adj_close")
    )
    other = build(shaken, market.texts)
    assert other.normalizer == data.normalizer
    train = data.ts < instant_us(TRAIN_END)
    values = data.inputs[:, train][data.present[:, train]][:, 0]  # log_return in the training span
    assert abs(values.mean()) < 0.05 and values.std() == pytest.approx(1.0, abs=0.05)
    reused = build(market.bars, market.texts, normalizer=data.normalizer)
    assert np.array_equal(reused.inputs, data.inputs)


def test_splits_are_purged_and_disjoint(data: PortfolioData) -> None:
    dataset = PortfolioDataset(data, config())
    train, val, test = dataset.split(end=TRAIN_END), dataset.split(TRAIN_END, "2019-10-01"), dataset.split("2019-10-01")
    assert (train.future_end_us < instant_us(TRAIN_END)).all()
    assert (val.origins_us >= instant_us(TRAIN_END)).all() and (val.future_end_us < instant_us("2019-10-01")).all()
    assert set(train.positions).isdisjoint(val.positions) and set(val.positions).isdisjoint(test.positions)
    assert len(train) + len(val) + len(test) == len(dataset) - 2 * H
    open_end = PortfolioDataset(data, config(require_future=False)).split("2019-12-20", purge=False)
    assert open_end.positions[-1] == len(data.ts) - 1


def test_contiguous_batches_cover_every_item_once_in_runs() -> None:
    sampler = ContiguousBatches(23, 5, shuffle=True, seed=1)
    first = list(sampler)
    sampler.set_epoch(1)
    second = list(sampler)
    assert len(first) == len(sampler) == 5
    assert sorted(i for batch in first for i in batch) == list(range(23))
    assert all(batch == list(range(batch[0], batch[0] + len(batch))) for batch in first)
    starts = [[batch[0] for batch in epoch] for epoch in (first, second)]
    assert starts[0] != starts[1] and starts[0] != sorted(starts[0])
    assert list(ContiguousBatches(7, 3)) == [[0, 1, 2], [3, 4, 5], [6]]


def test_samples_at_or_before_t_ignore_data_after_t(market: SyntheticMarket, data: PortfolioData) -> None:
    t = datetime(2019, 10, 1, 20, tzinfo=UTC)
    bars, texts = perturb_after(market, t)
    before, after = PortfolioDataset(data, config()), PortfolioDataset(build(bars, texts), config())
    t_us = instant_us(t)
    known = np.flatnonzero(before.origins_us <= t_us)
    assert np.array_equal(before.origins_us[known], after.origins_us[known]) and len(known) > 100
    keys = (c.PAST, c.PAST_MASK, NEWS_EMB, NEWS_MASK, NEWS_COVERAGE, c.ORIGIN_US)
    for item in known:
        a, b = before[int(item)], after[int(item)]
        for key in keys:
            assert torch.equal(a[key], b[key]), (item, key)
    later = [int(i) for i in np.flatnonzero(before.origins_us > t_us)]
    assert any(not torch.equal(before[i][c.PAST], after[i][c.PAST]) for i in later)
    assert any(not torch.equal(before[i][NEWS_EMB], after[i][NEWS_EMB]) for i in later)
    assert any(not torch.equal(before[i][c.FUTURE], after[i][c.FUTURE]) for i in known)


def test_bad_input_is_a_clear_error(market: SyntheticMarket, data: PortfolioData) -> None:
    with pytest.raises(FinfusionError, match="without bars: NOPE"):
        build(market.bars, market.texts, symbols=["NOPE"])
    with pytest.raises(FinfusionError, match="train_end is needed"):
        build_portfolio_data(market.bars, config(train_end=None), features=build_features(market.bars))
    with pytest.raises(FinfusionError, match="lacks column"):
        build_portfolio_data(market.bars, config())
    with pytest.raises(FinfusionError, match="differ from the data's columns"):
        PortfolioDataset(data, config(inputs=("log_return",)))
    with pytest.raises(FinfusionError, match="lookback, horizon and stride"):
        config(horizon=0)
    with pytest.raises(FinfusionError, match="need their embeddings"):
        build_portfolio_data(market.bars, config(inputs=("log_return",)), texts=market.texts)
