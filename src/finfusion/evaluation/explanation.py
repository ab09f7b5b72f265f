"""One explained decision, laid out the same way for every family (`finfusion explain RUN --at SYMBOL:DATE`): the
JSON stored in RUN/explanations/, printed by the command and rendered by the report's Explanations section and the
results page, whatever the family.

- `explained`: what the explained output is (a forecast, a class probability, a portfolio weight), in words;
  `output` and `baseline_output` its value at the input and at the all-zero baseline.
- `totals`: the Integrated Gradients summed per attributed input (e.g. the price inputs, the texts); they sum to
  `output - baseline_output` up to `completeness_gap`.
- `channels` [C], `channel_attributions` [C] and `heat` [L][C]: the IG of the explained symbol's own price inputs
  per lookback step (0 = oldest) and channel (empty for a model that reads no prices); `heat_rows` [L], where the
  rows are named by more than their step, names them (e.g. each position's token; None: lookback steps only).
- `texts`: one row per text the decision saw (its IG summed over the embedding width, its occlusion effect, the
  model's attention on it where the model has attention, whether it is a planted item of the synthetic market).
- `attention`: the model's attention maps summarised by name (None: the model has none).
- `permutation` and `permutation_measure`: the rise of the measure when a feature group is shuffled over the span.

Also what every family's explanation needs around that: the `--at` parser, finding the decision of a symbol on a day
among a span's decisions, and the planted items of the synthetic market.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from finfusion.data.lake import Lake
from finfusion.errors import FinfusionError

if TYPE_CHECKING:
    from finfusion.evaluation.explain import Attributions


@dataclass(frozen=True)
class TextRow:
    slot: int
    id: str
    published_at: str
    title: str
    integrated_gradients: float
    occlusion: float
    attention: float | None
    planted: bool


@dataclass(frozen=True)
class Explanation:
    """One decision explained (see the module docstring)."""

    symbol: str
    decision: str
    model: str
    explained: str
    output: float
    baseline_output: float
    completeness_gap: float
    totals: dict[str, float]
    channels: list[str]
    channel_attributions: list[float]
    heat: list[list[float]]
    texts: list[TextRow]
    attention: dict[str, float] | None
    permutation: dict[str, float]
    permutation_measure: str
    planted_rank_first: bool | None = None
    heat_rows: list[str] | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def of(cls, attributions: Attributions, heat: np.ndarray, texts: list[TextRow], **fields: Any) -> Explanation:
        """The explanation of the first sample of `attributions`: its output, baseline output and completeness gap,
        the heat map `heat` [L, C] with its per-channel sums, the `texts` and whether a planted one ranks first; the
        other fields as given."""
        return cls(
            output=float(attributions.output[0]),
            baseline_output=float(attributions.baseline_output[0]),
            completeness_gap=float(attributions.delta[0]),
            channel_attributions=heat.sum(axis=0).tolist(),
            heat=heat.tolist(),
            texts=texts,
            planted_rank_first=planted_first(texts),
            **fields,
        )


def instant(us: int) -> datetime:
    """UTC microseconds as an aware datetime."""
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=int(us))


def parse_at(text: str) -> tuple[str, date]:
    """'SYMBOL:YYYY-MM-DD' -> (symbol, date); anything else is one clear error."""
    symbol, sep, day = text.rpartition(":")
    if not sep or not symbol:
        raise FinfusionError(f"--at: '{text}' is not SYMBOL:YYYY-MM-DD")
    try:
        return symbol, datetime.strptime(day, "%Y-%m-%d").date()
    except ValueError:
        raise FinfusionError(f"--at: '{day}' in '{text}' is not a date YYYY-MM-DD") from None


def check_symbol(symbol: str, universe: Sequence[str]) -> int:
    """The position of `symbol` in the run's universe; a one-line error naming a few of its symbols otherwise."""
    if symbol not in universe:
        raise FinfusionError(f"--at: symbol '{symbol}' is not in the run's universe ({', '.join(universe[:10])} ...)")
    return list(universe).index(symbol)


def decision_on(symbol: str, day: date, items: Sequence[int], days: Sequence[date]) -> int:
    """The last of `items` (the positions of `symbol`'s decisions in a span, in time order) whose decision falls on
    `day` (`days`, one per item); a one-line error giving the span's first and last decision days otherwise."""
    matches = [int(item) for item, on in zip(items, days, strict=True) if on == day]
    if not matches:
        first, last = (min(days), max(days)) if days else (None, None)
        raise FinfusionError(f"--at: {symbol} has no decision on {day} in this span (its decisions: {first} .. {last})")
    return matches[-1]


def planted_ids(lake: Lake, dataset: str, symbol: str) -> set[str]:
    """Ids of the texts that moved `symbol` in the synthetic market's ground truth (none for other datasets)."""
    if not lake.files("events", dataset):
        return set()
    events = lake.read("events", dataset)
    return set(events.filter(pl.col("symbol") == symbol)["text_id"].to_list())


def planted_first(texts: Sequence[TextRow]) -> bool | None:
    """Whether a planted item has the largest |IG| among the decision's texts (None: no planted item among them)."""
    if not any(text.planted for text in texts):
        return None
    top = max(texts, key=lambda text: abs(text.integrated_gradients))
    return top.planted
