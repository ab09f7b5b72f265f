"""Sessions, frequencies and the point-in-time mapping of a timestamp to the first session it can be acted on."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from finfusion.data.calendar import get_calendar, parse_freq, to_us
from finfusion.errors import FinfusionError

XNYS = get_calendar("XNYS")


def us(*args: int) -> int:
    return int(to_us(pl.Series([datetime(*args, tzinfo=UTC)]))[0])


def session_of(ts_us: int) -> str:
    return str(XNYS.sessions[XNYS.first_actionable_session(np.array([ts_us]))[0]])


@pytest.mark.parametrize(
    ("instant", "session"),
    [
        ((2014, 11, 26, 13, 0), "2014-11-26"),  # before the open (14:30 UTC): that session
        ((2014, 11, 26, 18, 0), "2014-11-26"),  # during the session
        ((2014, 11, 26, 21, 0), "2014-11-28"),  # exactly at the close: next session (Thanksgiving skipped)
        ((2014, 11, 26, 23, 0), "2014-11-28"),  # after the close
        ((2014, 11, 27, 15, 0), "2014-11-28"),  # on a holiday
        ((2014, 11, 28, 18, 30), "2014-12-01"),  # after the half day's early close (18:00 UTC), Friday -> Monday
        ((2014, 11, 29, 12, 0), "2014-12-01"),  # weekend
    ],
)
def test_text_maps_to_first_actionable_session(instant: tuple[int, ...], session: str) -> None:
    assert session_of(us(*instant)) == session


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 200 * 24 * 60), min_size=2, max_size=30), st.integers(0, 200 * 24 * 60))
def test_mapping_is_point_in_time(minutes: list[int], cut: int) -> None:
    """Changing or adding texts after t never changes the session of a text published at or before t."""
    base = us(2014, 1, 1, 0, 0)
    instants = np.array(sorted(minutes), dtype=np.int64) * 60_000_000 + base
    t = base + cut * 60_000_000
    mapped = XNYS.first_actionable_session(instants)
    future = instants > t
    perturbed = instants.copy()
    perturbed[future] += 7 * 24 * 3600 * 1_000_000
    remapped = XNYS.first_actionable_session(perturbed)
    assert np.array_equal(mapped[~future], remapped[~future])
    assert np.all(XNYS.closes[mapped] > instants)  # the session it maps to has not closed yet at publication


def test_half_day_close_and_calendar_range() -> None:
    idx, is_session = XNYS.session_index_of_dates(np.array(["2014-11-28", "2014-11-27"], dtype="datetime64[D]"))
    assert is_session.tolist() == [True, False]
    assert XNYS.closes[idx[0]] == us(2014, 11, 28, 18, 0)
    early = get_calendar("XNYS", 1950, 2030)
    assert str(early.sessions[0]).startswith("1950-01-02")  # exchange_calendars needs start= for old data


def test_frequencies() -> None:
    assert parse_freq("5m").minutes == 5
    assert parse_freq("1h").minutes == 60
    assert parse_freq("1D").is_daily
    for bad in ("2d", "0m", "fortnight"):
        with pytest.raises(FinfusionError):
            parse_freq(bad)


def test_expected_intraday_bar_ends_respect_half_days() -> None:
    ends = XNYS.expected_bar_ends(parse_freq("30m"), us(2014, 11, 28, 0, 0), us(2014, 11, 28, 23, 0))
    assert len(ends) == 7  # 14:30 -> 18:00 UTC is 3.5 hours
    assert ends[-1] == us(2014, 11, 28, 18, 0)


def test_unknown_calendar() -> None:
    with pytest.raises(FinfusionError, match="unknown exchange calendar"):
        get_calendar("NOPE")
