"""Tests of the seeded synthetic multimodal market (finfusion.data.sources.synthetic)."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import numpy as np
import polars as pl
import pytest

from finfusion.data.calendar import get_calendar, parse_freq, to_us
from finfusion.data.schema import BARS, EVENTS, TEXT
from finfusion.data.sources.synthetic import (
    NOISE,
    TEMPLATES,
    SyntheticConfig,
    SyntheticMarket,
    apply_news_effects,
    build_grid,
    calendar_for,
    draw_news,
    effect_start_sessions,
    generate_market,
    simulate_paths,
)
from finfusion.errors import FinfusionError

SMALL = SyntheticConfig(n_symbols=5, start="2019-01-01", end="2019-12-31", seed=7)


@pytest.fixture(scope="module")
def small() -> SyntheticMarket:
    return generate_market(SMALL)


def _session_closes(config: SyntheticConfig) -> np.ndarray:
    cal = get_calendar(config.calendar)
    dates = cal.sessions
    in_range = (dates >= np.datetime64(config.start, "D")) & (dates <= np.datetime64(config.end, "D"))
    return cal.closes[in_range]


def _adj_close_matrix(market: SyntheticMarket) -> tuple[list[str], np.ndarray]:
    """[S, T] adj_close on the calendar's sessions of the config range (requires no missing bars)."""
    wide = market.bars.pivot(on="symbol", index="ts", values="adj_close").sort("ts")
    assert np.array_equal(to_us(wide["ts"]), _session_closes(market.config))
    symbols = [c for c in wide.columns if c != "ts"]
    return symbols, wide.select(symbols).to_numpy().T


def test_deterministic_given_seed(small: SyntheticMarket) -> None:
    again = generate_market(SMALL)
    assert again.bars.equals(small.bars)
    assert again.texts.equals(small.texts)
    assert again.events.equals(small.events)
    other = generate_market(replace(SMALL, seed=8))
    assert not other.bars.equals(small.bars)
    assert not other.texts.equals(small.texts)


def test_frames_conform_to_schemas(small: SyntheticMarket) -> None:
    for schema, frame in ((BARS, small.bars), (TEXT, small.texts), (EVENTS, small.events)):
        conformed = schema.conform(frame)
        assert frame.height > 0
        for col in schema.columns:
            if col.required and not col.nullable:
                assert conformed[col.name].null_count() == 0, (schema.kind, col.name)
    assert small.bars.columns == [
        "symbol",
        "ts",
        "open",
        "high",
        "low",
        "close",
        "volume",
        "adj_close",
        "adj_factor",
    ]
    assert small.bars.select(pl.all().null_count()).sum_horizontal().item() == 0
    assert small.texts["source"].unique().to_list() == ["synthetic"]
    assert small.texts["url"].null_count() == small.texts.height
    assert (small.texts["symbols"].list.len() == 1).all()
    assert small.texts["id"].n_unique() == small.texts.height
    assert small.bars.select(pl.struct("symbol", "ts").is_unique().all()).item()


def test_ohlc_consistent_and_positive(small: SyntheticMarket) -> None:
    bars = small.bars
    assert (bars["low"] > 0).all()
    assert (bars["volume"] > 0).all()
    assert bars.select((pl.col("high") >= pl.max_horizontal("open", "close")).all()).item()
    assert bars.select((pl.col("low") <= pl.min_horizontal("open", "close")).all()).item()
    assert bars.select((pl.col("high") > pl.col("low")).all()).item()
    assert np.allclose(bars["adj_close"], bars["close"] * bars["adj_factor"])


def test_daily_ts_are_session_closes() -> None:
    config = replace(SMALL, missing_bar_prob=0.0)
    market = generate_market(config)
    closes = _session_closes(config)
    assert len(closes) == 252  # 2019 had 252 XNYS sessions
    for _, group in market.bars.group_by("symbol"):
        assert np.array_equal(to_us(group["ts"]), closes)
    assert market.bars["symbol"].n_unique() == config.n_symbols


def test_intraday_bars_inside_sessions_half_day_included() -> None:
    config = SyntheticConfig(n_symbols=3, start="2019-11-25", end="2019-12-03", freq="5m", missing_bar_prob=0.0)
    market = generate_market(config)
    cal = get_calendar("XNYS")
    closes = _session_closes(config)
    first_open = int(cal.opens[np.searchsorted(cal.closes, closes[0])])
    expected = cal.expected_bar_ends(parse_freq("5m"), first_open, int(closes[-1]))
    ts = to_us(market.bars.filter(pl.col("symbol") == market.bars["symbol"][0])["ts"])
    assert np.array_equal(ts, expected)
    session, inside = cal.session_of_bar_end(to_us(market.bars["ts"]))
    assert inside.all()
    assert set(cal.closes[np.unique(session)]) <= set(ts)  # every session's last bar ends at its close
    half_day = np.datetime64("2019-11-29")  # day after Thanksgiving closes at 13:00 ET
    half_idx = int(np.searchsorted(cal.sessions, half_day))
    assert cal.closes[half_idx] - cal.opens[half_idx] == 210 * 60_000_000
    assert int(np.sum(session == half_idx)) == 3 * 42


def test_splits_recorded_and_adj_close_continuous() -> None:
    config = SyntheticConfig(n_symbols=6, start="2019-01-01", end="2019-12-31", split_prob=0.02, missing_bar_prob=0.0)
    bars = generate_market(config).bars.sort("symbol", "ts")
    lagged = bars.with_columns(
        raw=(pl.col("close") / pl.col("close").shift(1)).log().over("symbol"),
        adj=(pl.col("adj_close") / pl.col("adj_close").shift(1)).log().over("symbol"),
        ratio=(pl.col("adj_factor") / pl.col("adj_factor").shift(1)).over("symbol"),
    ).drop_nulls("ratio")
    splits = lagged.filter(pl.col("ratio") > 1.0 + 1e-9)
    assert splits.height >= 5
    assert set(np.round(splits["ratio"].to_numpy(), 9)) == {2.0, 3.0}
    assert ((splits["raw"] + np.log(splits["ratio"])).abs() < 0.3).all()  # raw close drops by the ratio
    assert (splits["adj"].abs() < 0.3).all()
    assert splits["adj"].abs().mean() < 0.2 * splits["raw"].abs().mean()
    last = bars.group_by("symbol").agg(pl.col("adj_factor").last())
    assert (last["adj_factor"] == 1.0).all()


def test_missing_bars_leave_gaps() -> None:
    market = generate_market(replace(SMALL, missing_bar_prob=0.05))
    counts = market.bars.group_by("symbol").len()["len"]
    assert (counts < 252).all()
    assert counts.sum() > 0.9 * 252 * SMALL.n_symbols
    full = generate_market(replace(SMALL, missing_bar_prob=0.0)).bars.group_by("symbol").len()["len"]
    assert (full == 252).all()


def test_texts_wording_ids_and_universe(small: SyntheticMarket) -> None:
    texts, events = small.texts, small.events
    symbols = small.bars["symbol"].unique()
    assert symbols.str.contains(r"^[A-Z]{4}$").all() and symbols.n_unique() == SMALL.n_symbols
    row = texts.row(0, named=True)
    payload = f"{row['published_at'].isoformat()}|{row['symbols'][0]}|{row['title']}|{row['body']}|synthetic|"
    assert row["id"] == hashlib.sha256((payload + row["source_ref"]).encode()).hexdigest()[:32]
    assert texts["source_ref"].str.starts_with(f"synthetic:{SMALL.seed}:").all()
    mentions = texts.filter(pl.col("body").str.contains(pl.col("symbols").list.first(), literal=True))
    assert 0 < mentions.height < texts.height
    joined = texts.join(events, left_on="id", right_on="text_id", how="left")
    noise_titles = [t.split("{name} ")[1] for t in TEMPLATES[NOISE][0]]
    is_noise_title = pl.any_horizontal([pl.col("title").str.ends_with(t) for t in noise_titles])
    assert joined.filter(pl.col("effect_return").is_null()).select(is_noise_title.all()).item()
    assert not joined.filter(pl.col("effect_return").is_not_null()).select(is_noise_title.any()).item()
    pos = joined.filter(pl.col("effect_return") == SMALL.effect_large)["title"]
    neg = joined.filter(pl.col("effect_return") == -SMALL.effect_large)["title"]
    assert pos.str.contains("soars|surges|jumps|rockets").all()
    assert neg.str.contains("plunges|tumbles|sinks|crashes").all()
    assert set(np.round(events["effect_return"].abs().unique().to_numpy(), 9)) == {0.015, 0.04}


def test_events_follow_point_in_time_rule(small: SyntheticMarket) -> None:
    cal = get_calendar("XNYS")
    pub = to_us(small.events["published_at"])
    start = effect_start_sessions(cal, pub)
    assert np.array_equal(to_us(small.events["first_session_ts"]), cal.opens[start])
    assert (to_us(small.events["first_session_ts"]) > pub).all()
    idx = cal.first_actionable_session(pub)
    during = pub > cal.opens[idx]
    assert during.any() and (~during).any()
    assert np.array_equal(start[during], idx[during] + 1)
    all_pub = to_us(small.texts["published_at"])
    all_idx = cal.first_actionable_session(all_pub)
    intraday = all_pub > cal.opens[all_idx]
    assert 0.2 < intraday.mean() < 0.5  # (1 - after_close_share) / 2 of the items are published during a session
    off_days = small.texts.filter(pl.col("published_at").dt.weekday() >= 6)
    assert off_days.height > 0  # after-close items may land on weekends


def test_planted_effect_recoverable() -> None:
    config = SyntheticConfig(
        n_symbols=50, start="2017-01-01", end="2019-12-31", effect_large=0.06, missing_bar_prob=0.0, seed=3
    )
    market = generate_market(config)
    symbols, adj = _adj_close_matrix(market)
    log_adj = np.log(adj)
    cal = get_calendar("XNYS")
    first = int(np.searchsorted(cal.closes, _session_closes(config)[0]))
    texts = market.texts.join(market.events, left_on="id", right_on="text_id", how="left")
    start = effect_start_sessions(cal, to_us(texts["published_at"])) - first
    row = np.searchsorted(symbols, texts["symbols"].list.first().to_numpy())
    h = config.effect_horizon
    ok = (start >= 1) & (start + h - 1 < adj.shape[1])
    fwd = np.full(len(start), np.nan)
    fwd[ok] = log_adj[row[ok], start[ok] + h - 1] - log_adj[row[ok], start[ok] - 1]
    effect = texts["effect_return"].to_numpy()
    noise = np.isnan(effect) & ok
    diff = np.nanmean(fwd[effect > 0]) - np.nanmean(fwd[effect < 0])
    planted = effect[effect > 0].mean() - effect[effect < 0].mean()
    assert diff > 0.5 * planted
    assert abs(np.nanmean(fwd[noise])) < 0.1 * planted
    assert noise.sum() > 1000


def test_apply_news_effects_is_point_in_time() -> None:
    cal = get_calendar("XNYS")
    for freq in ("1d", "5m"):
        config = SyntheticConfig(n_symbols=2, start="2019-11-20", end="2019-12-10", freq=freq)
        grid = build_grid(cal, config)
        rng = np.random.default_rng(0)
        base = rng.standard_normal((2, grid.n_bars)) * 0.01
        other = (np.array([0]), np.array([1]), np.array([-0.02]))  # an unrelated item already in the plan
        instants = rng.integers(grid.opens_us[0] - 10**10, grid.closes_us[-6], size=40)
        instants[:3] = [grid.opens_us[2] - 10**9, grid.opens_us[3] + 10**9, grid.closes_us[4] + 10**9]
        for pub in instants:
            start = effect_start_sessions(cal, np.array([pub])) - grid.first_session
            without = apply_news_effects(base, grid.bar_session, grid.n_sessions, *other, 3)
            item = (np.array([1]), start, np.array([0.05]))
            added = [np.concatenate([o, n]) for o, n in zip(other, item, strict=True)]
            with_item = apply_news_effects(base, grid.bar_session, grid.n_sessions, *added, 3)
            known = grid.bar_ts <= pub
            assert np.array_equal(without[:, known], with_item[:, known])
            moved = ~np.isclose(without, with_item).all(axis=0)
            assert moved.any() and (grid.bar_ts[moved] > pub).all()
            assert np.isclose((with_item - without)[1].sum(), 0.05)
            assert np.array_equal(without[0], with_item[0])


def test_simulated_bars_before_publication_unchanged() -> None:
    config = replace(SMALL, freq="5m", start="2019-06-03", end="2019-06-21", news_rate=0.5, missing_bar_prob=0.0)
    cal = calendar_for(config)
    grid = build_grid(cal, config)
    plan = draw_news(config, cal, grid, np.random.default_rng(1))
    idx = cal.first_actionable_session(plan.published_us)
    during_session = plan.published_us > cal.opens[idx]
    victim = int(np.flatnonzero(plan.informative & during_session)[3])  # published intraday: the strictest case
    reduced = plan.take(np.arange(len(plan)) != victim)
    full = simulate_paths(config, grid, plan, np.random.default_rng(2))
    less = simulate_paths(config, grid, reduced, np.random.default_rng(2))
    known = grid.bar_ts <= plan.published_us[victim]
    for name in ("open", "high", "low", "close", "volume", "adj_factor"):
        assert np.array_equal(getattr(full, name)[:, known], getattr(less, name)[:, known]), name
    assert not np.allclose(full.close, less.close)


def test_invalid_config_rejected() -> None:
    with pytest.raises(FinfusionError, match="missing_bar_prob"):
        generate_market(replace(SMALL, missing_bar_prob=1.5))
    with pytest.raises(FinfusionError, match="effect_horizon"):
        generate_market(replace(SMALL, effect_horizon=0))
    with pytest.raises(FinfusionError):
        generate_market(replace(SMALL, freq="7x"))
    with pytest.raises(FinfusionError, match="no XNYS session"):
        generate_market(replace(SMALL, start="2019-12-28", end="2019-12-29"))
