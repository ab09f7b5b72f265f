"""Explanations of an order-book run's decision (`finfusion explain RUN --at SYMBOL:DATE`, orderbook runs: TransLOB,
the LSTM, the logistic regression).

Shapes: T snapshots in the window (0 = oldest, the decision's event last), L levels (level 1 the best), 4 fields per
level (ask price, ask size, bid price, bid size; z-scored as in samples/orderbook.py).

The decisions are events, many a day: `--at SYMBOL:DATE` explains the symbol's last decision of that day (the UTC
date of its event) in the span; `decision` states its event's instant to the microsecond.

The explained output is the probability of the predicted class of the mid-price move over the next k events (softmax
of the model's logits [B, 3]: down, stationary, up).

- Integrated Gradients (evaluation/explain.py) over `book` [T, L, 4] from the all-zero book (every field at its
  training mean; an empty level is 0 too): `heat` [T, 4] the attributions summed over the levels, per snapshot and
  field; `totals` the attributions summed per level ("level 1" the best), which add up to the output minus the
  baseline's;
- permutation importance per field (ask prices, ask sizes, bid prices, bid sizes: every level and snapshot of the
  field together) over the span's labelled decisions: the rise in the multi-class Brier score when the field is
  shuffled across decisions.

No attention: TransLOB's encoder layers do not return their maps, and the baselines have none.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import torch
from omegaconf import DictConfig
from torch import Tensor

from finfusion.evaluation.explain import Batch, Group, integrated_gradients
from finfusion.evaluation.explanation import Explanation, instant
from finfusion.families.base import FamilyData
from finfusion.families.class_explain import BRIER, brier_permutation, decision_sample
from finfusion.samples.contract import BOOK
from finfusion.samples.windows import collate

FIELDS = ("ask price", "ask size", "bid price", "bid size")
CLASSES = ("down", "stationary", "up")


def explain_decision(
    model: Any, data: FamilyData, cfg: DictConfig, symbol: str, day: date, span: str, steps: int = 64
) -> Explanation:
    """Explain `model`'s call at `symbol`'s last decision on `day` in `span` of the run's data `data` (FamilyData of
    the order-book family; see the module docstring)."""
    windows = getattr(data, span)  # samples/orderbook.py BookWindows
    events = windows.days
    item = decision_sample(
        symbol, day, data.state["symbols"], events.symbol_index[windows.at], events.ts_us[windows.at]
    )
    batch = collate([windows[item]])
    horizon = int(data.extra["options"]["horizon"])
    model.eval()

    def probabilities(b: Batch) -> Tensor:
        return torch.softmax(model(b)["logits"], dim=-1)

    with torch.no_grad():
        predicted = int(probabilities(batch)[0].argmax())
    attributions = integrated_gradients(lambda b: probabilities(b)[:, predicted], batch, [BOOK], steps)
    book = attributions.values[BOOK][0]  # [T, L, 4]
    groups = [Group(name, BOOK, (f,)) for f, name in enumerate(FIELDS)]
    return Explanation.of(
        attributions,
        book.sum(dim=1).numpy(),
        [],
        symbol=symbol,
        decision=instant(int(events.ts_us[windows.at[item]])).isoformat(),
        model=str(cfg.model.name),
        explained=f"P({CLASSES[predicted]}), the probability of the predicted mid-price move over {horizon} events",
        totals={f"level {level + 1}": float(book[:, level].sum()) for level in range(book.shape[1])},
        channels=list(FIELDS),
        attention=None,
        permutation=brier_permutation(probabilities, windows, windows.label, groups),
        permutation_measure=BRIER,
    )
