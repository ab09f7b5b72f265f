"""Signal files for the backtester (finfusion.evaluation.signals): session matching and the target-weight grid."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from finfusion.errors import DataValidationError
from finfusion.evaluation.signals import ScoreSizing, Signals, align_signals, target_weights

BARS = pl.DataFrame({"ts": [datetime(2024, 1, 2, 21, tzinfo=UTC), datetime(2024, 1, 3, 21, tzinfo=UTC)]})


def weights_at(ts: date | datetime) -> Signals:
    """A signal file with one weight of A at `ts`."""
    return Signals(pl.DataFrame({"ts": [ts], "symbol": ["A"], "weight": [0.5]}), "weight", Path("signals.csv"))


def test_a_date_matches_its_session_close_and_a_timestamp_its_bar() -> None:
    assert align_signals(weights_at(date(2024, 1, 3)), BARS, "America/New_York")["ts"].to_list() == [BARS["ts"][1]]
    naive_utc = weights_at(datetime(2024, 1, 2, 21))
    assert align_signals(naive_utc, BARS, "America/New_York")["ts"].to_list() == [BARS["ts"][0]]
    with pytest.raises(DataValidationError, match="no bar"):
        align_signals(weights_at(date(2024, 1, 4)), BARS, "America/New_York")


def test_scores_become_top_k_weights_and_unpriced_assets_get_zero() -> None:
    ts = BARS["ts"].to_list()
    keyed = pl.DataFrame({"symbol": ["A", "B", "C"], "score": [3.0, 1.0, 2.0], "ts": [ts[1]] * 3})
    prices = np.array([[1.0, 1.0, 1.0], [1.0, 1.0, np.nan]])
    grid = target_weights(keyed, "score", ts, ["A", "B", "C"], prices, ScoreSizing(top_k=1))
    assert np.isnan(grid[0]).all()  # no decision: positions drift
    np.testing.assert_array_equal(grid[1], [0.5, -0.5, 0.0])
