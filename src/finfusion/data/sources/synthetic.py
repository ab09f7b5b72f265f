"""A seeded synthetic multimodal market: bars, news texts and the ground truth of the news effects planted in prices.

Everything is generated from `SyntheticConfig.seed` alone, vectorised over symbols as numpy arrays of shape [S, N]
(S symbols, N bars) or [S, T] (T sessions). Sessions come from the exchange calendar (real holidays and half days).

Point-in-time rule (see docs/synthetic.md): a news item published at instant p with
`idx = calendar.first_actionable_session(p)` moves prices from session `start = idx` when p <= open(idx), else from
`start = idx + 1`; its `effect_return` is spread evenly over the bars of sessions start .. start + horizon - 1.
No bar ending at or before p is affected.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import polars as pl
from scipy.signal import lfilter

from finfusion.data.calendar import (
    US_PER_MINUTE,
    SessionCalendar,
    calendar_covering,
    from_us,
    parse_freq,
)
from finfusion.data.schema import BARS, EVENTS, TEXT
from finfusion.data.sources.synthetic_context import ContextConfig, ContextPlan, plan_context
from finfusion.errors import FinfusionError

SOURCE = "synthetic"
US_PER_SECOND = 1_000_000
TRADING_DAYS_PER_YEAR = 252
MINUTES_PER_FULL_SESSION = 390
PRE_OPEN_WINDOW_S = 3 * 3600
SPLIT_RATIOS = np.array([2.0, 3.0])
SPLIT_RATIO_PROBS = np.array([0.7, 0.3])
LARGE_SHARE = 0.35

# News classes: index into TEMPLATES. Informative classes carry (sign, is_large); NOISE carries no effect.
POS_LARGE, POS_SMALL, NEG_LARGE, NEG_SMALL, NOISE = range(5)

_NAME_PREFIXES = (
    "Acme", "Apex", "Atlas", "Aurora", "Beacon", "Birch", "Blue", "Bolt", "Brook", "Cedar", "Cobalt", "Comet",
    "Crest", "Delta", "Eagle", "Echo", "Ember", "Falcon", "Fern", "Forge", "Frontier", "Galaxy", "Granite", "Harbor",
    "Helix", "Horizon", "Iris", "Ivory", "Jade", "Keystone", "Lumen", "Maple", "Meridian", "Nimbus", "Nova", "Oak",
    "Onyx", "Orbit", "Pinnacle", "Polar", "Quartz", "Quest", "Radiant", "Redwood", "Ridge", "Sable", "Sierra",
    "Silver", "Solstice", "Summit", "Terra", "Titan", "Trident", "Umber", "Vanguard", "Vertex", "Willow", "Xenon",
    "Yarrow", "Zenith",
)  # fmt: skip
_NAME_INDUSTRIES = (
    "Robotics", "Foods", "Energy", "Biotech", "Pharma", "Mining", "Logistics", "Semiconductors", "Software",
    "Networks", "Motors", "Airlines", "Banking", "Insurance", "Retail", "Apparel", "Materials", "Chemicals",
    "Telecom", "Media", "Gaming", "Health", "Devices", "Solar", "Water", "Holdings", "Capital", "Systems",
    "Analytics", "Aerospace", "Shipping", "Steel", "Textiles", "Beverages", "Realty", "Utilities",
)  # fmt: skip

TEMPLATES: dict[int, tuple[tuple[str, ...], tuple[str, ...]]] = {
    POS_LARGE: (
        (
            "{name} soars after blowout quarter, raises full-year guidance",
            "{name} surges as record sales smash expectations",
            "{name} jumps after landmark acquisition deal and strong outlook",
            "{name} rockets higher on breakthrough product approval",
        ),
        (
            "{name} reported results well ahead of estimates and lifted its full-year outlook, citing strong demand.",
            "Shares of {name} ({ticker}) are set to rally after revenue and earnings beat forecasts by a wide margin.",
            "{ticker} delivered its strongest quarter on record; analysts called the guidance raise decisive.",
        ),
    ),
    POS_SMALL: (
        (
            "{name} edges higher as analyst lifts price target",
            "{name} gains after modest earnings beat",
            "{name} ticks up on new supply agreement",
            "{name} rises slightly after upbeat investor update",
        ),
        (
            "An analyst raised the price target on {name}, citing steady execution.",
            "{name} ({ticker}) posted results slightly above consensus.",
            "{name} announced a small contract win that modestly improves its outlook.",
        ),
    ),
    NEG_LARGE: (
        (
            "{name} plunges after profit warning, cuts full-year guidance",
            "{name} tumbles as regulators open fraud investigation",
            "{name} sinks after major product recall",
            "{name} crashes as quarterly results miss badly",
        ),
        (
            "{name} warned that earnings will fall far short of expectations and withdrew its outlook.",
            "Shares of {name} ({ticker}) face heavy selling after the company disclosed a serious setback.",
            "{ticker} reported a steep drop in revenue; several analysts downgraded the stock.",
        ),
    ),
    NEG_SMALL: (
        (
            "{name} slips as analyst trims price target",
            "{name} dips after slightly weaker margins",
            "{name} eases on minor supply delay",
            "{name} edges lower after cautious investor update",
        ),
        (
            "An analyst trimmed the price target on {name}, citing slower growth.",
            "{name} ({ticker}) reported margins a little below consensus.",
            "{name} flagged a minor delay that modestly weighs on its outlook.",
        ),
    ),
    NOISE: (
        (
            "{name} schedules annual shareholder meeting",
            "{name} to present at industry conference",
            "{name} announces date of quarterly earnings call",
            "{name} publishes annual sustainability report",
        ),
        (
            "{name} said the event will be held as planned; no changes to its business were announced.",
            "{name} ({ticker}) shared routine corporate information with investors.",
            "The announcement from {ticker} is administrative and contains no new financial information.",
        ),
    ),
}


@dataclass(frozen=True)
class SyntheticConfig:
    """Parameters of the synthetic market. Probabilities and rates are per bar unless stated per session."""

    n_symbols: int = 20
    start: str = "2018-01-01"
    end: str = "2020-12-31"
    freq: str = "1d"
    calendar: str = "XNYS"
    seed: int = 0
    annual_drift: float = 0.05
    vol_regimes: tuple[float, ...] = (0.15, 0.40)
    regime_switch_prob: float = 0.02
    jump_intensity: float = 0.01
    jump_scale: float = 0.04
    split_prob: float = 0.0008
    missing_bar_prob: float = 0.003
    news_rate: float = 0.12
    noise_news_rate: float = 0.12
    effect_small: float = 0.015
    effect_large: float = 0.04
    effect_horizon: int = 3
    after_close_share: float = 0.3
    #: AR(1) coefficient of the diffusion shocks (0: independent returns). Variance is kept: shocks are scaled by
    #: sqrt(1 - phi^2). A non-zero value plants price-predictable structure (momentum > 0, mean reversion < 0).
    return_autocorrelation: float = 0.0
    #: Macro and policy series with effects planted in some stocks (synthetic_context.py); None: no series.
    context: ContextConfig | None = None


@dataclass(frozen=True)
class SyntheticMarket:
    """The generated market: `bars` (BARS schema), `texts` (TEXT schema), `events` (EVENTS schema, ground truth of the
    news effects), `series` (SERIES schema: the context series, empty without `config.context`) and `sensitive`
    (context group -> the symbols its planted effects move)."""

    bars: pl.DataFrame
    texts: pl.DataFrame
    events: pl.DataFrame
    config: SyntheticConfig
    series: pl.DataFrame | None = None
    sensitive: dict[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class Universe:
    """Symbols [S] (unique 4-letter tickers, sorted) and their company names [S]."""

    symbols: tuple[str, ...]
    names: tuple[str, ...]


@dataclass(frozen=True)
class BarGrid:
    """The bar-end instants of the generated range.

    `opens_us`, `closes_us`: [T] int64 µs of the T sessions; `bar_ts`: [N] int64 µs bar ends; `bar_session`: [N]
    local session index (0..T-1) of each bar; `bar_years`: [N] length of each bar in trading years; `first_session`:
    index of session 0 in the calendar.
    """

    first_session: int
    opens_us: np.ndarray
    closes_us: np.ndarray
    bar_ts: np.ndarray
    bar_session: np.ndarray
    bar_years: np.ndarray

    @property
    def n_sessions(self) -> int:
        return len(self.opens_us)

    @property
    def n_bars(self) -> int:
        return len(self.bar_ts)


@dataclass(frozen=True)
class NewsPlan:
    """K news items, all arrays [K]: symbol index, publication instant (µs), local start session of the effect,
    effect_return (signed log return, 0 for noise), class (POS_LARGE .. NOISE), title and body template indices."""

    symbol_idx: np.ndarray
    published_us: np.ndarray
    start_session: np.ndarray
    effect_return: np.ndarray
    kind: np.ndarray
    title_idx: np.ndarray
    body_idx: np.ndarray

    def __len__(self) -> int:
        return len(self.symbol_idx)

    @property
    def informative(self) -> np.ndarray:
        """[K] bool: the item carries a planted effect."""
        return self.kind != NOISE

    def take(self, idx: np.ndarray) -> NewsPlan:
        """The items at positions (or boolean mask) `idx`."""
        return NewsPlan(**{name: getattr(self, name)[idx] for name in self.__dataclass_fields__})


@dataclass(frozen=True)
class PricePaths:
    """Simulated bars, all [S, N]: raw OHLC (split-affected), volume, backward split adjustment and kept-row mask."""

    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    adj_factor: np.ndarray
    keep: np.ndarray


# ----------------------------------------------------------------------------------------------------------------
# Public entry point
# ----------------------------------------------------------------------------------------------------------------


def generate_market(config: SyntheticConfig = SyntheticConfig()) -> SyntheticMarket:
    """Generate the whole market from `config` (deterministic in `config.seed`)."""
    validate_config(config)
    calendar = calendar_for(config)
    grid = build_grid(calendar, config)
    name_seq, news_seq, price_seq, context_seq = np.random.SeedSequence(config.seed).spawn(4)
    universe = make_universe(config.n_symbols, np.random.default_rng(name_seq))
    plan = draw_news(config, calendar, grid, np.random.default_rng(news_seq))
    context = None
    if config.context is not None:
        context = plan_context(
            config.context,
            calendar,
            grid.first_session,
            grid.n_sessions,
            config.n_symbols,
            np.random.default_rng(context_seq),
        )
    paths = simulate_paths(config, grid, plan, np.random.default_rng(price_seq), context)
    texts = texts_frame(config, universe, plan)
    return SyntheticMarket(
        bars=bars_frame(universe, grid, paths),
        texts=texts,
        events=events_frame(config, universe, grid, plan, texts),
        config=config,
        series=None if context is None else context.series,
        sensitive={}
        if context is None
        else {group: tuple(universe.symbols[i] for i in idx) for group, idx in context.sensitive.items()},
    )


def validate_config(config: SyntheticConfig) -> None:
    """Raise FinfusionError naming the first invalid field."""
    probs = {
        "regime_switch_prob": config.regime_switch_prob,
        "split_prob": config.split_prob,
        "missing_bar_prob": config.missing_bar_prob,
        "after_close_share": config.after_close_share,
    }
    for name, value in probs.items():
        if not 0.0 <= value <= 1.0:
            raise FinfusionError(f"synthetic config: {name}={value} must be in [0, 1]")
    nonneg = {
        "jump_intensity": config.jump_intensity,
        "jump_scale": config.jump_scale,
        "news_rate": config.news_rate,
        "noise_news_rate": config.noise_news_rate,
    }
    for name, value in nonneg.items():
        if value < 0:
            raise FinfusionError(f"synthetic config: {name}={value} must be >= 0")
    if config.n_symbols < 1:
        raise FinfusionError("synthetic config: n_symbols must be >= 1")
    if config.n_symbols > len(_NAME_PREFIXES) * len(_NAME_INDUSTRIES):
        raise FinfusionError(f"synthetic config: at most {len(_NAME_PREFIXES) * len(_NAME_INDUSTRIES)} symbols")
    if not config.vol_regimes or min(config.vol_regimes) <= 0:
        raise FinfusionError("synthetic config: vol_regimes must be non-empty and positive")
    if config.effect_horizon < 1:
        raise FinfusionError("synthetic config: effect_horizon must be >= 1")
    if not -1.0 < config.return_autocorrelation < 1.0:
        raise FinfusionError(
            f"synthetic config: return_autocorrelation={config.return_autocorrelation} must be in (-1, 1)"
        )
    if np.datetime64(config.start, "D") > np.datetime64(config.end, "D"):
        raise FinfusionError(f"synthetic config: start {config.start} is after end {config.end}")


def calendar_for(config: SyntheticConfig) -> SessionCalendar:
    """The cached calendar covering the config's years (plus one, for after-close items of the last session)."""
    first_year = int(str(np.datetime64(config.start, "Y")))
    last_year = int(str(np.datetime64(config.end, "Y")))
    return calendar_covering(config.calendar, (first_year, last_year + 1))


# ----------------------------------------------------------------------------------------------------------------
# Time grid
# ----------------------------------------------------------------------------------------------------------------


def build_grid(calendar: SessionCalendar, config: SyntheticConfig) -> BarGrid:
    """Sessions whose date lies in [start, end] and the bar ends inside them (the close for daily bars)."""
    lo = int(np.searchsorted(calendar.sessions, np.datetime64(config.start, "D"), side="left"))
    hi = int(np.searchsorted(calendar.sessions, np.datetime64(config.end, "D"), side="right"))
    if hi <= lo:
        raise FinfusionError(f"no {calendar.name} session between {config.start} and {config.end}")
    opens, closes = calendar.opens[lo:hi], calendar.closes[lo:hi]
    freq = parse_freq(config.freq)
    if freq.is_daily:
        bar_session = np.arange(hi - lo, dtype=np.int64)
        bar_years = np.full(hi - lo, 1.0 / TRADING_DAYS_PER_YEAR)
        return BarGrid(lo, opens, closes, closes.copy(), bar_session, bar_years)
    step = freq.minutes * US_PER_MINUTE
    per_session = -(-(closes - opens) // step)  # ceil: the last bar of a session ends at its close
    bar_session = np.repeat(np.arange(hi - lo, dtype=np.int64), per_session)
    first_bar = np.cumsum(per_session) - per_session
    k = np.arange(len(bar_session), dtype=np.int64) - first_bar[bar_session]
    bar_ts = np.minimum(opens[bar_session] + (k + 1) * step, closes[bar_session])
    bar_start = opens[bar_session] + k * step
    bar_years = (bar_ts - bar_start) / (US_PER_MINUTE * MINUTES_PER_FULL_SESSION * TRADING_DAYS_PER_YEAR)
    return BarGrid(lo, opens, closes, bar_ts, bar_session, bar_years)


# ----------------------------------------------------------------------------------------------------------------
# Universe
# ----------------------------------------------------------------------------------------------------------------


def make_universe(n_symbols: int, rng: np.random.Generator) -> Universe:
    """n_symbols unique company names ('Acme Robotics') with unique 4-letter tickers ('ACRB'), sorted by ticker."""
    combos = rng.permutation(len(_NAME_PREFIXES) * len(_NAME_INDUSTRIES))[:n_symbols]
    names, tickers, taken = [], [], set()
    for combo in combos:
        p, i = divmod(int(combo), len(_NAME_INDUSTRIES))
        prefix, industry = _NAME_PREFIXES[p], _NAME_INDUSTRIES[i]
        ticker = _ticker_from_name(prefix, industry)
        while ticker in taken:
            ticker = "".join(chr(ord("A") + int(i)) for i in rng.integers(0, 26, size=4))
        taken.add(ticker)
        names.append(f"{prefix} {industry}")
        tickers.append(ticker)
    order = np.argsort(tickers)
    return Universe(tuple(tickers[i] for i in order), tuple(names[i] for i in order))


def _ticker_from_name(prefix: str, industry: str) -> str:
    """First two letters of the prefix, then the industry's initial and its next consonant: Acme Robotics -> ACRB."""
    rest = [c for c in industry[1:].upper() if c not in "AEIOU"] or [industry[1].upper()]
    return (prefix[:2] + industry[0] + rest[0]).upper()


# ----------------------------------------------------------------------------------------------------------------
# News
# ----------------------------------------------------------------------------------------------------------------


def effect_start_sessions(calendar: SessionCalendar, published_us: np.ndarray) -> np.ndarray:
    """Calendar index [K] of the first session whose returns carry the effect of an item published at `published_us`.

    `idx = first_actionable_session(p)`; the effect starts at idx when p <= open(idx) (known before the session
    trades), else (published during session idx) at idx + 1.
    """
    idx = calendar.first_actionable_session(published_us)
    return idx + (published_us > calendar.opens[idx])


def draw_news(config: SyntheticConfig, calendar: SessionCalendar, grid: BarGrid, rng: np.random.Generator) -> NewsPlan:
    """Draw informative and noise items per (symbol, session), their publication instants, classes and templates.

    Items are anchored to a session d: after its close (share `after_close_share`), otherwise half pre-open (up to
    3 h before the open) and half during the session. Items published after the last session's close are dropped,
    and so are informative items whose effect would run past the last session. Sorted by (published_at, symbol).
    """
    shape = (config.n_symbols, grid.n_sessions)
    n_info = rng.poisson(config.news_rate, size=shape).ravel()
    n_noise = rng.poisson(config.noise_news_rate, size=shape).ravel()
    cells = np.arange(n_info.size)
    cell = np.concatenate([np.repeat(cells, n_info), np.repeat(cells, n_noise)])
    informative = np.concatenate([np.ones(n_info.sum(), bool), np.zeros(n_noise.sum(), bool)])
    symbol_idx, anchor = np.divmod(cell, grid.n_sessions)
    published = _draw_publication(calendar, grid.first_session + anchor, config.after_close_share, rng)
    kind = _draw_kind(informative, rng)
    n_items = len(kind)
    title_idx = rng.integers(0, len(TEMPLATES[POS_LARGE][0]), size=n_items)
    body_idx = rng.integers(0, len(TEMPLATES[POS_LARGE][1]), size=n_items)
    start = effect_start_sessions(calendar, published) - grid.first_session
    plan = NewsPlan(
        symbol_idx=symbol_idx.astype(np.int64),
        published_us=published,
        start_session=start.astype(np.int64),
        effect_return=_effect_of_kind(kind, config),
        kind=kind,
        title_idx=title_idx,
        body_idx=body_idx,
    )
    fits = np.where(plan.informative, start + config.effect_horizon <= grid.n_sessions, published <= grid.closes_us[-1])
    plan = plan.take(fits)
    return plan.take(np.lexsort((plan.symbol_idx, plan.published_us)))


def _draw_publication(
    calendar: SessionCalendar, session: np.ndarray, after_close_share: float, rng: np.random.Generator
) -> np.ndarray:
    """Publication instants [K] (µs, whole seconds) for items anchored to calendar sessions [K]."""
    opens, closes = calendar.opens[session], calendar.closes[session]
    next_opens = calendar.opens[np.minimum(session + 1, len(calendar) - 1)]
    u = rng.random(len(session))
    timing = rng.random(len(session))
    after_close = timing < after_close_share
    pre_open = ~after_close & (timing < after_close_share + (1.0 - after_close_share) / 2)
    after = closes + US_PER_SECOND + u * (next_opens - closes - 2 * US_PER_SECOND)  # (close, next open)
    before = opens - (1.0 - u) * PRE_OPEN_WINDOW_S * US_PER_SECOND  # [open - 3 h, open)
    intraday = opens + US_PER_SECOND + u * (closes - opens - 2 * US_PER_SECOND)  # (open, close)
    published = np.select([after_close, pre_open], [after, before], intraday)
    return (published // US_PER_SECOND).astype(np.int64) * US_PER_SECOND


def _draw_kind(informative: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Class [K] of each item: noise, or sign (50/50) x size (LARGE_SHARE large)."""
    positive = rng.random(len(informative)) < 0.5
    large = rng.random(len(informative)) < LARGE_SHARE
    kind = np.where(positive, np.where(large, POS_LARGE, POS_SMALL), np.where(large, NEG_LARGE, NEG_SMALL))
    return np.where(informative, kind, NOISE).astype(np.int8)


def _effect_of_kind(kind: np.ndarray, config: SyntheticConfig) -> np.ndarray:
    """Signed total log-return effect [K] of each class (0 for noise)."""
    table = np.array([config.effect_large, config.effect_small, -config.effect_large, -config.effect_small, 0.0])
    return table[kind]


def session_effect_matrix(
    n_symbols: int,
    n_sessions: int,
    symbol_idx: np.ndarray,
    start_session: np.ndarray,
    per_session: np.ndarray,
    horizon: int,
) -> np.ndarray:
    """[S, T] sum of `per_session` [K] over sessions start .. start + horizon - 1 of each item (clipped to T)."""
    out = np.zeros((n_symbols, n_sessions))
    for offset in range(horizon):
        session = start_session + offset
        ok = (session >= 0) & (session < n_sessions)
        np.add.at(out, (symbol_idx[ok], session[ok]), per_session[ok])
    return out


def apply_news_effects(
    log_returns: np.ndarray,
    bar_session: np.ndarray,
    n_sessions: int,
    symbol_idx: np.ndarray,
    start_session: np.ndarray,
    effect_return: np.ndarray,
    horizon: int,
) -> np.ndarray:
    """Pure: `log_returns` [S, N] plus each item's `effect_return` [K] spread evenly over the bars of its sessions.

    Every session in start .. start + horizon - 1 gets effect/horizon, split evenly over that session's bars
    (`bar_session` [N] local session index of each bar). Returns a new [S, N] array.
    """
    per_session = session_effect_matrix(
        log_returns.shape[0], n_sessions, symbol_idx, start_session, effect_return / horizon, horizon
    )
    bars_per_session = np.bincount(bar_session, minlength=n_sessions).astype(np.float64)
    return log_returns + per_session[:, bar_session] / bars_per_session[bar_session]


# ----------------------------------------------------------------------------------------------------------------
# Prices
# ----------------------------------------------------------------------------------------------------------------


def simulate_paths(
    config: SyntheticConfig,
    grid: BarGrid,
    plan: NewsPlan,
    rng: np.random.Generator,
    context: ContextPlan | None = None,
) -> PricePaths:
    """Simulate [S, N] bars: regime-switching GBM + jumps + planted news (and context) drifts, OHLC, volume, splits,
    gaps.

    All random draws come from `rng` in a fixed order that does not depend on `plan` or `context`, so removing a news
    item changes only the bars its effect covers.
    """
    shape = (config.n_symbols, grid.n_bars)
    sigma = regime_sigma(config, shape, rng) * np.sqrt(grid.bar_years)
    if context is not None:
        sigma = sigma * context.vol_scale[:, None]
    jumps = np.sqrt(rng.poisson(config.jump_intensity, size=shape)) * config.jump_scale * rng.standard_normal(shape)
    shocks = autocorrelated(rng.standard_normal(shape), config.return_autocorrelation)
    diffusion = (config.annual_drift * grid.bar_years - 0.5 * sigma**2) + sigma * shocks
    log_returns = apply_news_effects(
        diffusion + jumps,
        grid.bar_session,
        grid.n_sessions,
        plan.symbol_idx,
        plan.start_session,
        plan.effect_return,
        config.effect_horizon,
    )
    if context is not None:
        log_returns = apply_news_effects(
            log_returns,
            grid.bar_session,
            grid.n_sessions,
            context.symbol_idx,
            context.start_session,
            context.effect_return,
            config.context.effect_horizon,
        )
    log_p0 = rng.uniform(np.log(10.0), np.log(200.0), size=(config.n_symbols, 1))
    log_close = log_p0 + np.cumsum(log_returns, axis=1)
    log_prev = np.concatenate([log_p0, log_close[:, :-1]], axis=1)
    log_open = log_prev + rng.uniform(0.0, 0.5, size=shape) * log_returns + 0.1 * sigma * rng.standard_normal(shape)
    wick = 0.5 * sigma
    log_high = np.maximum(log_open, log_close) + wick * np.abs(rng.standard_normal(shape))
    log_low = np.minimum(log_open, log_close) - wick * np.abs(rng.standard_normal(shape))
    log_split = split_log_divisor(config, grid, rng)  # [S, N]
    volume = simulate_volume(config, grid, plan, log_returns / sigma, rng) * np.exp(log_split)
    keep = rng.random(shape) >= config.missing_bar_prob
    return PricePaths(
        open=np.exp(log_open - log_split),
        high=np.exp(log_high - log_split),
        low=np.exp(log_low - log_split),
        close=np.exp(log_close - log_split),
        volume=volume,
        adj_factor=np.exp(log_split - log_split[:, -1:]),
        keep=keep,
    )


def autocorrelated(shocks: np.ndarray, phi: float) -> np.ndarray:
    """Unit-variance AR(1) series along the last axis from i.i.d. standard normal `shocks` [S, N] (phi 0: unchanged)."""
    if phi == 0.0:
        return shocks
    return lfilter([np.sqrt(1.0 - phi**2)], [1.0, -phi], shocks, axis=-1)


def regime_sigma(config: SyntheticConfig, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """[S, N] annualised vol of a Markov regime chain: each bar switches with `regime_switch_prob` to another state."""
    n_states = len(config.vol_regimes)
    initial = rng.integers(0, n_states, size=(shape[0], 1))
    switch = rng.random(shape) < config.regime_switch_prob
    step = rng.integers(1, max(n_states, 2), size=shape)  # move to one of the other states
    state = (initial + np.cumsum(np.where(switch, step, 0), axis=1)) % n_states
    return np.asarray(config.vol_regimes, dtype=np.float64)[state]


def split_log_divisor(config: SyntheticConfig, grid: BarGrid, rng: np.random.Generator) -> np.ndarray:
    """[S, N] log of the cumulative split ratio in force at each bar (splits take effect at a session's open).

    Raw prices are the continuous price divided by exp(this); session 0 never splits.
    """
    shape = (config.n_symbols, grid.n_sessions)
    split = rng.random(shape) < config.split_prob
    ratio = rng.choice(SPLIT_RATIOS, size=shape, p=SPLIT_RATIO_PROBS)
    split[:, 0] = False
    per_session = np.cumsum(np.where(split, np.log(ratio), 0.0), axis=1)
    return per_session[:, grid.bar_session]


def simulate_volume(
    config: SyntheticConfig, grid: BarGrid, plan: NewsPlan, z: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """[S, N] positive lognormal volume (pre-split shares), higher on big moves and in news-effect sessions."""
    shape = z.shape
    level = np.exp(rng.uniform(np.log(1e5), np.log(1e7), size=(shape[0], 1))) * grid.bar_years * TRADING_DAYS_PER_YEAR
    weight = np.where(plan.kind == NOISE, 0.0, np.where(np.isin(plan.kind, (POS_LARGE, NEG_LARGE)), 2.0, 1.0))
    news = session_effect_matrix(
        shape[0], grid.n_sessions, plan.symbol_idx, plan.start_session, weight, config.effect_horizon
    )
    boost = 1.0 + 0.5 * news[:, grid.bar_session]
    return level * boost * np.exp(0.4 * rng.standard_normal(shape) + 0.2 * np.minimum(np.abs(z), 10.0))


# ----------------------------------------------------------------------------------------------------------------
# Frames
# ----------------------------------------------------------------------------------------------------------------


def bars_frame(universe: Universe, grid: BarGrid, paths: PricePaths) -> pl.DataFrame:
    """Long frame of the kept [S, N] bars, sorted by (symbol, ts), with the BARS columns symbol .. adj_factor."""
    n_symbols, n_bars = paths.close.shape
    keep = paths.keep.ravel()
    symbol_idx = np.repeat(np.arange(n_symbols), n_bars)[keep]
    close = paths.close.ravel()[keep]
    adj_factor = paths.adj_factor.ravel()[keep]
    frame = pl.DataFrame(
        {
            "symbol": pl.Series(universe.symbols, dtype=pl.String).gather(symbol_idx),
            "ts": from_us(np.tile(grid.bar_ts, n_symbols)[keep], "ts"),
            "open": paths.open.ravel()[keep],
            "high": paths.high.ravel()[keep],
            "low": paths.low.ravel()[keep],
            "close": close,
            "volume": paths.volume.ravel()[keep],
            "adj_close": close * adj_factor,
            "adj_factor": adj_factor,
        }
    )
    return BARS.conform(frame).select(frame.columns)


def text_id(published_iso: str, symbol: str, title: str, body: str, source: str, source_ref: str) -> str:
    """sha256 hex (first 32 chars) of 'published_iso|symbol|title|body|source|source_ref'."""
    return _short_sha256(f"{published_iso}|{symbol}|{title}|{body}|{source}|{source_ref}")


def _short_sha256(payload: str) -> str:
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def rendered_templates(universe: Universe, part: int) -> pl.Series:
    """Every template of `part` (0 title, 1 body) rendered for every symbol: [n_kinds * n_templates * S] strings.

    Entry (kind * n_templates + template) * S + symbol; all kinds have the same number of templates per part.
    """
    rendered = [
        template.format(name=name, ticker=ticker)
        for kind in sorted(TEMPLATES)
        for template in TEMPLATES[kind][part]
        for ticker, name in zip(universe.symbols, universe.names, strict=True)
    ]
    return pl.Series(rendered, dtype=pl.String)


def texts_frame(config: SyntheticConfig, universe: Universe, plan: NewsPlan) -> pl.DataFrame:
    """TEXT frame [K] in plan order: templated title and body, source_ref 'synthetic:{seed}:{n}'.

    `id` = text_id(published_at.isoformat(), symbol, title, body, 'synthetic', source_ref); instants are whole
    seconds, so isoformat() is '%Y-%m-%dT%H:%M:%S+00:00'.
    """
    n_symbols = len(universe.symbols)
    kind = plan.kind.astype(np.int64)
    title_row = (kind * len(TEMPLATES[NOISE][0]) + plan.title_idx) * n_symbols + plan.symbol_idx
    body_row = (kind * len(TEMPLATES[NOISE][1]) + plan.body_idx) * n_symbols + plan.symbol_idx
    frame = pl.DataFrame(
        {
            "published_at": from_us(plan.published_us, "published_at"),
            "symbol": pl.Series(universe.symbols, dtype=pl.String).gather(plan.symbol_idx),
            "title": rendered_templates(universe, 0).gather(title_row),
            "body": rendered_templates(universe, 1).gather(body_row),
            "n": np.arange(len(plan), dtype=np.int64),
        }
    ).with_columns(
        source=pl.lit(SOURCE, dtype=pl.String),
        source_ref=pl.format(f"{SOURCE}:{config.seed}:{{}}", pl.col("n")),
        symbols=pl.concat_list(pl.col("symbol")),
    )
    payload = frame.select(
        pl.concat_str(
            pl.col("published_at").dt.strftime("%Y-%m-%dT%H:%M:%S+00:00"),
            "symbol",
            "title",
            "body",
            "source",
            "source_ref",
            separator="|",
        )
    ).to_series()
    ids = pl.Series("id", [_short_sha256(p) for p in payload], dtype=pl.String)
    return TEXT.conform(frame.with_columns(id=ids))


def events_frame(
    config: SyntheticConfig, universe: Universe, grid: BarGrid, plan: NewsPlan, texts: pl.DataFrame
) -> pl.DataFrame:
    """EVENTS frame: one row per informative item; `first_session_ts` is the open of its first effect session."""
    mask = plan.informative
    info = plan.take(mask)
    frame = pl.DataFrame(
        {
            "text_id": texts["id"].filter(pl.Series(mask)),
            "symbol": pl.Series(universe.symbols, dtype=pl.String).gather(info.symbol_idx),
            "published_at": from_us(info.published_us, "published_at"),
            "first_session_ts": from_us(grid.opens_us[info.start_session], "first_session_ts"),
            "effect_return": info.effect_return,
            "horizon": np.full(len(info), config.effect_horizon, dtype=np.int64),
        }
    )
    return EVENTS.conform(frame)
