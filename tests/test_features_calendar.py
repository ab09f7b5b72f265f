"""Calendar Fourier terms (finfusion.features.calendar_features): local time, daylight saving, values."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import numpy as np
import pytest

from finfusion.features.calendar_features import calendar_feature_names, calendar_features, utc_offsets_us

HOUR_US = 3_600_000_000


def _us(*args: int) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp()) * 1_000_000


def test_names_in_column_order() -> None:
    assert calendar_feature_names(1) == [
        "minute_sin_1", "minute_cos_1", "dow_sin_1", "dow_cos_1", "month_sin_1", "month_cos_1",
    ]  # fmt: skip
    assert len(calendar_feature_names(3)) == 18


def test_offsets_change_at_the_exact_daylight_saving_instant() -> None:
    # New York springs forward at 2020-03-08 07:00 UTC (02:00 EST)
    instants = np.array([_us(2020, 3, 8, 6, 59), _us(2020, 3, 8, 7, 0), _us(2020, 3, 8, 7, 1), _us(2020, 7, 1, 12)])
    np.testing.assert_array_equal(utc_offsets_us(instants, "America/New_York") // HOUR_US, [-5, -4, -4, -4])


def test_offsets_of_a_zone_changing_on_the_half_hour() -> None:
    # St. John's (UTC-3:30) springs forward at 2020-03-08 05:30 UTC, inside a UTC hour
    instants = np.array([_us(2020, 3, 8, 5, 29), _us(2020, 3, 8, 5, 31), _us(2020, 1, 1)])
    minutes = utc_offsets_us(instants, "America/St_Johns") // 60_000_000
    np.testing.assert_array_equal(minutes, [-210, -150, -210])


def test_a_close_at_four_pm_local_is_the_same_minute_in_winter_and_summer() -> None:
    winter, summer = _us(2020, 3, 6, 21), _us(2020, 3, 9, 20)  # Friday 16:00 EST, Monday 16:00 EDT
    got = calendar_features(np.array([winter, summer]), "America/New_York", 2)
    assert got["minute_sin_1"][0] == got["minute_sin_1"][1] == pytest.approx(math.sin(2 * math.pi * 960 / 1440))
    assert got["minute_cos_2"][0] == pytest.approx(math.cos(4 * math.pi * 960 / 1440))
    assert got["dow_sin_1"].tolist() == pytest.approx([math.sin(2 * math.pi * 4 / 7), 0.0])  # Friday = 4, Monday = 0
    assert got["month_cos_1"].tolist() == pytest.approx([math.cos(2 * math.pi * 2 / 12)] * 2)  # March = 2


def test_local_date_decides_day_and_month() -> None:
    # 2021-01-01 02:00 UTC is still Thursday 2020-12-31 in New York
    got = calendar_features(np.array([_us(2021, 1, 1, 2)]), "America/New_York", 1)
    assert got["dow_sin_1"][0] == pytest.approx(math.sin(2 * math.pi * 3 / 7))
    assert got["month_sin_1"][0] == pytest.approx(math.sin(2 * math.pi * 11 / 12))
    assert got["minute_sin_1"][0] == pytest.approx(math.sin(2 * math.pi * (21 * 60) / 1440))


def test_empty_input() -> None:
    assert all(len(v) == 0 for v in calendar_features(np.array([], dtype=np.int64), "UTC", 2).values())
