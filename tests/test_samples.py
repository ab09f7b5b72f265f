"""Window, movement and text samples: contract shapes, symbol boundaries, stride, train-span normaliser, dead band,
and the point-in-time rule (changing data after t leaves every sample with origin <= t unchanged)."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import polars as pl
import pytest
import torch
from torch.utils.data import DataLoader

from finfusion.data.calendar import get_calendar, to_us
from finfusion.data.sources.synthetic import SyntheticConfig, SyntheticMarket, generate_market
from finfusion.errors import FinfusionError
from finfusion.features.align import AlignedText, align_texts_to_bars
from finfusion.features.bars import build_features
from finfusion.samples import contract as c
from finfusion.samples.movement import MovementConfig, MovementDataset, movement_labels
from finfusion.samples.text_windows import TextWindowDataset
from finfusion.samples.windows import Panel, WindowConfig, WindowDataset, build_panel, collate
from tests.sample_helpers import perturb_after, texts_with_embeddings

TRAIN_END = "2019-08-01"
INPUTS = ("log_return", "rv_20", "rsi_14", "macd")
L, H = 20, 5
CAL = get_calendar("XNYS")


@pytest.fixture(scope="module")
def market() -> SyntheticMarket:
    return generate_market(SyntheticConfig(n_symbols=3, start="2019-01-01", end="2019-12-31", seed=3))


@pytest.fixture(scope="module")
def panel(market: SyntheticMarket) -> Panel:
    return build_panel(market.bars, build_features(market.bars))


def config(**overrides: object) -> WindowConfig:
    base: dict[str, object] = {"lookback": L, "horizon": H, "inputs": INPUTS, "train_end": TRAIN_END}
    return WindowConfig(**(base | overrides))  # type: ignore[arg-type]


def align(bars: pl.DataFrame, texts: pl.DataFrame, embeddings: pl.DataFrame) -> AlignedText:
    return align_texts_to_bars(bars, texts, embeddings, CAL, window=5, max_texts=4)


def test_batch_follows_the_contract(panel: Panel) -> None:
    dataset = WindowDataset(panel, config())
    batch = next(iter(DataLoader(dataset, batch_size=4, collate_fn=collate)))
    expected = {
        c.PAST: ((4, L, len(INPUTS)), torch.float32),
        c.PAST_MASK: ((4, L), torch.bool),
        c.FUTURE: ((4, H, 1), torch.float32),
        c.FUTURE_MASK: ((4, H), torch.bool),
        c.SYMBOL_INDEX: ((4,), torch.int64),
        c.ORIGIN_US: ((4,), torch.int64),
        c.SCALE_LOC: ((4, 1, 1), torch.float32),
        c.SCALE_SCALE: ((4, 1, 1), torch.float32),
    }
    assert {k: (tuple(v.shape), v.dtype) for k, v in batch.items()} == expected
    assert torch.isfinite(batch[c.PAST]).all() and batch[c.PAST_MASK].all() and batch[c.FUTURE_MASK].all()


def test_windows_stay_inside_one_symbol_and_hold_its_values(panel: Panel) -> None:
    dataset = WindowDataset(panel, config(inputs=("log_return",), normalize=False))
    assert len(dataset) == sum(len(ts) - L + 1 - H for ts in panel.ts)
    for item in (0, len(dataset) // 2, len(dataset) - 1, *range(220, 240)):
        s, i = dataset.index[item]
        values = panel.values[s][:, 0]
        assert L - 1 <= i < len(values) - H
        sample = dataset[item]
        assert int(sample[c.SYMBOL_INDEX]) == s and int(sample[c.ORIGIN_US]) == panel.ts[s][i]
        np.testing.assert_allclose(sample[c.PAST][:, 0].numpy(), np.nan_to_num(values[i - L + 1 : i + 1]), atol=1e-6)
        np.testing.assert_allclose(sample[c.FUTURE][:, 0].numpy(), values[i + 1 : i + 1 + H], atol=1e-6)


def test_stride_spaces_the_decision_bars(panel: Panel) -> None:
    dataset = WindowDataset(panel, config(stride=3))
    for s in range(len(panel.symbols)):
        positions = dataset.index[dataset.index[:, 0] == s, 1]
        assert positions[0] == L - 1 and (np.diff(positions) == 3).all()
        assert positions[-1] + H < len(panel.ts[s]) <= positions[-1] + H + 3


def test_min_history_pads_on_the_left(panel: Panel) -> None:
    dataset = WindowDataset(panel, config(min_history=5))
    sample = dataset[0]
    assert dataset.index[0, 1] == 4
    assert sample[c.PAST_MASK].tolist() == [False] * (L - 5) + [True] * 5
    assert (sample[c.PAST][: L - 5] == 0).all()


def test_last_bars_are_kept_for_forecasting_with_a_partial_future(panel: Panel) -> None:
    dataset = WindowDataset(panel, config(require_future=False))
    last = dataset[int(np.flatnonzero(dataset.index[:, 0] == 0)[-1])]
    assert int(last[c.ORIGIN_US]) == panel.ts[0][-1]
    assert not last[c.FUTURE_MASK].any() and (last[c.FUTURE] == 0).all()


def test_normaliser_depends_only_on_the_training_span(market: SyntheticMarket, panel: Panel) -> None:
    train_end = datetime(2019, 8, 1, tzinfo=UTC)
    fitted = WindowDataset(panel, config()).normalizer
    bars_after, _ = perturb_after(market, train_end)
    refitted = WindowDataset(build_panel(bars_after, build_features(bars_after)), config()).normalizer
    assert fitted is not None and refitted is not None
    assert fitted.stats == refitted.stats and fitted.pooled == refitted.pooled
    bars_before, _ = perturb_after(market, datetime(2019, 6, 1, tzinfo=UTC))
    changed = WindowDataset(build_panel(bars_before, build_features(bars_before)), config()).normalizer
    assert changed is not None and changed.stats != fitted.stats


def test_training_windows_are_standardised_and_split_reuses_the_normaliser(panel: Panel) -> None:
    dataset = WindowDataset(panel, config(inputs=("log_return",)))
    train = dataset.split(end=TRAIN_END)
    test = dataset.split(start=TRAIN_END)
    assert len(train) + len(test) == len(dataset) and train.normalizer is test.normalizer is dataset.normalizer
    assert (test.origins_us >= to_us(pl.Series([datetime(2019, 8, 1, tzinfo=UTC)]))[0]).all()
    s = 0
    raw = panel.values[s][:, 0]
    span = raw[(panel.ts[s] < test.origins_us.min()) & np.isfinite(raw)]
    sample = train[10]
    np.testing.assert_allclose(float(sample[c.SCALE_LOC].squeeze()), span.mean(), rtol=1e-5)
    np.testing.assert_allclose(float(sample[c.SCALE_SCALE].squeeze()), span.std(ddof=1), rtol=1e-5)


def test_missing_train_end_is_an_error(panel: Panel) -> None:
    with pytest.raises(FinfusionError, match="train_end"):
        WindowDataset(panel, config(train_end=None))
    with pytest.raises(FinfusionError, match="lacks column"):
        WindowDataset(panel, config(inputs=("nope",)))


def test_point_in_time_samples_ignore_data_after_t(market: SyntheticMarket, panel: Panel) -> None:
    t = datetime(2019, 10, 1, 20, tzinfo=UTC)
    texts, embeddings = texts_with_embeddings(market.texts)
    before = TextWindowDataset(WindowDataset(panel, config()), align(market.bars, texts, embeddings))
    bars2, texts2 = perturb_after(market, t)
    texts2, embeddings2 = texts_with_embeddings(texts2)
    after = TextWindowDataset(
        WindowDataset(build_panel(bars2, build_features(bars2)), config()), align(bars2, texts2, embeddings2)
    )
    t_us = to_us(pl.Series([t]))[0]
    origins = before.windows.origins_us
    assert np.array_equal(origins, after.windows.origins_us)
    keys = (c.PAST, c.PAST_MASK, c.TEXT_EMB, c.TEXT_MASK, c.SCALE_LOC, c.SCALE_SCALE)
    known = np.flatnonzero(origins <= t_us)
    assert len(known) > 100
    for item in known:
        a, b = before[int(item)], after[int(item)]
        for key in keys:
            assert torch.equal(a[key], b[key]), (item, key)
    later = [int(i) for i in np.flatnonzero(origins > t_us)]
    assert any(not torch.equal(before[i][c.PAST], after[i][c.PAST]) for i in later)
    assert any(not torch.equal(before[i][c.TEXT_EMB], after[i][c.TEXT_EMB]) for i in later)


def test_text_inputs_are_published_before_the_decision_close(market: SyntheticMarket, panel: Panel) -> None:
    texts, embeddings = texts_with_embeddings(market.texts)
    dataset = TextWindowDataset(WindowDataset(panel, config()), align(market.bars, texts, embeddings))
    seen = 0
    for item in range(0, len(dataset), 3):
        sample = dataset[item]
        mask = sample[c.TEXT_MASK]
        assert sample[c.TEXT_EMB].shape == (4, 2) and sample[c.TEXT_EMB].dtype == torch.float32
        assert (sample[c.TEXT_EMB][~mask] == 0).all()
        emb = sample[c.TEXT_EMB][mask].to(torch.int64)
        published_us = (emb[:, 0] * 86_400 + emb[:, 1]) * 1_000_000
        assert (published_us < sample[c.ORIGIN_US]).all()
        assert torch.equal(published_us, published_us.sort().values)
        seen += int(mask.sum())
    assert seen > 50
    symbol_texts = texts.filter(pl.col("symbols").list.contains(panel.symbols[0]))
    published = to_us(symbol_texts["published_at"])
    for item in np.flatnonzero(dataset.windows.index[:, 0] == 0)[::10]:
        sample = dataset[int(item)]
        origin = int(sample[c.ORIGIN_US])
        previous_close = panel.ts[0][dataset.windows.index[item, 1] - 1]
        recent = int(((published >= previous_close) & (published < origin)).sum())
        assert int(sample[c.TEXT_MASK].sum()) >= min(recent, 4)


def test_dead_band_labels_on_hand_cases() -> None:
    moves = np.array([0.006, 0.0055, 0.001, 0.0, -0.005, -0.0051, -0.2, np.nan])
    assert movement_labels(moves, 0.0055, 0.005).tolist() == [1, -1, -1, -1, -1, 0, 0, c.IGNORE_LABEL]
    assert movement_labels(np.array([0.01, -0.01]), 0.02, 0.0).tolist() == [-1, 0]


def test_movement_dataset_labels_the_next_moves(panel: Panel) -> None:
    windows = WindowDataset(panel, config())
    dataset = MovementDataset(windows, MovementConfig(horizon=2, up_threshold=0.01, down_threshold=0.004))
    assert set(np.unique(dataset.labels)) == {-1, 0, 1}
    for item in range(0, len(dataset), 37):
        s, i = windows.index[item]
        move = np.expm1(panel.values[s][i + 1 : i + 3, 0].sum())
        expected = 1 if move > 0.01 else 0 if move < -0.004 else -1
        sample = dataset[item]
        assert int(sample[c.LABEL]) == expected and sample[c.LABEL].dtype == torch.int64
        assert torch.equal(sample[c.PAST], windows[item][c.PAST])
    kept = dataset.without_ignored()
    assert len(kept) == int((dataset.labels != -1).sum()) and (kept.labels != -1).all()
    assert len(dataset.split(start=TRAIN_END)) == len(windows.split(start=TRAIN_END))
    with pytest.raises(FinfusionError, match="exceeds"):
        MovementDataset(windows, MovementConfig(horizon=H + 1))
