"""Text-to-bar alignment: which bar each text lands on, windows, truncation, NO_NEWS, coverage, point-in-time."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import polars as pl
import pytest

from finfusion.data.calendar import from_us, get_calendar, to_us
from finfusion.data.sources.synthetic import SyntheticConfig, generate_market
from finfusion.errors import FinfusionError
from finfusion.features.align import AlignedText, align_texts_to_bars
from finfusion.features.text import with_text_hash

NY = ZoneInfo("America/New_York")
CAL = get_calendar("XNYS")
D = 8
#: XNYS sessions around Thanksgiving 2014: Thu 27th closed, Fri 28th a half day (13:00 close).
SESSIONS = ["2014-11-24", "2014-11-25", "2014-11-26", "2014-11-28", "2014-12-01"]


def ny(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=NY)


def session_close(day: str) -> datetime:
    idx, is_session = CAL.session_index_of_dates(np.array([day], dtype="datetime64[D]"))
    assert is_session[0]
    return from_us(CAL.closes[idx], "ts")[0]


def daily_bars(symbols: list[str]) -> pl.DataFrame:
    closes = [session_close(day) for day in SESSIONS]
    return pl.DataFrame(
        {"symbol": [s for s in symbols for _ in closes], "ts": closes * len(symbols)},
        schema={"symbol": pl.String, "ts": pl.Datetime("us", "UTC")},
    )


def text_frame(rows: list[tuple[str, datetime, list[str]]]) -> pl.DataFrame:
    """Texts [id, published_at, symbols, title, body, text_hash]; the body is the id, so every hash differs."""
    frame = pl.DataFrame(
        {
            "id": [r[0] for r in rows],
            "published_at": [r[1] for r in rows],
            "symbols": [r[2] for r in rows],
            "title": [None] * len(rows),
            "body": [r[0] for r in rows],
        },
        schema={
            "id": pl.String, "published_at": pl.Datetime("us", "UTC"), "symbols": pl.List(pl.String),
            "title": pl.String, "body": pl.String,
        },
    )  # fmt: skip
    return with_text_hash(frame).drop("document")


def random_embeddings(texts: pl.DataFrame, seed: int = 0) -> pl.DataFrame:
    """A vector [D] per distinct hash, derived from the hash itself (so the same text always gets the same one)."""
    hashes = texts["text_hash"].unique().sort().to_list()
    vectors = [np.random.default_rng(int(h[:12], 16) + seed).normal(size=D).astype(np.float32) for h in hashes]
    return pl.DataFrame({"text_hash": hashes, "vector": [v.tolist() for v in vectors]}).with_columns(
        pl.col("vector").cast(pl.List(pl.Float32))
    )


GOLDEN = [
    ("before_open", ny("2014-11-25 08:00"), ["AAA"]),
    ("during", ny("2014-11-25 11:00"), ["AAA", "BBB"]),
    ("after_close", ny("2014-11-25 17:00"), ["AAA"]),
    ("at_close", ny("2014-11-26 16:00"), ["AAA"]),
    ("holiday", ny("2014-11-27 12:00"), ["AAA", "ZZZ"]),
    ("half_day_after_close", ny("2014-11-28 14:00"), ["AAA"]),
    ("weekend", ny("2014-11-29 10:00"), ["BBB"]),
]


def golden(window: int | timedelta = 1, max_texts: int = 4, **kwargs: object) -> tuple[AlignedText, pl.DataFrame]:
    texts = text_frame(GOLDEN)
    aligned = align_texts_to_bars(
        daily_bars(["AAA", "BBB"]), texts, random_embeddings(texts), CAL, window=window, max_texts=max_texts, **kwargs
    )
    return aligned, texts


def ids_by_bar(aligned: AlignedText, symbol: str) -> dict[str, list[str]]:
    frame = aligned.ids.filter(pl.col("symbol") == symbol)
    days = frame["ts"].dt.convert_time_zone("America/New_York").dt.date().cast(pl.String).to_list()
    return dict(zip(days, frame["ids"].to_list(), strict=True))


def test_golden_cases_land_on_the_first_actionable_session() -> None:
    aligned, _ = golden()
    assert ids_by_bar(aligned, "AAA") == {
        "2014-11-24": [],
        "2014-11-25": ["before_open", "during"],
        "2014-11-26": ["after_close"],
        "2014-11-28": ["at_close", "holiday"],
        "2014-12-01": ["half_day_after_close"],
    }
    assert ids_by_bar(aligned, "BBB") == {
        "2014-11-24": [],
        "2014-11-25": ["during"],
        "2014-11-26": [],
        "2014-11-28": [],
        "2014-12-01": ["weekend"],
    }


def test_golden_bars_agree_with_first_actionable_session() -> None:
    aligned, texts = golden()
    sessions = CAL.first_actionable_session(to_us(texts["published_at"]))
    expected = dict(zip(texts["id"], CAL.closes[sessions].tolist(), strict=True))
    for row in aligned.ids.filter(pl.col("symbol") == "AAA").iter_rows(named=True):
        bar_us = int(to_us(pl.Series([row["ts"]]))[0])
        assert all(expected[text_id] == bar_us for text_id in row["ids"])


def test_session_window_and_time_window() -> None:
    two_sessions, _ = golden(window=2)
    assert ids_by_bar(two_sessions, "AAA")["2014-11-26"] == ["before_open", "during", "after_close"]
    assert ids_by_bar(two_sessions, "AAA")["2014-12-01"] == ["at_close", "holiday", "half_day_after_close"]
    day, _ = golden(window=timedelta(hours=24))
    # Wed close 16:00 ET: the last 24 hours start Tue 16:00 ET, so Tuesday's session texts are out.
    assert ids_by_bar(day, "AAA")["2014-11-26"] == ["after_close"]
    # Mon Dec 1 close: from Sun 16:00 ET; the half-day text of Friday is older than that.
    assert ids_by_bar(day, "AAA")["2014-12-01"] == []


def test_max_texts_keeps_the_most_recent_oldest_first() -> None:
    aligned, texts = golden(window=2, max_texts=2)
    row = aligned.ids["ids"].to_list().index(["before_open", "during", "after_close"])
    assert aligned.ids["n_texts"][row] == 3
    assert aligned.mask[row].tolist() == [True, True]
    embeddings = random_embeddings(texts)
    by_id = dict(zip(texts["id"], texts["text_hash"], strict=True))
    vectors = {h: np.asarray(v, dtype=np.float32) for h, v in embeddings.iter_rows()}
    padded = aligned.padded()
    assert padded.shape == (10, 2, D)
    np.testing.assert_array_equal(padded[row, 0], vectors[by_id["during"]])
    np.testing.assert_array_equal(padded[row, 1], vectors[by_id["after_close"]])
    expected_mean = np.mean([vectors[by_id[i]] for i in ("before_open", "during", "after_close")], axis=0)
    np.testing.assert_allclose(aligned.mean[row], expected_mean, rtol=1e-6, atol=1e-6)


def test_no_news_bars_are_flagged_zero_and_fully_masked() -> None:
    aligned, _ = golden(max_texts=3)
    frame = aligned.ids.with_row_index("row")
    empty = frame.filter(pl.col("n_texts") == 0)["row"].to_numpy()
    assert len(empty) == 4  # AAA on the 24th; BBB on the 24th, 26th and 28th
    assert aligned.no_news[empty].all() and not aligned.no_news[frame.filter(pl.col("n_texts") > 0)["row"]].any()
    assert not aligned.mean[empty].any() and not aligned.mask[empty].any()
    assert (aligned.index[empty] == -1).all()
    one = frame.filter(pl.col("n_texts") == 1)["row"][0]
    assert aligned.mask[one].tolist() == [True, False, False]
    assert not aligned.padded()[one, 1:].any()


def test_coverage_is_the_universe_symbols_mentioned_in_the_window() -> None:
    aligned, _ = golden(window=5)
    assert aligned.universe == ("AAA", "BBB")
    coverage = {
        (r["symbol"], str(r["ts"].astimezone(NY).date())): tuple(aligned.coverage[i].tolist())
        for i, r in enumerate(aligned.ids.iter_rows(named=True))
    }
    assert coverage[("AAA", "2014-11-24")] == (False, False)
    assert coverage[("AAA", "2014-11-25")] == (True, True)  # "during" also mentions BBB; ZZZ is outside the universe
    assert coverage[("BBB", "2014-11-25")] == (True, True)
    assert coverage[("BBB", "2014-12-01")] == (True, True)
    wide, _ = golden(window=1, universe=["ZZZ", "AAA"])
    assert wide.coverage.shape == (10, 2)
    assert wide.coverage[3].tolist() == [True, True]  # AAA's half day: "holiday" mentions ZZZ


def test_market_scope_sees_every_text() -> None:
    aligned, _ = golden(scope="market")
    assert ids_by_bar(aligned, "BBB") == ids_by_bar(aligned, "AAA")
    assert ids_by_bar(aligned, "AAA")["2014-12-01"] == ["half_day_after_close", "weekend"]


def test_intraday_text_at_a_bar_end_counts_from_the_next_bar() -> None:
    open_ = ny("2014-11-25 09:30")
    ends = [open_ + timedelta(minutes=30 * k) for k in range(1, 4)]
    bars = pl.DataFrame(
        {"symbol": ["AAA"] * 3, "ts": ends}, schema={"symbol": pl.String, "ts": pl.Datetime("us", "UTC")}
    )
    texts = text_frame([("overnight", ny("2014-11-24 20:00"), ["AAA"]), ("on_the_edge", ends[0], ["AAA"])])
    aligned = align_texts_to_bars(bars, texts, random_embeddings(texts), CAL, window=1, max_texts=4)
    assert aligned.ids["ids"].to_list() == [["overnight"], ["overnight", "on_the_edge"], ["overnight", "on_the_edge"]]


def test_tensors_follow_the_sample_contract() -> None:
    aligned, _ = golden(max_texts=3)
    batch = aligned.tensors(np.array([1, 3]))
    assert batch["text_emb"].shape == (2, 3, D) and batch["text_mask"].shape == (2, 3)
    assert batch["text_mean"].shape == (2, D) and batch["coverage"].shape == (2, 2)
    assert batch["no_news"].tolist() == [False, False]
    assert batch["text_mask"].sum().item() == 4


def test_missing_embedding_and_bad_arguments_are_clear_errors() -> None:
    texts = text_frame(GOLDEN)
    bars = daily_bars(["AAA"])
    with pytest.raises(FinfusionError, match="no embedding"):
        align_texts_to_bars(bars, texts, random_embeddings(texts).head(3), CAL, window=1, max_texts=2)
    with pytest.raises(FinfusionError, match="window"):
        align_texts_to_bars(bars, texts, random_embeddings(texts), CAL, window=0, max_texts=2)
    with pytest.raises(FinfusionError, match="text_hash"):
        align_texts_to_bars(bars, texts.drop("text_hash"), random_embeddings(texts), CAL, window=1, max_texts=2)


# ---------------------------------------------------------------------------------------------- point in time


def market_texts(seed: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Synthetic bars and texts; every third text also mentions another symbol (so coverage has co-mentions)."""
    market = generate_market(SyntheticConfig(n_symbols=6, start="2019-01-01", end="2019-06-30", seed=seed))
    texts = market.texts
    universe = sorted(set(market.bars["symbol"].to_list()))
    extra = [universe[i % len(universe)] for i in range(texts.height)]
    symbols = [
        [*own, other] if i % 3 == 0 and other not in own else own
        for i, (own, other) in enumerate(zip(texts["symbols"].to_list(), extra, strict=True))
    ]
    texts = texts.with_columns(pl.Series("symbols", symbols, dtype=pl.List(pl.String)))
    return market.bars.select("symbol", "ts"), with_text_hash(texts).drop("document")


def perturb_from(texts: pl.DataFrame, t: datetime, rng: np.random.Generator) -> pl.DataFrame:
    """Texts at or after `t` rewritten (new bodies, dates moved later, some dropped) plus new texts from `t` on."""
    late = pl.col("published_at") >= t
    changed = texts.filter(late).with_columns(
        body=pl.col("body") + " (updated)", published_at=pl.col("published_at") + timedelta(hours=3)
    )
    changed = changed.filter(pl.Series(rng.random(changed.height) > 0.3))
    symbols = sorted({s for row in texts["symbols"].to_list() for s in row})
    new = pl.DataFrame(
        {
            "id": [f"new{i}" for i in range(40)],
            "published_at": [t + timedelta(minutes=int(m)) for m in [0, *rng.integers(0, 60 * 24 * 40, 39)]],
            "symbols": [list(rng.choice(symbols, size=2, replace=False)) for _ in range(40)],
            "title": [f"fresh news {i}" for i in range(40)],
            "body": ["late body"] * 40,
        }
    )
    frames = [texts.filter(~late).drop("text_hash"), changed.drop("text_hash"), new]
    return with_text_hash(pl.concat(frames, how="diagonal_relaxed")).drop("document")


@pytest.mark.parametrize(("window", "scope"), [(1, "symbol"), (5, "symbol"), (timedelta(days=3), "market")])
def test_nothing_at_or_before_t_changes_when_texts_after_t_change(window: int | timedelta, scope: str) -> None:
    bars, texts = market_texts(seed=3)
    rng = np.random.default_rng(11)
    for t in bars["ts"].unique().sort().gather([20, 60, 100]).to_list():
        before = align_texts_to_bars(
            bars, texts, random_embeddings(texts), CAL, window=window, max_texts=3, scope=scope
        )
        perturbed = perturb_from(texts, t, rng)
        after = align_texts_to_bars(
            bars, perturbed, random_embeddings(perturbed), CAL, window=window, max_texts=3, scope=scope
        )
        upto = (bars["ts"] <= t).to_numpy()
        assert upto.sum() > 0 and (~upto).sum() > 0
        assert before.ids.filter(pl.Series(upto)).equals(after.ids.filter(pl.Series(upto)))
        for name in ("index", "mask", "mean", "no_news", "coverage"):
            np.testing.assert_array_equal(getattr(before, name)[upto], getattr(after, name)[upto], err_msg=name)
        np.testing.assert_array_equal(before.padded()[upto], after.padded()[upto])
        later = ~upto
        assert not before.ids.filter(pl.Series(later)).equals(after.ids.filter(pl.Series(later)))
