"""Exchange sessions (from exchange_calendars), bar frequencies, and point-in-time mapping of timestamps to sessions.

All instants are handled as int64 microseconds since the epoch, UTC, so lookups are vectorised `searchsorted` calls.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from finfusion.errors import FinfusionError

if TYPE_CHECKING:
    import pandas as pd

US_PER_MINUTE = 60_000_000
#: exchange_calendars only covers about 20 years unless given `start=`; we always ask for this range or wider.
DEFAULT_FIRST_YEAR = 1990
DEFAULT_LAST_YEAR = 2030

_FREQ_RE = re.compile(r"^(\d+)(m|min|h|d)$")


@dataclass(frozen=True)
class Frequency:
    """A bar frequency: `minutes` is None for daily (one bar per session)."""

    label: str
    minutes: int | None

    @property
    def is_daily(self) -> bool:
        return self.minutes is None


def parse_freq(freq: str) -> Frequency:
    """Parse '1m', '3m', '5m', '30m', '1h' or '1d' (one bar per session)."""
    match = _FREQ_RE.match(freq.strip().lower())
    if not match:
        raise FinfusionError(f"unknown frequency '{freq}': use e.g. 1m, 5m, 30m, 1h or 1d")
    count, unit = int(match.group(1)), match.group(2)
    if count <= 0:
        raise FinfusionError(f"frequency '{freq}' must be positive")
    if unit == "d":
        if count != 1:
            raise FinfusionError(f"frequency '{freq}': only 1d (one bar per session) is supported for days")
        return Frequency("1d", None)
    minutes = count * 60 if unit == "h" else count
    return Frequency(f"{minutes}m" if unit != "h" else f"{count}h", minutes)


class SessionCalendar:
    """Sessions of one exchange between two years, with open/close instants (half days included).

    `name` is an exchange_calendars code such as 'XNYS', or '24/7' for markets that never close (sessions are UTC days).
    """

    def __init__(self, name: str, first_year: int = DEFAULT_FIRST_YEAR, last_year: int = DEFAULT_LAST_YEAR) -> None:
        import exchange_calendars as xcals  # 0.5 s to import: only code that builds a calendar pays for it

        try:
            cal = xcals.get_calendar(name, start=f"{first_year}-01-01", end=f"{last_year}-12-31")
        except (xcals.errors.InvalidCalendarName, KeyError) as exc:
            raise FinfusionError(f"unknown exchange calendar '{name}' (e.g. XNYS, XNAS, XLON, 24/7)") from exc
        schedule = cal.schedule
        self.name = name
        self.tz = str(cal.tz)
        self.first_year = first_year
        self.last_year = last_year
        self.sessions = schedule.index.values.astype("datetime64[D]")
        self.opens = _utc_us(schedule["open"])
        self.closes = _utc_us(schedule["close"])

    def __len__(self) -> int:
        return len(self.sessions)

    def session_index_of_dates(self, dates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For calendar dates [N] (datetime64[D]) return (session index [N], is_session [N])."""
        dates = dates.astype("datetime64[D]")
        idx = np.searchsorted(self.sessions, dates)
        clipped = np.minimum(idx, len(self.sessions) - 1)
        is_session = (idx < len(self.sessions)) & (self.sessions[clipped] == dates)
        return clipped, is_session

    def first_actionable_session(self, ts_us: np.ndarray) -> np.ndarray:
        """Index of the first session in which something known at `ts_us` [N] can be acted on.

        That is the first session whose close is strictly after the instant: before or during a session it is that
        session; at or after the close, or on a non-trading day, it is the next one.
        """
        idx = np.searchsorted(self.closes, ts_us, side="right")
        if len(idx) and idx.max() >= len(self.closes):
            raise FinfusionError(f"instant after the last session of calendar {self.name} ({self.last_year})")
        return idx

    def session_of_bar_end(self, ts_us: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For intraday bar-end instants [N]: (session index [N], inside [N]) with inside = open < ts <= close."""
        idx = np.searchsorted(self.closes, ts_us, side="left")
        clipped = np.minimum(idx, len(self.closes) - 1)
        inside = (idx < len(self.closes)) & (self.opens[clipped] < ts_us) & (ts_us <= self.closes[clipped])
        return clipped, inside

    def expected_bar_ends(self, freq: Frequency, first_us: int, last_us: int) -> np.ndarray:
        """Every bar-end instant of `freq` in [first_us, last_us] (sessions' closes for daily bars)."""
        lo = np.searchsorted(self.closes, first_us, side="left")
        hi = np.searchsorted(self.closes, last_us, side="right")
        if freq.is_daily:
            return self.closes[lo:hi]
        step = freq.minutes * US_PER_MINUTE
        ends = []
        for open_us, close_us in zip(self.opens[lo : hi + 1], self.closes[lo : hi + 1], strict=False):
            session_ends = np.arange(open_us + step, close_us + step, step, dtype=np.int64)
            session_ends[-1] = min(session_ends[-1], close_us)
            ends.append(session_ends)
        if not ends:
            return np.empty(0, dtype=np.int64)
        all_ends = np.concatenate(ends)
        return all_ends[(all_ends >= first_us) & (all_ends <= last_us)]

    def session_dates(self, idx: np.ndarray) -> np.ndarray:
        return self.sessions[idx]


def _utc_us(column: pd.Series) -> np.ndarray:
    return column.dt.tz_convert(None).to_numpy().astype("datetime64[us]").astype(np.int64)


@lru_cache(maxsize=16)
def get_calendar(
    name: str = "XNYS", first_year: int = DEFAULT_FIRST_YEAR, last_year: int = DEFAULT_LAST_YEAR
) -> SessionCalendar:
    """A cached `SessionCalendar`; widen the years for data outside 1990-2030."""
    return SessionCalendar(name, first_year, last_year)


def calendar_covering(name: str, years: tuple[int, int]) -> SessionCalendar:
    """The cached calendar covering at least the given (first, last) years."""
    return get_calendar(name, min(DEFAULT_FIRST_YEAR, years[0]), max(DEFAULT_LAST_YEAR, years[1] + 1))


def to_us(series: pl.Series) -> np.ndarray:
    """A UTC datetime Series as int64 microseconds."""
    return series.dt.cast_time_unit("us").dt.replace_time_zone(None).to_physical().to_numpy()


def from_us(values: np.ndarray, name: str) -> pl.Series:
    """int64 microseconds [N] as a UTC datetime Series."""
    return pl.Series(name, values, dtype=pl.Int64).cast(pl.Datetime("us")).dt.replace_time_zone("UTC")


def session_date_series(calendar: SessionCalendar, idx: np.ndarray, name: str = "session") -> pl.Series:
    import pandas as pd

    return pl.Series(name, pd.to_datetime(calendar.session_dates(idx)).date, dtype=pl.Date)
