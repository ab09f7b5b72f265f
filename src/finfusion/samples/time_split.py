"""The split instants of a data part's `split`: dates {train_end, val_end}, or fractions {train, val} of the
distinct sample instants (the instant at each fraction starts the next span)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from finfusion.errors import FinfusionError
from finfusion.samples.portfolio import instant_us


def split_instants(split: Mapping[str, Any], instants_us: np.ndarray) -> tuple[int, int]:
    """(train_end, val_end) UTC µs (module docstring); raises FinfusionError for impossible fractions or dates."""
    if split.get("train_end") is not None:
        bounds = (instant_us(split["train_end"]), instant_us(split.get("val_end") or split["train_end"]))
    else:
        train, val = float(split["train"]), float(split["val"])
        if not (0 < train < 1 and 0 <= val < 1 and train + val < 1):
            raise FinfusionError(f"data.split: need 0 < train, 0 <= val and train + val < 1, got {train} and {val}")
        instants = np.unique(instants_us)
        if instants.size == 0:
            raise FinfusionError("data.split: there are no samples to split")
        bounds = (int(instants[int(len(instants) * train)]), int(instants[int(len(instants) * (train + val))]))
    if bounds[1] < bounds[0]:
        raise FinfusionError("data.split: val_end is before train_end")
    return bounds
