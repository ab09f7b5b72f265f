"""Split instants from a data part's `split`: dates, or fractions of the distinct sample instants."""

from __future__ import annotations

import numpy as np
import pytest

from finfusion.errors import FinfusionError
from finfusion.samples.portfolio import instant_us
from finfusion.samples.time_split import split_instants


def test_fractions_cut_the_distinct_instants_and_dates_are_taken_as_given() -> None:
    instants = np.repeat(np.arange(10) * 1_000, 3)  # 10 distinct instants, 3 samples each
    assert split_instants({"train": 0.6, "val": 0.2}, instants) == (6_000, 8_000)
    dates = {"train": 0.6, "val": 0.2, "train_end": "2020-01-01", "val_end": "2020-07-01"}
    assert split_instants(dates, instants) == (instant_us("2020-01-01"), instant_us("2020-07-01"))


@pytest.mark.parametrize(
    ("split", "message"),
    [
        ({"train": 0.9, "val": 0.2}, "train \\+ val < 1"),
        ({"train": 0.0, "val": 0.2}, "0 < train"),
        ({"train_end": "2020-07-01", "val_end": "2020-01-01"}, "val_end is before train_end"),
    ],
)
def test_impossible_splits_are_named(split: dict, message: str) -> None:
    with pytest.raises(FinfusionError, match=message):
        split_instants(split, np.arange(10))
