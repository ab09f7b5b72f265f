"""The Brooks-style price-action tokenizer: golden sequences, mirror symmetry, point-in-time, and the CLI command."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from finfusion.commands.tokenize import app, parse_components
from finfusion.data.lake import Lake
from finfusion.data.schema import BARS, TOKENS
from finfusion.data.sources.synthetic import SyntheticConfig, generate_market
from finfusion.errors import FinfusionError
from finfusion.features.brooks import COMPONENTS, CORE_COMPONENTS, VALUES, BrooksConfig, compose_token, tokenize_bars
from finfusion.features.vocabulary import Vocabulary, vocabulary_path

Bar = tuple[float, float, float, float]

#: Mid prices with a known zigzag (k = 2): swing high at bar 3, low at 6, HH at 10, HL at 13, LH at 15, LL at 19,
#: and a double top at 23 (same high as bar 15).
ZIGZAG = [10, 11, 12, 13, 12, 11, 10.5, 11.5, 12.5, 13.5, 14, 13, 12, 11.8, 12.8, 13.2, 12.2, 11, 10, 9, 10, 11, 12]
ZIGZAG += [13.2, 12, 11]
#: Swing label at its confirmation bar (pivot bar + 2).
ZIGZAG_SWINGS = {5: "SH", 8: "SL", 12: "HH", 15: "HL", 17: "LH", 21: "LL", 25: "DT"}

#: 20 identical bars (ATR 1) then one bar of each shape, each judged against the bar before it.
FLAT: list[Bar] = [(10.2, 10.5, 9.5, 9.8)] * 20
SHAPES: list[tuple[Bar, str]] = [
    ((9.6, 11.5, 9.6, 11.4), "bull_large"),
    ((11.75, 11.8, 11.2, 11.25), "bear_small"),
    ((11.9, 12.3, 11.5, 11.95), "doji"),
    ((11.7, 12.2, 11.6, 12.1), "inside_bull"),
    ((12.4, 12.5, 11.0, 11.1), "outside_bear"),
    ((12.1, 13.0, 12.0, 12.9), "bull_medium"),
    ((12.5, 12.9, 12.1, 12.5), "inside_doji"),
    ((12.45, 12.9, 12.0, 12.5), "outside_doji"),  # equal high, lower low
    ((12.45, 12.9, 12.0, 12.5), "inside_doji"),  # identical to the bar before
    ((12.7, 12.8, 10.6, 10.7), "bear_large"),
]

#: A swing high at 12.5 (bar 2, confirmed at 4), a breakout close above it (5), a close back below within
#: three bars (7: failed), a new swing high 13.2 (bar 6, confirmed at 8), a bar that pokes above 13.2 but closes
#: below (9: failed at once), and a breakout above it (10).
BREAKOUTS: list[Bar] = [
    (10, 10.5, 9.5, 10.2),
    (10.2, 11.5, 10, 11.2),
    (11.2, 12.5, 11, 12),
    (12, 12.2, 10.8, 11),
    (11, 11.3, 10.2, 10.5),
    (10.5, 13.0, 10.4, 12.8),
    (12.8, 13.2, 12.3, 12.9),
    (12.9, 13.0, 12.0, 12.2),
    (12.2, 12.6, 11.8, 12.05),
    (12.05, 13.5, 11.9, 13.1),
    (13.1, 13.8, 13.0, 13.6),
]
BREAKOUT_EVENTS = {5: "bo_up", 7: "fbo_up", 9: "fbo_up", 10: "bo_up"}
BREAKOUT_SWINGS = {4: "SH", 6: "SL", 8: "HH", 10: "HL"}

#: A (low 9.5, bar 2) -> B (high 14.5, bar 6) -> C (low 11.5, bar 9, confirmed at 11): target 11.5 + 5 = 16.5.
MEASURED = [12, 11, 10, 11, 12, 13, 14, 13, 12.5, 12, 13, 14, 15, 16, 17]
#: A swing low (bar 2, low 7.5), a rally to 20.5 (bar 14), then a pullback.
PULLBACK = [10, 9, 8, *range(9, 21), 19, 15, 12, 13, 14]

MIRROR = {
    "up": "down", "bull": "bear", "SH": "SL", "HH": "LL", "LH": "HL", "DT": "DB", "high": "low",
}  # fmt: skip
MIRROR.update({v: k for k, v in MIRROR.items()})


def make_bars(
    rows: list[Bar], start: datetime = datetime(2024, 1, 1, 21, tzinfo=UTC), step: timedelta = timedelta(days=1)
) -> pl.DataFrame:
    """Bars of symbol AAA from (open, high, low, close) rows, `step` apart (by default one per day and session)."""
    return pl.DataFrame(
        {
            "symbol": ["AAA"] * len(rows),
            "ts": pl.Series([start + i * step for i in range(len(rows))], dtype=pl.Datetime("us", "UTC")),
            **{name: [float(r[i]) for r in rows] for i, name in enumerate(("open", "high", "low", "close"))},
        }
    )


def from_mids(mids: list[float]) -> list[Bar]:
    """A bar of range 1 around each mid price, closing 0.1 above it (a small-bodied bar)."""
    return [(m - 0.1, m + 0.5, m - 0.5, m + 0.1) for m in mids]


def column(tokens: pl.DataFrame, name: str) -> list[str]:
    return tokens[name].to_list()


def non_default(tokens: pl.DataFrame, name: str, default: str = "none") -> dict[int, str]:
    return {i: v for i, v in enumerate(column(tokens, name)) if v != default}


# ----------------------------------------------------------------------------------------------------------------
# Golden sequences
# ----------------------------------------------------------------------------------------------------------------


def test_swings_are_labelled_at_their_confirmation_bar() -> None:
    tokens = tokenize_bars(make_bars(from_mids(ZIGZAG)))
    assert non_default(tokens, "swing") == ZIGZAG_SWINGS


@pytest.mark.parametrize("k", [1, 2, 3])
def test_swing_confirmation_delay_is_k_bars(k: int) -> None:
    peak = [*range(10, 21), *range(19, 9, -1)]  # one pivot high at bar 10, nothing else
    tokens = tokenize_bars(make_bars(from_mids(peak)), BrooksConfig(swing_k=k))
    assert non_default(tokens, "swing") == {10 + k: "SH"}


def test_bar_shapes() -> None:
    tokens = tokenize_bars(make_bars(FLAT + [bar for bar, _ in SHAPES]))
    assert column(tokens, "bar")[len(FLAT) :] == [name for _, name in SHAPES]
    assert column(tokens, "bar")[1 : len(FLAT)] == ["inside_bear"] * (len(FLAT) - 1)


def test_breakouts_and_failed_breakouts() -> None:
    tokens = tokenize_bars(make_bars(BREAKOUTS))
    assert non_default(tokens, "event") == BREAKOUT_EVENTS
    assert non_default(tokens, "swing") == BREAKOUT_SWINGS


def test_a_breakout_with_follow_through_does_not_fail() -> None:
    rows = [*BREAKOUTS[:6], (12.8, 13.4, 12.7, 13.3), (13.3, 13.9, 13.2, 13.8), (13.8, 14.3, 13.7, 14.2)]
    assert non_default(tokenize_bars(make_bars(rows)), "event") == {5: "bo_up"}


def test_measured_move_pending_then_reached() -> None:
    tokens = tokenize_bars(make_bars(from_mids(MEASURED)))
    assert non_default(tokens, "swing") == {4: "SL", 8: "SH", 11: "HL"}
    assert non_default(tokens, "measured_move") == {
        11: "up_pending", 12: "up_pending", 13: "up_reached", 14: "up_reached",
    }  # fmt: skip


def test_measured_move_dies_when_price_closes_below_the_pullback_low() -> None:
    tokens = tokenize_bars(make_bars(from_mids([*MEASURED[:12], 11, 12])))
    assert non_default(tokens, "measured_move") == {11: "up_pending"}
    assert column(tokens, "event")[12] == "bo_down"  # the close below C (a confirmed swing low) breaks it


def test_pullback_depth_in_an_up_trend() -> None:
    tokens = tokenize_bars(make_bars(from_mids(PULLBACK)), BrooksConfig(ema_length=100, slope_bars=1))
    assert column(tokens, "trend")[4:] == ["up"] * (len(PULLBACK) - 4)
    # leg 7.5 -> 20.5 (13): closes 20.1, 19.1, 15.1, 12.1 retrace 0.03, 0.11, 0.42, 0.65 of it
    assert column(tokens, "pullback")[14:18] == ["none", "shallow", "medium", "deep"]


def test_trend_and_regime() -> None:
    rising = tokenize_bars(make_bars(from_mids([10 + i for i in range(30)])))
    assert set(column(rising, "trend")[3:]) == {"up"}
    assert column(rising, "context") == ["range"] * 20 + ["trend"] * 10  # the efficiency ratio needs 20 changes
    falling = tokenize_bars(make_bars(from_mids([50 - i for i in range(30)])))
    assert set(column(falling, "trend")[3:]) == {"down"}
    choppy = tokenize_bars(make_bars(from_mids([10 + (i % 2) for i in range(30)])))
    assert set(column(choppy, "context")) == {"range"}
    assert column(rising, "trend")[0] == "flat"


def test_magnet_prior_bar_high_on_daily_bars() -> None:
    rows = [*from_mids([10, 12, 14, 16, 18]), (18.0, 18.6, 17.6, 18.45)]  # closes 0.05 under the prior high 18.5
    assert column(tokenize_bars(make_bars(rows)), "magnet")[-1] == "prev_high"


def intraday_two_sessions() -> pl.DataFrame:
    """Six 30-minute bars on 2024-01-02 and two on 2024-01-03 (New York); the first session's high (11.5) comes
    from a wick on its second bar, and the next session closes 0.05 under it."""
    day1: list[Bar] = [(10, 10.5, 9.5, 10), (10, 11.5, 9.6, 10.1), *[(10.1, 10.4, 9.7, 10)] * 4]
    day2: list[Bar] = [(10.0, 11.0, 9.9, 10.9), (10.9, 11.6, 10.8, 11.45)]
    half_hour = timedelta(minutes=30)
    return pl.concat(
        [
            make_bars(day1, start=datetime(2024, 1, 2, 15, tzinfo=UTC), step=half_hour),
            make_bars(day2, start=datetime(2024, 1, 3, 15, tzinfo=UTC), step=half_hour),
        ]
    )


def test_magnet_prior_session_high_on_intraday_bars() -> None:
    bars = intraday_two_sessions()
    assert column(tokenize_bars(bars), "magnet")[-1] == "prev_high"
    # with every bar its own session the prior 'session' is the prior bar, whose high (11.0) is not near
    one_per_bar = bars.with_columns(pl.int_range(pl.len()).alias("session"))
    assert column(tokenize_bars(one_per_bar), "magnet")[-1] != "prev_high"


def test_token_is_the_joined_components() -> None:
    tokens = tokenize_bars(make_bars(BREAKOUTS))
    row = tokens.row(5, named=True)
    assert row["token"] == "trend=up|bar=bull_large|swing=none|context=range|event=bo_up"
    assert row["token"] == compose_token(row)
    full = tokenize_bars(make_bars(BREAKOUTS), BrooksConfig(token_components=COMPONENTS))
    assert full["token"][5] == compose_token(row, COMPONENTS)
    assert full["token"][5].count("|") == len(COMPONENTS) - 1


def test_every_value_is_in_the_grammar_and_the_frame_fits_the_tokens_schema(market_bars: pl.DataFrame) -> None:
    tokens = tokenize_bars(market_bars)
    assert tokens.columns == ["symbol", "ts", "token", *COMPONENTS]
    assert tokens.height == market_bars.height
    for name in COMPONENTS:
        assert set(tokens[name].unique()) <= set(VALUES[name]), name
    assert set(tokens["bar"].unique()) == set(VALUES["bar"])  # a year of five symbols shows every bar type
    assert TOKENS.conform(tokens).columns == tokens.columns


# ----------------------------------------------------------------------------------------------------------------
# Symmetry and scale
# ----------------------------------------------------------------------------------------------------------------


def mirrored(bars: pl.DataFrame) -> pl.DataFrame:
    """Prices reflected p -> 100 - p: highs become lows, bull bars bear bars."""
    return bars.with_columns(
        (100 - pl.col("open")).alias("open"),
        (100 - pl.col("low")).alias("high"),
        (100 - pl.col("high")).alias("low"),
        (100 - pl.col("close")).alias("close"),
    )


def mirror_value(value: str) -> str:
    return "_".join(MIRROR.get(part, part) for part in value.split("_"))


@pytest.mark.parametrize(
    "rows",
    [from_mids(ZIGZAG), FLAT + [b for b, _ in SHAPES], BREAKOUTS, from_mids(MEASURED), from_mids(PULLBACK)],
    ids=["zigzag", "shapes", "breakouts", "measured", "pullback"],
)
def test_mirrored_prices_give_mirrored_tokens(rows: list[Bar]) -> None:
    bars = make_bars(rows)
    tokens, reflected = tokenize_bars(bars), tokenize_bars(mirrored(bars))
    for name in COMPONENTS:
        assert column(reflected, name) == [mirror_value(v) for v in column(tokens, name)], name


def test_adjustment_by_a_constant_factor_changes_nothing(market_bars: pl.DataFrame) -> None:
    """A split after t rescales every adjusted price before it by one factor; the rules are scale-free."""
    halved = market_bars.with_columns(pl.lit(0.5).alias("adj_factor"))
    assert tokenize_bars(halved).equals(tokenize_bars(market_bars.drop("adj_factor")))


# ----------------------------------------------------------------------------------------------------------------
# Point in time: perturbing the bars after t changes nothing at or before t
# ----------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def market_bars() -> pl.DataFrame:
    return generate_market(SyntheticConfig(n_symbols=5, start="2019-01-01", end="2019-12-31", seed=3)).bars


@pytest.fixture(scope="module")
def intraday_bars() -> pl.DataFrame:
    config = SyntheticConfig(n_symbols=2, start="2019-03-01", end="2019-03-20", freq="30m", seed=4)
    return generate_market(config).bars


def perturbed_after(bars: pl.DataFrame, cutoff: datetime, seed: int) -> pl.DataFrame:
    """The same bars up to `cutoff`; after it, new random but consistent OHLC bars."""
    rng = np.random.default_rng(seed)
    n = bars.height
    open_ = bars["open"].to_numpy() * rng.uniform(0.7, 1.3, n)
    close = bars["close"].to_numpy() * rng.uniform(0.7, 1.3, n)
    high = np.maximum(open_, close) * rng.uniform(1.0, 1.05, n)
    low = np.minimum(open_, close) * rng.uniform(0.95, 1.0, n)
    after = pl.col("ts") > cutoff
    new = {"open": open_, "high": high, "low": low, "close": close}
    return bars.with_columns(pl.when(after).then(pl.Series(v)).otherwise(pl.col(c)).alias(c) for c, v in new.items())


def cutoffs(bars: pl.DataFrame, fractions: tuple[float, ...]) -> list[datetime]:
    instants = bars["ts"].unique().sort()
    return [instants[int(f * (len(instants) - 1))] for f in fractions]


@pytest.mark.parametrize("component", ["token", *COMPONENTS])
@pytest.mark.parametrize("fraction", [0.05, 0.3, 0.62, 0.9])
def test_point_in_time_daily(market_bars: pl.DataFrame, component: str, fraction: float) -> None:
    config = BrooksConfig(token_components=COMPONENTS)
    base = tokenize_bars(market_bars, config)
    (cutoff,) = cutoffs(market_bars, (fraction,))
    changed = tokenize_bars(perturbed_after(market_bars, cutoff, seed=int(fraction * 100)), config)
    known = pl.col("ts") <= cutoff
    assert changed.filter(known)[component].equals(base.filter(known)[component])
    assert not changed.filter(~known)["token"].equals(base.filter(~known)["token"])  # the perturbation bites
    truncated = tokenize_bars(market_bars.filter(known), config)
    assert truncated[component].equals(base.filter(known)[component])


@pytest.mark.parametrize("component", COMPONENTS)
def test_point_in_time_intraday(intraday_bars: pl.DataFrame, component: str) -> None:
    base = tokenize_bars(intraday_bars)
    for cutoff in cutoffs(intraday_bars, (0.2, 0.5, 0.77)):  # mid-session instants included
        changed = tokenize_bars(perturbed_after(intraday_bars, cutoff, seed=1))
        known = pl.col("ts") <= cutoff
        assert changed.filter(known)[component].equals(base.filter(known)[component]), cutoff


def test_point_in_time_one_symbol_does_not_leak_into_another(market_bars: pl.DataFrame) -> None:
    symbols = market_bars["symbol"].unique().sort()
    alone = tokenize_bars(market_bars.filter(pl.col("symbol") == symbols[0]))
    together = tokenize_bars(market_bars)
    assert together.filter(pl.col("symbol") == symbols[0]).equals(alone)


def test_swing_is_not_known_before_its_confirmation() -> None:
    """Cutting the zigzag just before each confirmation bar hides that swing entirely."""
    bars = make_bars(from_mids(ZIGZAG))
    for confirmed, label in ZIGZAG_SWINGS.items():
        seen = non_default(tokenize_bars(bars.head(confirmed)), "swing")
        assert confirmed not in seen and all(i < confirmed for i in seen)
        assert non_default(tokenize_bars(bars.head(confirmed + 1)), "swing")[confirmed] == label


# ----------------------------------------------------------------------------------------------------------------
# Input checks and the command line
# ----------------------------------------------------------------------------------------------------------------


def test_close_only_bars_are_refused() -> None:
    bars = make_bars(BREAKOUTS).drop("open", "high", "low")
    with pytest.raises(FinfusionError, match="open, high, low"):
        tokenize_bars(bars)


def test_missing_prices_are_refused_naming_the_bar() -> None:
    bars = make_bars(BREAKOUTS).with_columns(
        pl.when(pl.int_range(pl.len()) == 3).then(None).otherwise("high").alias("high")
    )
    with pytest.raises(FinfusionError, match="AAA at 2024-01-04"):
        tokenize_bars(bars)


@pytest.mark.parametrize(
    "change",
    [
        {"swing_k": 0},
        {"small_range_atr": 2.0},
        {"pullback_levels": (0.5, 0.2, 0.9)},
        {"token_components": ("bar", "x")},
    ],
)
def test_invalid_config_is_refused(change: dict[str, object]) -> None:
    with pytest.raises(FinfusionError, match="BrooksConfig"):
        tokenize_bars(make_bars(BREAKOUTS), replace(BrooksConfig(), **change))


def test_parse_components() -> None:
    assert parse_components("core") == CORE_COMPONENTS
    assert parse_components("all") == COMPONENTS
    assert parse_components("trend, magnet") == ("trend", "magnet")
    with pytest.raises(FinfusionError, match="nope"):
        parse_components("trend,nope")


def test_cli_writes_tokens_and_vocabulary(tmp_path: Path, market_bars: pl.DataFrame) -> None:
    lake = Lake(tmp_path / "lake")
    lake.write(BARS, "mkt", market_bars, freq="1d")
    args = ["brooks", "mkt", "--min-freq", "3", "--top", "5", "--lake", str(lake.root)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "entropy (bits)" in result.output and "most frequent tokens" in result.output
    stored = lake.read("tokens", "mkt_brooks", freq="1d")
    assert stored.sort("symbol", "ts").equals(tokenize_bars(market_bars).select(stored.columns))
    path = vocabulary_path(lake, "mkt_brooks", "1d")
    assert path == lake.root / "kind=tokens" / "dataset=mkt_brooks" / "freq=1d" / "_vocabulary.json"
    vocabulary = Vocabulary.from_json(path)
    assert vocabulary.min_freq == 3 and json.loads(path.read_text())["tokens"] == vocabulary.tokens
    assert vocabulary.itos == Vocabulary.build(stored["token"], min_freq=3).itos
    again = CliRunner().invoke(app, args)
    assert "0 files written" in again.output


def test_cli_reports_a_missing_dataset(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["brooks", "nothing", "--lake", str(tmp_path)])
    assert result.exit_code == 2
    assert "no bars dataset 'nothing'" in result.stderr


def test_cli_help_has_an_example() -> None:
    result = CliRunner().invoke(app, ["brooks", "--help"])
    assert result.exit_code == 0 and "finfusion tokenize brooks" in result.output
