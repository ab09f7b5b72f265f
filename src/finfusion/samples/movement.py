"""Movement labels with a dead band: up / down over the next h bars, ignored when the move is too small to call.

The move of a window is the simple return of the adjusted close from its decision bar to h bars later,
exp(sum of the h next one-bar log returns) - 1. It is up (1) if the move > `up_threshold`, down (0) if the move <
-`down_threshold`, and `IGNORE_LABEL` (-1) inside the dead band or when a future return is missing. StockNet uses
up_threshold = 0.0055 and down_threshold = 0.005 (+0.55% / -0.5%), the defaults here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from finfusion.errors import FinfusionError
from finfusion.samples.contract import IGNORE_LABEL, LABEL
from finfusion.samples.windows import LOG_RETURN, Instant, WindowDataset

UP, DOWN = 1, 0


@dataclass(frozen=True)
class MovementConfig:
    """Label horizon h (bars, at most the windows' horizon), the dead band and the log-return column."""

    horizon: int = 1
    up_threshold: float = 0.0055
    down_threshold: float = 0.005
    column: str = LOG_RETURN

    def __post_init__(self) -> None:
        if self.horizon < 1:
            raise FinfusionError("movement config: horizon must be at least 1")
        if self.up_threshold < 0 or self.down_threshold < 0:
            raise FinfusionError("movement config: thresholds are magnitudes and must be >= 0")


def movement_labels(moves: np.ndarray, up_threshold: float, down_threshold: float) -> np.ndarray:
    """Labels [M] int64 of simple returns `moves` [M]: 1 above up_threshold, 0 below -down_threshold, else -1."""
    labels = np.full(moves.shape, IGNORE_LABEL, dtype=np.int64)
    labels[moves > up_threshold] = UP
    labels[moves < -down_threshold] = DOWN
    return labels


def window_moves(windows: WindowDataset, horizon: int, column: str = LOG_RETURN) -> np.ndarray:
    """Simple return [M] over the `horizon` bars after each window's decision bar (NaN if any is missing)."""
    col = int(windows.panel.column_index([column])[0])
    out = np.full(len(windows), np.nan)
    for row, (s, i) in enumerate(windows.index):
        values = windows.panel.values[s][i + 1 : i + 1 + horizon, col]
        if len(values) == horizon:
            out[row] = np.expm1(values.sum())
    return out


class MovementDataset(Dataset[dict[str, torch.Tensor]]):
    """The samples of `windows` plus `label` [] int64 (see the module docstring); `labels` [M] holds them all."""

    def __init__(self, windows: WindowDataset, config: MovementConfig | None = None) -> None:
        self.config = config or MovementConfig()
        if self.config.horizon > windows.config.horizon:
            raise FinfusionError(
                f"movement horizon {self.config.horizon} exceeds the windows' horizon {windows.config.horizon}"
            )
        self.windows = windows
        moves = window_moves(windows, self.config.horizon, self.config.column)
        self.labels = movement_labels(moves, self.config.up_threshold, self.config.down_threshold)

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, item: int) -> dict[str, torch.Tensor]:
        return {**self.windows[item], LABEL: torch.tensor(int(self.labels[item]), dtype=torch.int64)}

    def subset(self, keep: np.ndarray) -> MovementDataset:
        """The samples selected by `keep` (bool mask [M] or positions)."""
        return MovementDataset(self.windows.subset(keep), self.config)

    def split(self, start: Instant | None = None, end: Instant | None = None) -> MovementDataset:
        """Samples whose origin lies in [start, end), sharing the windows' normaliser."""
        return MovementDataset(self.windows.split(start, end), self.config)

    def without_ignored(self) -> MovementDataset:
        """Only the samples outside the dead band."""
        return self.subset(self.labels != IGNORE_LABEL)
