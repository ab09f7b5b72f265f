"""Macro and policy series for the synthetic market, with effects planted in some stocks and not in others.

Enabled by `SyntheticConfig.context` (a `ContextConfig`); a market without it is unchanged bit for bit (the draws
here come from their own random stream). What is generated, all on the market's exchange calendar:

- `policy_rate` (policy group): a decision every `meeting_every` sessions (jittered by up to 3), announced at 14:00
  local time during the session; the rate moves by -25, 0 or +25 basis points (never below 0). One row per meeting:
  period = the meeting's date, published_at = the announcement, value = the new rate (%).
- `activity_index` (macro group): a monthly AR(1) growth index; the first release is published at 08:30 local time on
  the first session on or after the 15th of the next month, and revised once a month later (the first release plus
  noise). Two rows per month: the first release and the revision (its vintage).
- `consumer_sentiment` (macro group): a monthly AR(1) index published on the last session of the month, never
  revised and with no effect (a distractor).

Planted effects (the ground truth, `ContextPlan.sensitive`): a share of the stocks is rate-sensitive (their log price
moves by -`policy_effect` per 25 bp of a rate change) and another share is growth-sensitive (their log price moves by
`macro_effect` times the first release of the activity index); each effect is spread over `effect_horizon` sessions
starting with the first session that could trade on the announcement (the news rule of synthetic.py). Revisions
move nothing. Rate-sensitive stocks are the calm ones (their volatility is scaled by `sensitive_vol_scale[0]`),
growth-sensitive ones the volatile ones (`sensitive_vol_scale[1]`), so the stocks' own bars tell them apart.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from finfusion.data.calendar import SessionCalendar
from finfusion.data.schema import SERIES
from finfusion.errors import FinfusionError

US_PER_HOUR = 3_600_000_000
RATE_STEP = 0.25
POLICY_SERIES = "policy_rate"
ACTIVITY_SERIES = "activity_index"
SENTIMENT_SERIES = "consumer_sentiment"
#: The context group of each generated series.
SERIES_GROUPS = {POLICY_SERIES: "policy", ACTIVITY_SERIES: "macro", SENTIMENT_SERIES: "macro"}


@dataclass(frozen=True)
class ContextConfig:
    """Settings of the planted macro and policy context (see the module docstring)."""

    policy_sensitive_share: float = 0.3
    macro_sensitive_share: float = 0.3
    policy_effect: float = 0.12
    macro_effect: float = 0.08
    effect_horizon: int = 20
    meeting_every: int = 30
    initial_rate: float = 2.0
    sensitive_vol_scale: tuple[float, float] = (0.6, 1.5)

    def __post_init__(self) -> None:
        shares = (self.policy_sensitive_share, self.macro_sensitive_share)
        if min(shares) < 0 or sum(shares) > 1:
            raise FinfusionError(f"synthetic context: the sensitive shares {shares} must be >= 0 and sum to <= 1")
        if self.effect_horizon < 1 or self.meeting_every < 5:
            raise FinfusionError("synthetic context: effect_horizon must be >= 1 and meeting_every >= 5")
        if self.initial_rate < 0 or min(self.sensitive_vol_scale) <= 0 or len(self.sensitive_vol_scale) != 2:
            raise FinfusionError("synthetic context: initial_rate must be >= 0 and sensitive_vol_scale two positives")


@dataclass(frozen=True)
class ContextPlan:
    """The generated context: `series` (SERIES rows), the planted effects as items [K] (`symbol_idx`,
    `start_session` local to the market's grid, `effect_return`), `vol_scale` [S] and `sensitive` (group -> indices
    of the stocks it moves)."""

    series: pl.DataFrame
    symbol_idx: np.ndarray
    start_session: np.ndarray
    effect_return: np.ndarray
    vol_scale: np.ndarray
    sensitive: dict[str, tuple[int, ...]]


def plan_context(
    config: ContextConfig,
    calendar: SessionCalendar,
    first_session: int,
    n_sessions: int,
    n_symbols: int,
    rng: np.random.Generator,
) -> ContextPlan:
    """Series and planted effects over the grid's sessions first_session .. first_session + n_sessions - 1."""
    from finfusion.data.sources.synthetic import effect_start_sessions

    order = rng.permutation(n_symbols)
    n_policy = round(config.policy_sensitive_share * n_symbols)
    n_macro = round(config.macro_sensitive_share * n_symbols)
    policy_idx, macro_idx = np.sort(order[:n_policy]), np.sort(order[n_policy : n_policy + n_macro])
    vol_scale = np.ones(n_symbols)
    vol_scale[policy_idx], vol_scale[macro_idx] = config.sensitive_vol_scale
    sessions = np.arange(first_session, first_session + n_sessions)
    meetings, rates, changes = _policy(config, calendar, sessions, rng)
    months, first, revised, first_at, revised_at = _activity(calendar, sessions, rng)
    sentiment_months, sentiment, sentiment_at = _sentiment(calendar, sessions, rng)
    policy_at = calendar.opens[meetings] + 4 * US_PER_HOUR + US_PER_HOUR // 2  # 14:00 New York
    rows = [
        _rows(POLICY_SERIES, _midnights_of_dates(calendar.sessions[meetings]), policy_at, rates),
        _rows(ACTIVITY_SERIES, months, first_at, first),
        _rows(ACTIVITY_SERIES, months, revised_at, revised),
        _rows(SENTIMENT_SERIES, sentiment_months, sentiment_at, sentiment),
    ]
    series = SERIES.conform(pl.concat(rows)).sort("series", "period", "published_at")
    events = [
        (policy_idx, policy_at, -config.policy_effect * changes / RATE_STEP),
        (macro_idx, first_at, config.macro_effect * first),
    ]
    symbol, start, effect = [], [], []
    for stocks, published, size in events:
        begin = effect_start_sessions(calendar, published) - first_session
        symbol.append(np.repeat(stocks, len(published)))
        start.append(np.tile(begin, len(stocks)))
        effect.append(np.tile(size, len(stocks)))
    return ContextPlan(
        series=series,
        symbol_idx=np.concatenate(symbol).astype(np.int64),
        start_session=np.concatenate(start).astype(np.int64),
        effect_return=np.concatenate(effect),
        vol_scale=vol_scale,
        sensitive={"policy": tuple(int(i) for i in policy_idx), "macro": tuple(int(i) for i in macro_idx)},
    )


def _policy(
    config: ContextConfig, calendar: SessionCalendar, sessions: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Meeting sessions [M] (calendar indices), the rate after each [M] and its change [M]."""
    spacing = config.meeting_every + rng.integers(-3, 4, size=len(sessions) // config.meeting_every + 1)
    offsets = np.cumsum(spacing)
    meetings = sessions[0] + offsets[offsets < len(sessions) - 1]
    steps = rng.choice(np.array([-RATE_STEP, 0.0, RATE_STEP]), size=len(meetings), p=[0.3, 0.4, 0.3])
    rates, changes, rate = np.empty(len(meetings)), np.empty(len(meetings)), config.initial_rate
    for i, step in enumerate(steps):
        new = max(0.0, rate + step)
        rates[i], changes[i], rate = new, new - rate, new
    return meetings, rates, changes


def _month_starts(calendar: SessionCalendar, sessions: np.ndarray) -> np.ndarray:
    """Firsts of the months [P] (datetime64[D]) whose whole month lies within the sessions' dates."""
    days = calendar.sessions[sessions]
    months = np.unique(days.astype("datetime64[M]"))
    return months[1:-1].astype("datetime64[D]")


def _session_on_or_after(calendar: SessionCalendar, dates: np.ndarray) -> np.ndarray:
    return np.searchsorted(calendar.sessions, dates, side="left")


def _activity(
    calendar: SessionCalendar, sessions: np.ndarray, rng: np.random.Generator
) -> tuple[pl.Series, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Monthly periods, first releases, revisions and their release instants (µs); releases after the last session
    are dropped."""
    months = _month_starts(calendar, sessions)
    shocks = rng.standard_normal(len(months))
    noise = 0.3 * rng.standard_normal(len(months))
    value = np.zeros(len(months))
    for i in range(len(months)):
        value[i] = (0.5 * value[i - 1] if i else 0.0) + shocks[i]
    next_month = (months.astype("datetime64[M]") + 1).astype("datetime64[D]")
    first_day = _session_on_or_after(calendar, next_month + 14)
    revision_day = _session_on_or_after(calendar, next_month + 44)
    keep = revision_day <= sessions[-1]
    first_at = calendar.opens[first_day[keep]] - US_PER_HOUR
    revised_at = calendar.opens[revision_day[keep]] - US_PER_HOUR
    periods = _midnights_of_dates(months[keep])
    return periods, value[keep], value[keep] + noise[keep], first_at, revised_at


def _sentiment(
    calendar: SessionCalendar, sessions: np.ndarray, rng: np.random.Generator
) -> tuple[pl.Series, np.ndarray, np.ndarray]:
    """Monthly periods, values and release instants (the last session of the month, 10:00 local time)."""
    months = _month_starts(calendar, sessions)
    value = np.zeros(len(months))
    shocks = rng.standard_normal(len(months))
    for i in range(len(months)):
        value[i] = (0.8 * value[i - 1] if i else 0.0) + shocks[i]
    next_month = (months.astype("datetime64[M]") + 1).astype("datetime64[D]")
    last_session = _session_on_or_after(calendar, next_month) - 1
    released = calendar.opens[last_session] + US_PER_HOUR // 2
    return _midnights_of_dates(months), 100.0 + 5.0 * value, released


def _midnights_of_dates(dates: np.ndarray) -> pl.Series:
    us = dates.astype("datetime64[D]").astype("datetime64[us]").astype(np.int64)
    return pl.Series(us).cast(pl.Datetime("us", "UTC"))


def _rows(name: str, periods: pl.Series, published_us: np.ndarray, values: np.ndarray) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "series": [name] * len(values),
            "period": periods,
            "published_at": pl.Series(np.asarray(published_us, dtype=np.int64)).cast(pl.Datetime("us", "UTC")),
            "value": np.asarray(values, dtype=np.float64),
        }
    )
