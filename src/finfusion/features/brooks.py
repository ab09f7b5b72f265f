"""Brooks-style price-action tokenizer: every bar becomes a composite categorical token (grammar: docs/tokenizer.md).

`tokenize_bars` maps bars [N rows: symbol, ts, open, high, low, close] to tokens [N rows: symbol, ts, token, and one
String column per component of `COMPONENTS`]. It is vectorised with polars over the (symbol, ts)-sorted rows: every
shifted, rolling or cumulative expression runs per symbol (or per run of rows inside one symbol) in time order, so the
output at bar t uses only that symbol's bars at or before t. A swing pivot at bar i needs `swing_k` later bars to be
known: it is emitted at its confirmation bar i + swing_k, never at i, and every detector that uses swings (breakouts,
pullbacks, measured moves, magnets) sees a swing only from its confirmation bar on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields

import numpy as np
import polars as pl

from finfusion.errors import FinfusionError

COMPONENTS = ("trend", "bar", "swing", "context", "event", "pullback", "measured_move", "magnet")
#: The components joined into the composite token by default (the others are still stored as columns).
CORE_COMPONENTS = ("trend", "bar", "swing", "context", "event")
_BAR_VALUES = (
    "bull_small", "bull_medium", "bull_large", "bear_small", "bear_medium", "bear_large", "doji",
    "inside_bull", "inside_bear", "inside_doji", "outside_bull", "outside_bear", "outside_doji",
)  # fmt: skip
#: Every value each component can take, in documentation order.
VALUES: dict[str, tuple[str, ...]] = {
    "trend": ("up", "down", "flat"),
    "bar": _BAR_VALUES,
    "swing": ("none", "SH", "SL", "HH", "LH", "DT", "HL", "LL", "DB"),
    "context": ("trend", "range"),
    "event": ("none", "bo_up", "bo_down", "fbo_up", "fbo_down"),
    "pullback": ("none", "shallow", "medium", "deep"),
    "measured_move": ("none", "up_pending", "up_reached", "down_pending", "down_reached"),
    "magnet": ("none", "prev_high", "prev_low", "swing_high", "swing_low", "ema"),
}
PRICE_COLUMNS = ("open", "high", "low", "close")
#: Optional input column naming each bar's session; without it a session is the local date of `ts`.
SESSION_COLUMN = "session"
_G = "symbol"
_MAGNET_LEVELS = {"prev_high": "_prev_high", "prev_low": "_prev_low", "swing_high": "_sh", "swing_low": "_sl"}


@dataclass(frozen=True)
class BrooksConfig:
    """Thresholds of the detectors. ATR is the mean true range of the `atr_window` bars before the current one."""

    #: A bar whose body |close - open| is below this share of its range (high - low) is a doji (so is a flat bar).
    doji_body_ratio: float = 0.25
    #: Bars averaged in the ATR that sizes bars and measures double-top tolerance and magnet distance.
    atr_window: int = 20
    #: Trend bar sizes: range / ATR below `small_range_atr` is small, at or above `large_range_atr` is large.
    small_range_atr: float = 0.75
    large_range_atr: float = 1.5
    #: Swing pivot: the extreme bar beats the `swing_k` bars on each side; known (emitted) `swing_k` bars later.
    swing_k: int = 2
    #: A swing high (low) within this many ATRs of the previous one is a double top DT (double bottom DB).
    double_tolerance_atr: float = 0.1
    #: Span of the EMA of the close that sets the trend direction and is a magnet.
    ema_length: int = 20
    #: Trend up: close above the EMA and the EMA above its value `slope_bars` bars ago (down: mirrored).
    slope_bars: int = 3
    #: Regime: Kaufman efficiency ratio |close_t - close_{t-w}| / sum |close changes| over `range_window` bars
    #: (a range until the symbol has `range_window` + 1 bars).
    range_window: int = 20
    #: Efficiency ratio below this is a trading range, at or above it a trend.
    range_efficiency: float = 0.3
    #: A breakout whose close falls back beyond its level within this many bars is a failed breakout.
    failed_breakout_bars: int = 3
    #: Pullback depth (share of the leg retraced) at or above each level: shallow, medium, deep (below: none).
    pullback_levels: tuple[float, float, float] = (0.1, 0.382, 0.618)
    #: A magnet is a level within this many ATRs of the close.
    magnet_atr: float = 0.25
    #: Sessions are the local dates of `ts` in this zone (unless the bars carry a `session` column).
    session_tz: str = "America/New_York"
    #: Multiply open/high/low/close by `adj_factor` when present (split-continuous prices; the rules are scale-free).
    adjust: bool = True
    #: Components joined (in this order) into the composite token.
    token_components: tuple[str, ...] = CORE_COMPONENTS

    def validate(self) -> None:
        """Raise FinfusionError naming the first invalid field."""
        for name in ("atr_window", "swing_k", "ema_length", "slope_bars", "range_window", "failed_breakout_bars"):
            if getattr(self, name) < 1:
                raise FinfusionError(f"BrooksConfig.{name} must be at least 1")
        for name in ("small_range_atr", "double_tolerance_atr", "magnet_atr", "range_efficiency"):
            if getattr(self, name) < 0:
                raise FinfusionError(f"BrooksConfig.{name} must not be negative")
        if not 0 <= self.doji_body_ratio < 1:
            raise FinfusionError("BrooksConfig.doji_body_ratio must be in [0, 1)")
        if not self.small_range_atr < self.large_range_atr:
            raise FinfusionError("BrooksConfig.small_range_atr must be below large_range_atr")
        levels = self.pullback_levels
        if len(levels) != 3 or not 0 <= levels[0] < levels[1] < levels[2]:
            raise FinfusionError(
                "BrooksConfig.pullback_levels must be three increasing shares, e.g. (0.1, 0.382, 0.618)"
            )
        names = self.token_components
        if not names or len(set(names)) != len(names) or not set(names) <= set(COMPONENTS):
            raise FinfusionError(f"BrooksConfig.token_components must be distinct names among {', '.join(COMPONENTS)}")

    def as_dict(self) -> dict[str, object]:
        """The fields as JSON values (tuples as lists)."""
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}


def tokenize_bars(bars: pl.DataFrame, config: BrooksConfig = BrooksConfig()) -> pl.DataFrame:
    """Tokens of every bar: [N rows] symbol, ts, token, then the COMPONENTS columns (all String but ts), sorted by
    (symbol, ts). `bars` needs symbol, ts, open, high, low and close; `adj_factor` and `session` are optional."""
    config.validate()
    frame = _with_previous_session(_prepare(bars, config))
    for stage in _STAGES:
        frame = frame.with_columns(stage(config))
    parts: list[pl.Expr] = []
    for i, name in enumerate(config.token_components):
        parts += [pl.lit(("|" if i else "") + f"{name}="), pl.col(name)]
    return frame.select(_G, "ts", pl.concat_str(parts).alias("token"), *COMPONENTS)


def _plain(value: object) -> object:
    return list(value) if isinstance(value, tuple) else value


def compose_token(components: dict[str, str], names: tuple[str, ...] = CORE_COMPONENTS) -> str:
    """The composite token of one bar, e.g. 'trend=up|bar=bull_large|swing=HL|context=range|event=none'."""
    return "|".join(f"{name}={components[name]}" for name in names)


# ----------------------------------------------------------------------------------------------------------------
# Preparation: sorted, adjusted prices, bar index per symbol, sessions
# ----------------------------------------------------------------------------------------------------------------


def _prepare(bars: pl.DataFrame, config: BrooksConfig) -> pl.DataFrame:
    """[N] symbol, ts, open, high, low, close (adjusted, Float64), _pos (0-based bar index within the symbol) and
    _session_id (1-based global id of each (symbol, session) run), sorted by (symbol, ts)."""
    missing = [c for c in (_G, "ts", *PRICE_COLUMNS) if c not in bars.columns]
    if missing:
        raise FinfusionError(f"bars need {', '.join(missing)} to be tokenized (close-only data cannot be)")
    null_rows = bars.filter(pl.any_horizontal(pl.col(PRICE_COLUMNS).is_null()))
    if null_rows.height:
        first = null_rows.row(0, named=True)
        raise FinfusionError(
            f"{null_rows.height} bars lack open/high/low/close (first: {first[_G]} at {first['ts']}); clean them first"
        )
    factor = pl.col("adj_factor").fill_null(1.0) if config.adjust and "adj_factor" in bars.columns else pl.lit(1.0)
    if SESSION_COLUMN in bars.columns:
        session = pl.col(SESSION_COLUMN)
    else:
        session = pl.col("ts").dt.convert_time_zone(config.session_tz).dt.date()
    frame = bars.sort(_G, "ts").select(
        _G, "ts", *[(pl.col(c) * factor).cast(pl.Float64).alias(c) for c in PRICE_COLUMNS], session.alias("_session")
    )
    frame = frame.with_columns(pl.int_range(pl.len()).over(_G).alias("_pos"))
    return frame.with_columns(_runs(pl.col("_session") != pl.col("_session").shift(1)).alias("_session_id"))


def _with_previous_session(frame: pl.DataFrame) -> pl.DataFrame:
    """Add `_prev_high`, `_prev_low` [N]: high and low of the symbol's previous session (daily bars: previous bar).
    Only complete earlier sessions are read, so this is point-in-time."""
    session_id = frame["_session_id"].cast(pl.Int64).to_numpy()
    starts = np.flatnonzero(np.diff(session_id, prepend=0))
    highs = np.maximum.reduceat(frame["high"].to_numpy(), starts)
    lows = np.minimum.reduceat(frame["low"].to_numpy(), starts)
    first_of_symbol = frame["_pos"].to_numpy()[starts] == 0
    previous = session_id - 2  # row of the previous session in `highs` / `lows`
    valid = ~first_of_symbol[session_id - 1]
    return frame.with_columns(
        pl.Series("_prev_high", np.where(valid, highs[previous], np.nan)).fill_nan(None),
        pl.Series("_prev_low", np.where(valid, lows[previous], np.nan)).fill_nan(None),
    )


def _runs(start: pl.Expr) -> pl.Expr:
    """Global run ids [N] of the sorted rows: a new run at each symbol's first bar and at every row where `start`
    holds. Windows over one integer key of contiguous runs stay inside one symbol."""
    return (start.fill_null(False) | (pl.col("_pos") == 0)).cum_sum()


def _count_in_run(flag: pl.Expr, run: str) -> pl.Expr:
    """Running count [N] of `flag` within each run of `run`, this row included (a global cumulative sum minus its
    value before the run started; much faster than a window over many small groups)."""
    x = flag.fill_null(False).cast(pl.Int64)
    total = x.cum_sum()
    starts = (pl.col(run) != pl.col(run).shift(1)).fill_null(True)
    return total - pl.when(starts).then(total - x).forward_fill()


def _per_symbol(expr: pl.Expr) -> pl.Expr:
    return expr.over(_G)


# ----------------------------------------------------------------------------------------------------------------
# Stages: each returns expressions over the columns of the stages before it
# ----------------------------------------------------------------------------------------------------------------


def _basics(config: BrooksConfig) -> list[pl.Expr]:
    """True range, previous bar, EMA, efficiency-ratio parts, and the swing candidate k bars back with its
    k left neighbours and its k right neighbours (the bars up to t)."""
    prev_close = _per_symbol(pl.col("close").shift(1))
    close, k, w = pl.col("close"), config.swing_k, config.range_window
    return [
        (pl.max_horizontal("high", prev_close) - pl.min_horizontal("low", prev_close)).alias("_tr"),
        _per_symbol(pl.col("high").shift(1)).alias("_ph"),
        _per_symbol(pl.col("low").shift(1)).alias("_pl"),
        _per_symbol(close.ewm_mean(span=config.ema_length, adjust=False)).alias("_ema"),
        _per_symbol((close - close.shift(w)).abs()).alias("_er_move"),
        _per_symbol(close.diff().abs().rolling_sum(w)).alias("_er_path"),
        _per_symbol(pl.col("high").shift(k)).alias("_hk"),
        _per_symbol(pl.col("low").shift(k)).alias("_lk"),
        _per_symbol((close >= pl.col("open")).shift(k)).alias("_k_up"),
        _per_symbol(pl.col("high").shift(k + 1).rolling_max(k)).alias("_h_left"),
        _per_symbol(pl.col("low").shift(k + 1).rolling_min(k)).alias("_l_left"),
        _per_symbol(pl.col("high").rolling_max(k)).alias("_h_right"),
        _per_symbol(pl.col("low").rolling_min(k)).alias("_l_right"),
        _per_symbol(pl.col("high").rolling_max(k + 1)).alias("_leg_hi0"),
        _per_symbol(pl.col("low").rolling_min(k + 1)).alias("_leg_lo0"),
    ]


def _bar_shapes(config: BrooksConfig) -> list[pl.Expr]:
    """ATR, the bar's own shape (direction, size, inside/outside), trend direction, regime and swing pivots."""
    high, low, close, open_ = pl.col("high"), pl.col("low"), pl.col("close"), pl.col("open")
    rng, ph, pl_ = high - low, pl.col("_ph"), pl.col("_pl")
    doji = (rng <= 0) | ((close - open_).abs() < config.doji_body_ratio * rng)
    inside = ((high <= ph) & (low >= pl_)).fill_null(False)
    outside = ((high >= ph) & (low <= pl_) & ((high > ph) | (low < pl_))).fill_null(False)
    ema, ema_before = pl.col("_ema"), _per_symbol(pl.col("_ema").shift(config.slope_bars))
    trend = (
        pl.when((close > ema) & (ema > ema_before))
        .then(pl.lit("up"))
        .when((close < ema) & (ema < ema_before))
        .then(pl.lit("down"))
        .otherwise(pl.lit("flat"))
    )
    efficiency = pl.when(pl.col("_er_path") > 0).then(pl.col("_er_move") / pl.col("_er_path"))  # null: range
    return [
        _per_symbol(pl.col("_tr").shift(1).rolling_mean(config.atr_window, min_samples=1))
        .fill_null(pl.col("_tr"))
        .alias("_atr"),
        pl.when(doji).then(2).when(close > open_).then(0).otherwise(1).alias("_direction"),  # bull, bear, doji
        (pl.when(inside).then(1).when(outside).then(2).otherwise(0)).alias("_relation"),  # none, inside, outside
        trend.alias("trend"),
        pl.when(efficiency >= config.range_efficiency)
        .then(pl.lit("trend"))
        .otherwise(pl.lit("range"))
        .alias("context"),
        ((pl.col("_hk") > pl.col("_h_left")) & (pl.col("_hk") >= pl.col("_h_right"))).fill_null(False).alias("_is_sh"),
        ((pl.col("_lk") < pl.col("_l_left")) & (pl.col("_lk") <= pl.col("_l_right"))).fill_null(False).alias("_is_sl"),
    ]


def _swing_levels(config: BrooksConfig) -> list[pl.Expr]:
    """Bar type; latest confirmed swing high/low as of t, its confirmation bar, and run ids that start at each
    confirmation (`_seg_*`) or at the bar after it (`_seg_*_before`, the span in which that level is the active one)."""
    rng = pl.col("high") - pl.col("low")
    size = pl.when(rng < config.small_range_atr * pl.col("_atr")).then(0)
    size = size.when(rng >= config.large_range_atr * pl.col("_atr")).then(2).otherwise(1)
    code = (
        pl.when(pl.col("_relation") > 0)
        .then(4 + 3 * pl.col("_relation") + pl.col("_direction"))
        .when(pl.col("_direction") == 2)
        .then(6)
        .otherwise(3 * pl.col("_direction") + size)
    )
    out = [
        code.replace_strict(list(range(len(VALUES["bar"]))), list(VALUES["bar"]), return_dtype=pl.String).alias("bar")
    ]
    for side, price in (("sh", "_hk"), ("sl", "_lk")):
        is_swing = pl.col(f"_is_{side}")
        out += [
            _per_symbol(pl.when(is_swing).then(pl.col(price)).forward_fill()).alias(f"_{side}"),
            _per_symbol(pl.when(is_swing).then(pl.col("_pos")).forward_fill()).alias(f"_{side}_pos"),
            _runs(is_swing).alias(f"_seg_{side}"),
            _runs(is_swing.shift(1)).alias(f"_seg_{side}_before"),
        ]
    return out


def _swing_history(config: BrooksConfig) -> list[pl.Expr]:
    """Swing levels confirmed before t (the active breakout levels) and the legs since the latest swings: the
    highest high since the latest swing low's bar and the lowest low since the latest swing high's bar."""
    return [
        _per_symbol(pl.col("_sh").shift(1)).alias("_sh_before"),
        _per_symbol(pl.col("_sl").shift(1)).alias("_sl_before"),
        pl.when(pl.col("_is_sl")).then("_leg_hi0").otherwise("high").cum_max().over("_seg_sl").alias("_leg_hi"),
        pl.when(pl.col("_is_sh")).then("_leg_lo0").otherwise("low").cum_min().over("_seg_sh").alias("_leg_lo"),
    ]


def _swing_labels(config: BrooksConfig) -> list[pl.Expr]:
    """The swing label at its confirmation bar; breakout crossings; the A point of measured moves."""
    tolerance = config.double_tolerance_atr * pl.col("_atr")
    high_label = (
        pl.when(pl.col("_sh_before").is_null())
        .then(pl.lit("SH"))
        .when((pl.col("_hk") - pl.col("_sh_before")).abs() <= tolerance)
        .then(pl.lit("DT"))
        .when(pl.col("_hk") > pl.col("_sh_before"))
        .then(pl.lit("HH"))
        .otherwise(pl.lit("LH"))
    )
    low_label = (
        pl.when(pl.col("_sl_before").is_null())
        .then(pl.lit("SL"))
        .when((pl.col("_lk") - pl.col("_sl_before")).abs() <= tolerance)
        .then(pl.lit("DB"))
        .when(pl.col("_lk") < pl.col("_sl_before"))
        .then(pl.lit("LL"))
        .otherwise(pl.lit("HL"))
    )
    is_sh, is_sl = pl.col("_is_sh"), pl.col("_is_sl")
    swing = (
        pl.when(is_sh & (~is_sl | pl.col("_k_up")))  # a bull pivot bar that is both made its low first
        .then(high_label)
        .when(is_sl)
        .then(low_label)
        .otherwise(pl.lit("none"))
    )
    close = pl.col("close")
    return [
        swing.alias("swing"),
        (close > pl.col("_sh_before")).fill_null(False).alias("_above"),
        (close < pl.col("_sl_before")).fill_null(False).alias("_below"),
        _per_symbol(pl.when(is_sh).then(pl.col("_sl_before")).forward_fill()).alias("_a_up"),
        _per_symbol(pl.when(is_sl).then(pl.col("_sh_before")).forward_fill()).alias("_a_down"),
    ]


def _breakouts(config: BrooksConfig) -> list[pl.Expr]:
    """A breakout is the first close beyond the active swing level; a bar that trades beyond a level not yet
    broken but closes back inside is a failed breakout at once. `_a_*_before`: A as of the bar before."""
    out = [_per_symbol(pl.col(f"_a_{n}").shift(1)).alias(f"_a_{n}_before") for n in ("up", "down")]
    sides = (
        ("up", "sh", "_above", pl.col("high") > pl.col("_sh_before")),
        ("down", "sl", "_below", pl.col("low") < pl.col("_sl_before")),
    )
    for name, swing, beyond, poke in sides:
        unbroken = _count_in_run(pl.col(beyond), f"_seg_{swing}_before") - pl.col(beyond).cast(pl.Int64) == 0
        out += [
            (pl.col(beyond) & unbroken).alias(f"_bo_{name}"),
            (poke & ~pl.col(beyond) & unbroken).fill_null(False).alias(f"_poke_{name}"),
        ]
    return out


def _breakout_runs(config: BrooksConfig) -> list[pl.Expr]:
    return [_runs(pl.col(f"_bo_{n}")).alias(f"_bo_{n}_id") for n in ("up", "down")]


def _breakout_origins(config: BrooksConfig) -> list[pl.Expr]:
    """Bar and level of the latest breakout (null level before the symbol's first breakout)."""
    out = []
    for name, level in (("up", "_sh_before"), ("down", "_sl_before")):
        run = f"_bo_{name}_id"
        out += [
            pl.col("_pos").first().over(run).alias(f"_bo_{name}_pos"),
            pl.when(pl.col(f"_bo_{name}")).then(pl.col(level)).first().over(run).alias(f"_bo_{name}_level"),
        ]
    return out


def _failures(config: BrooksConfig) -> list[pl.Expr]:
    """Closes back beyond the level of the latest breakout within `failed_breakout_bars` bars after it."""
    out = []
    for name, back in (
        ("up", pl.col("close") < pl.col("_bo_up_level")),
        ("down", pl.col("close") > pl.col("_bo_down_level")),
    ):
        since = pl.col("_pos") - pl.col(f"_bo_{name}_pos")
        out.append(
            ((since >= 1) & (since <= config.failed_breakout_bars) & back).fill_null(False).alias(f"_back_{name}")
        )
    return out


def _events(config: BrooksConfig) -> list[pl.Expr]:
    """The event, and measured-move setups fixed at the confirmation of their pullback swing C: for an up move
    A (swing low) -> B (swing high) -> C (higher swing low below B), target C + (B - A); down mirrored."""
    failed = {
        n: pl.col(f"_back_{n}") & (_count_in_run(pl.col(f"_back_{n}"), f"_bo_{n}_id") == 1) for n in ("up", "down")
    }
    event = (
        pl.when(pl.col("_bo_up"))
        .then(pl.lit("bo_up"))
        .when(pl.col("_bo_down"))
        .then(pl.lit("bo_down"))
        .when(pl.col("_poke_up") | failed["up"])
        .then(pl.lit("fbo_up"))
        .when(pl.col("_poke_down") | failed["down"])
        .then(pl.lit("fbo_down"))
        .otherwise(pl.lit("none"))
    )
    a_up, a_down = pl.col("_a_up_before"), pl.col("_a_down_before")
    b_up, b_down, c_up, c_down = pl.col("_sh_before"), pl.col("_sl_before"), pl.col("_lk"), pl.col("_hk")
    valid_up = pl.col("_is_sl") & (a_up < c_up) & (c_up < b_up)
    valid_down = pl.col("_is_sh") & (a_down > c_down) & (c_down > b_down)
    return [
        event.alias("event"),
        pl.when(valid_up).then(c_up).first().over("_seg_sl").alias("_mm_up_c"),
        pl.when(valid_up).then(c_up + b_up - a_up).first().over("_seg_sl").alias("_mm_up_target"),
        pl.when(valid_down).then(c_down).first().over("_seg_sh").alias("_mm_down_c"),
        pl.when(valid_down).then(c_down - (a_down - b_down)).first().over("_seg_sh").alias("_mm_down_target"),
    ]


def _progress(config: BrooksConfig) -> list[pl.Expr]:
    """Pullback depth; measured-move status per direction (null: no live setup); magnet distances in ATRs."""
    close, atr = pl.col("close"), pl.col("_atr")
    up_leg, down_leg = pl.col("_leg_hi") - pl.col("_sl"), pl.col("_sh") - pl.col("_leg_lo")
    depth = (
        pl.when((pl.col("trend") == "up") & (up_leg > 0))
        .then((pl.col("_leg_hi") - close) / up_leg)
        .when((pl.col("trend") == "down") & (down_leg > 0))
        .then((close - pl.col("_leg_lo")) / down_leg)
    )
    shallow, medium, deep = config.pullback_levels
    pullback = pl.when(depth >= deep).then(pl.lit("deep")).when(depth >= medium).then(pl.lit("medium"))
    pullback = pullback.when(depth >= shallow).then(pl.lit("shallow")).otherwise(pl.lit("none"))
    broken_up = _count_in_run(close < pl.col("_mm_up_c"), "_seg_sl") > 0
    broken_down = _count_in_run(close > pl.col("_mm_down_c"), "_seg_sh") > 0
    levels = {**_MAGNET_LEVELS, "ema": "_ema"}
    return [
        pullback.alias("pullback"),
        pl.when(pl.col("_leg_hi") >= pl.col("_mm_up_target"))
        .then(pl.lit("up_reached"))
        .when(pl.col("_mm_up_target").is_not_null() & ~broken_up)
        .then(pl.lit("up_pending"))
        .alias("_mm_up"),
        pl.when(pl.col("_leg_lo") <= pl.col("_mm_down_target"))
        .then(pl.lit("down_reached"))
        .when(pl.col("_mm_down_target").is_not_null() & ~broken_down)
        .then(pl.lit("down_pending"))
        .alias("_mm_down"),
        *[pl.when(atr > 0).then((close - pl.col(c)).abs() / atr).alias(f"_d_{n}") for n, c in levels.items()],
    ]


def _statuses(config: BrooksConfig) -> list[pl.Expr]:
    """Measured move of the more recent setup; the nearest magnet within `magnet_atr` ATRs."""
    up, down = pl.col("_mm_up"), pl.col("_mm_down")
    up_later = pl.col("_sl_pos").fill_null(-1) >= pl.col("_sh_pos").fill_null(-1)
    names = [*_MAGNET_LEVELS, "ema"]
    nearest = pl.min_horizontal([f"_d_{n}" for n in names])
    code = pl.when(nearest.is_null() | (nearest > config.magnet_atr)).then(0)
    for i, name in enumerate(names, start=1):
        code = code.when(pl.col(f"_d_{name}") == nearest).then(i)
    magnet = code.otherwise(0).replace_strict(list(range(len(names) + 1)), ["none", *names], return_dtype=pl.String)
    return [
        pl.when(up.is_not_null() & (down.is_null() | up_later))
        .then(up)
        .otherwise(down)
        .fill_null("none")
        .alias("measured_move"),
        magnet.alias("magnet"),
    ]


_STAGES: tuple[Callable[[BrooksConfig], list[pl.Expr]], ...] = (
    _basics,
    _bar_shapes,
    _swing_levels,
    _swing_history,
    _swing_labels,
    _breakouts,
    _breakout_runs,
    _breakout_origins,
    _failures,
    _events,
    _progress,
    _statuses,
)
