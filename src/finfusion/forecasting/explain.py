"""Explanations of a trained forecaster's decision for one symbol and session (`finfusion explain RUN --at S:DATE`)
and, on the synthetic market, how often the planted news item is the text that moved a forecast most.

For the window of (symbol, date) in a span: Integrated Gradients of the explained output (the model's deterministic
cumulative forecast of the first target over the horizon, normalised units) per input channel and time step of
`past` [L, C] and per text (`text_emb`, summed over its width), each text's occlusion effect (the output with and
without it), the Q-Former queries' attention over register / price tokens / each text for models that have one, and
permutation importance per channel and for the texts over the span's windows (against the realised cumulative
return). The attribution math is evaluation/explain.py and the layout evaluation/explanation.py; this module finds
the window, its texts and the planted items.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np
import polars as pl
import torch
from torch import Tensor

from finfusion.data.lake import Lake
from finfusion.errors import FinfusionError
from finfusion.evaluation.explain import (
    PERMUTATION_SAMPLES,
    Group,
    integrated_gradients,
    permutation_importance,
    text_occlusion,
)
from finfusion.evaluation.explanation import (
    Explanation,
    TextRow,
    check_symbol,
    decision_on,
    instant,
    planted_ids,
)
from finfusion.forecasting.data import ExperimentData, data_options
from finfusion.forecasting.predict import span_windows
from finfusion.samples.contract import FUTURE, PAST, TEXT_EMB, TEXT_MASK
from finfusion.samples.text_windows import TextWindowDataset
from finfusion.samples.windows import collate

#: What the explained output is (`Capabilities.explained_output` of a forecaster).
EXPLAINED = "cumulative forecast of the first target over the horizon, normalised units"


def _window_of(windows: Any, symbol: str, day: date) -> int:
    """The position of the window of `symbol` whose decision bar falls on `day` (UTC date; the day's last one)."""
    position = check_symbol(symbol, windows.panel.symbols)
    ours = np.flatnonzero(windows.index[:, 0] == position)
    return decision_on(symbol, day, ours.tolist(), [instant(windows.origins_us[k]).date() for k in ours])


def _texts_of(windows: TextWindowDataset, item: int, lake: Lake, dataset: str) -> tuple[np.ndarray, pl.DataFrame]:
    """The slots [n] of window `item`'s texts and their rows (id, published_at, title), in slot order."""
    mask = windows[item][TEXT_MASK].numpy()
    slots = np.flatnonzero(mask)
    ids = windows.text_ids(item)
    if len(ids) != len(slots):
        raise FinfusionError(f"window {item}: {len(ids)} text ids for {len(slots)} text slots")
    stored = lake.read("text", dataset).filter(pl.col("id").is_in(ids))
    rows = stored.select("id", "published_at", pl.coalesce("title", "body").fill_null("").alias("title"))
    order = pl.DataFrame({"id": ids, "slot": slots.tolist()})
    return slots, order.join(rows, on="id", how="left")


def _texts_source(cfg: Any) -> tuple[Lake, str]:
    """The lake and the texts dataset of the run's data part."""
    options = data_options(cfg.data)
    return Lake(options["lake"]), str(options["texts"]["dataset"] or options["dataset"])


def _attention(model: Any, batch: dict[str, Tensor], slots: np.ndarray) -> dict[str, float] | None:
    """Mean attention (over layers and queries) on the register, all price tokens, and each text slot."""
    if not hasattr(model, "attention_maps"):
        return None
    with torch.no_grad():
        maps = model.attention_maps(batch)
    weights = maps["weights"][0].mean(dim=(0, 1))  # [K]
    n_ts = int(maps["ts_tokens"])
    shares = {"register": float(weights[0]), "price tokens": float(weights[1 : 1 + n_ts].sum())}
    for slot in slots:
        shares[f"text slot {int(slot)}"] = float(weights[1 + n_ts + int(slot)])
    return shares


def _realised(batch: dict[str, Tensor]) -> Tensor:
    """The realised cumulative first target over the horizon [B] (normalised units, as the explained output)."""
    return batch[FUTURE][..., 0].sum(dim=1)


def explain_decision(
    model: Any, data: ExperimentData, cfg: Any, symbol: str, day: date, span: str = "test", steps: int = 64
) -> Explanation:
    """Explain the decision of `model` for `symbol` on `day` in `span` (see the module docstring)."""
    windows = span_windows(data, span)
    if len(windows) == 0:
        raise FinfusionError(f"the {span} span has no windows")
    item = _window_of(windows, symbol, day)
    batch = collate([windows[item]])
    output = model.explained_output
    model.eval()
    has_texts = isinstance(windows, TextWindowDataset) and TEXT_EMB in model.required_inputs()
    keys = [PAST, TEXT_EMB] if has_texts else [PAST]
    attributions = integrated_gradients(output, batch, keys, steps=steps)
    heat = attributions.values[PAST][0].numpy()  # [L, C]
    channels = list(windows.config.inputs)
    totals = {"price inputs": float(attributions.total(PAST)[0])}
    texts: list[TextRow] = []
    attention = None
    if has_texts:
        lake, dataset = _texts_source(cfg)
        slots, rows = _texts_of(windows, item, lake, dataset)
        per_text = attributions.values[TEXT_EMB][0].sum(dim=-1).numpy()  # [N]
        occluded = text_occlusion(output, batch)[0].numpy()
        attention = _attention(model, batch, slots)
        planted = planted_ids(lake, dataset, symbol)
        for row in rows.iter_rows(named=True):
            slot = int(row["slot"])
            published = row["published_at"]
            texts.append(
                TextRow(
                    slot=slot,
                    id=str(row["id"]),
                    published_at="" if published is None else published.isoformat(),
                    title=str(row["title"] or ""),
                    integrated_gradients=float(per_text[slot]),
                    occlusion=float(occluded[slot]),
                    attention=None if attention is None else attention.get(f"text slot {slot}"),
                    planted=row["id"] in planted,
                )
            )
        totals["texts"] = float(attributions.total(TEXT_EMB)[0])
    permutation = span_permutation(model, windows, channels, has_texts)
    return Explanation.of(
        attributions,
        heat,
        texts,
        symbol=symbol,
        decision=instant(windows.origins_us[item]).isoformat(),
        model=str(cfg.model.name),
        explained=EXPLAINED,
        totals=totals,
        channels=channels,
        attention=attention,
        permutation=permutation,
        permutation_measure="MSE",
    )


def span_permutation(model: Any, windows: Any, channels: list[str], has_texts: bool) -> dict[str, float]:
    """Permutation importance per channel (and for the texts) over the span's last `PERMUTATION_SAMPLES` windows
    that have their whole future: the rise in squared error of the explained output against the realised cumulative
    first target."""
    count = len(windows)
    items = list(range(max(0, count - PERMUTATION_SAMPLES), count))
    samples = [windows[k] for k in items]
    complete = [s for s in samples if FUTURE in s and bool(torch.isfinite(s[FUTURE]).all())]
    if len(complete) < 2:
        return {}
    batch = collate(complete)
    groups = [Group(name, PAST, (c,)) for c, name in enumerate(channels)]
    if has_texts:
        groups.append(Group("texts", TEXT_EMB, None, (TEXT_MASK,)))
    realised = _realised(batch)

    def squared_error(shuffled: dict[str, Tensor]) -> Tensor:
        return ((model.explained_output(shuffled) - realised) ** 2).mean()

    return permutation_importance(squared_error, batch, groups)


@dataclass(frozen=True)
class PlantedRate:
    """Over the span's windows that saw a planted item: how many, and in how many a planted item has the largest
    |IG| among the window's texts (and the same by occlusion)."""

    windows: int
    first_by_integrated_gradients: int
    first_by_occlusion: int
    #: the rate a random ranking of each window's texts would reach (mean share of planted items among the texts)
    chance: float
    #: P(a random ranking puts a planted item first in at least `first_by_integrated_gradients` windows)
    p_value: float

    def rate(self, count: int) -> float:
        return count / self.windows if self.windows else float("nan")


def planted_rate(model: Any, data: ExperimentData, cfg: Any, span: str = "test", steps: int = 32) -> PlantedRate:
    """`PlantedRate` over every window of `span` whose texts include a planted item of its symbol with at least one
    other text beside it (a lone text ranks first trivially)."""
    windows = span_windows(data, span)
    if not isinstance(windows, TextWindowDataset):
        raise FinfusionError("the run reads no texts: there is no planted item to rank")
    lake, dataset = _texts_source(cfg)
    planted = {symbol: planted_ids(lake, dataset, symbol) for symbol in windows.panel.symbols}
    if not any(planted.values()):
        raise FinfusionError(f"dataset '{dataset}' has no events table: no planted items to rank")
    chosen: list[tuple[int, np.ndarray]] = []
    for k in range(len(windows)):
        ids = windows.text_ids(k)
        symbol = windows.panel.symbols[int(windows.index[k, 0])]
        flags = np.array([i in planted[symbol] for i in ids], dtype=bool)
        if len(ids) >= 2 and flags.any():
            chosen.append((k, flags))
    if not chosen:
        return PlantedRate(0, 0, 0, float("nan"), float("nan"))
    by_ig = by_occlusion = 0
    model.eval()
    for start in range(0, len(chosen), 64):
        part = chosen[start : start + 64]
        batch = collate([windows[k] for k, _ in part])
        per_text = integrated_gradients(model.explained_output, batch, [PAST, TEXT_EMB], steps=steps)
        scores = per_text.values[TEXT_EMB].sum(dim=-1).abs()  # [B, N]
        occluded = text_occlusion(model.explained_output, batch).abs()
        mask = batch[TEXT_MASK].bool()
        for row, (_, flags) in enumerate(part):
            slots = torch.nonzero(mask[row]).flatten()
            by_ig += bool(flags[int(torch.argmax(scores[row, slots]))])
            by_occlusion += bool(flags[int(torch.argmax(occluded[row, slots]))])
    shares = np.array([flags.mean() for _, flags in chosen])
    return PlantedRate(len(chosen), by_ig, by_occlusion, float(shares.mean()), at_least(shares, by_ig))


def at_least(shares: np.ndarray, count: int) -> float:
    """P(X >= count) for X the number of successes of independent trials with success probabilities `shares` (the
    Poisson-binomial distribution, by convolution)."""
    distribution = np.array([1.0])
    for share in shares:
        distribution = np.convolve(distribution, [1.0 - share, share])
    return float(distribution[count:].sum())
