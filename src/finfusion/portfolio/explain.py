"""Explanations of a trained portfolio model's weight for one symbol at one decision (`finfusion explain RUN --at
SYMBOL:DATE`, portfolio runs).

Shapes: A assets, L lookback bars, F input channels, T texts of the window, D text dim.

The explained output is the symbol's weight in the top-k portfolio (training/portfolio_loss.py) with the names held
at the decision fixed: w = logit_s / sum_{j held} |logit_j| (the top-k selection is a step, which Integrated
Gradients cannot cross; holding it fixed keeps the weight smooth and equal to the decided one at the input). A symbol
not held has weight 0 whatever its inputs nearby: its score (logit), which ranked it out, is explained instead. The
model's own discrete choices (TimesNet's periods) are held at the decision's too (`Capabilities.held_choices`).

- Integrated Gradients (evaluation/explain.py) over `past` [A, L, F] (the symbol's own [L, F] as the heat map; the
  other assets' inputs as one total, since the weight depends on them through the cross-asset attention and the
  normalisation) and, when the model reads news, over each text of the window (samples/portfolio_texts.py: the news
  bins rebuilt from their texts, so that a bin's attribution splits exactly among its texts), from all-zero inputs;
- each text's occlusion effect (the decision without that text), and whether it is a planted item of the synthetic
  market (one that moved any asset of the universe);
- permutation importance over the span's decisions with a whole horizon: the rise in the negative Sharpe ratio of
  the top-k portfolio over the horizon (the training objective's main term) when an input channel (of every asset),
  or the news, is shuffled across decisions.
"""

from __future__ import annotations

from collections.abc import Callable
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
    Batch,
    Group,
    Output,
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
from finfusion.portfolio.inputs import PortfolioInputs, span_bounds, window_config
from finfusion.samples.contract import FUTURE, NEWS_COVERAGE, NEWS_EMB, NEWS_MASK, PAST
from finfusion.samples.portfolio import PortfolioData, PortfolioDataset
from finfusion.samples.portfolio_texts import WindowTexts, binned_news, window_texts
from finfusion.samples.windows import collate
from finfusion.training.portfolio_loss import (
    portfolio_returns,
    selected_weights,
    sharpe,
    top_k_abs_weights,
    top_k_mask,
)

#: Batch keys of the window's texts (explanations only): vectors [B, T, D], present [B, T], bar [B, T], mentions
#: [B, T, A].
TEXTS, PRESENT, BAR, MENTIONS = "window_texts", "window_texts_present", "window_texts_bar", "window_texts_mentions"
#: The Sharpe ratio's epsilon in the permutation measure (training/portfolio_loss.py `sharpe`).
SHARPE_EPS = 1e-8


def span_decisions(data: PortfolioData, cfg: Any, span: str, require_future: bool) -> PortfolioDataset:
    """Every decision bar of `span` (`span_bounds`), with a whole horizon after it when `require_future`."""
    config = window_config(cfg.data, require_future=require_future, stride=1)
    return PortfolioDataset(data, config).split(*span_bounds(cfg.data, span), purge=False)


def _with_texts(batch: Batch, texts: WindowTexts) -> Batch:
    """The batch [1, ...] with the window's texts under `TEXTS`, `PRESENT`, `BAR`, `MENTIONS`."""
    return {
        **batch,
        TEXTS: torch.from_numpy(texts.vectors)[None],
        PRESENT: torch.ones(1, len(texts.bar), dtype=torch.bool),
        BAR: torch.from_numpy(texts.bar)[None],
        MENTIONS: torch.from_numpy(texts.mentions)[None],
    }


def _logits(model: Any, lookback: int, rebuild: bool) -> Callable[[Batch], Tensor]:
    """The model's logits [B, A], with the news bins rebuilt from the batch's texts when `rebuild`."""

    def logits(batch: Batch) -> Tensor:
        if rebuild:
            batch = {**batch, **binned_news(batch[TEXTS], batch[PRESENT], batch[BAR], batch[MENTIONS], lookback)}
        return model(batch)["logits"]

    return logits


def _check_rebuilt(batch: Batch, lookback: int) -> None:
    """The news bins rebuilt from the window's texts must be the sample's (else the texts are not the ones the bins
    were made of)."""
    rebuilt = binned_news(batch[TEXTS], batch[PRESENT], batch[BAR], batch[MENTIONS], lookback)
    same = (
        torch.equal(rebuilt[NEWS_MASK], batch[NEWS_MASK])
        and torch.equal(rebuilt[NEWS_COVERAGE], batch[NEWS_COVERAGE])
        and torch.allclose(rebuilt[NEWS_EMB], batch[NEWS_EMB], atol=1e-5)
    )
    if not same:
        raise FinfusionError(
            "the window's texts do not rebuild its news bins (samples/portfolio_texts.py disagrees with the binning "
            "of samples/portfolio.py)"
        )


def _weight_or_score(logits: Callable[[Batch], Tensor], batch: Batch, asset: int, k: int) -> tuple[bool, Output]:
    """Whether the asset is among the k names held at `batch`, and the explained output [B]: its weight with those
    names held, or else its logit."""
    with torch.no_grad():
        held = top_k_mask(logits(batch), k)  # [1, A]
    if bool(held[0, asset]):
        return True, lambda b: selected_weights(logits(b), held)[:, asset]
    return False, lambda b: logits(b)[:, asset]


def _text_rows(
    texts: WindowTexts, stored: pl.DataFrame, per_text: np.ndarray, occluded: np.ndarray, planted: set[str]
) -> list[TextRow]:
    """One row per window text (slot = its position), titled from the `stored` texts, with its IG [T] and occlusion
    effect [T]."""
    titles = stored.select("id", pl.coalesce("title", "body").fill_null("").alias("title"))
    named = texts.rows.with_row_index("slot").join(titles, on="id", how="left", maintain_order="left")
    return [
        TextRow(
            slot=int(text["slot"]),
            id=str(text["id"]),
            published_at=text["published_at"].isoformat(),
            title=str(text["title"]),
            integrated_gradients=float(per_text[text["slot"]]),
            occlusion=float(occluded[text["slot"]]),
            attention=None,
            planted=text["id"] in planted,
        )
        for text in named.iter_rows(named=True)
    ]


def explain_weight(
    model: Any,
    data: PortfolioData,
    inputs: PortfolioInputs,
    cfg: Any,
    symbol: str,
    day: date,
    span: str,
    steps: int = 64,
) -> Explanation:
    """Explain `model`'s weight of `symbol` at its decision on `day` in `span` (see the module docstring)."""
    decisions = span_decisions(data, cfg, span, require_future=False)
    asset = check_symbol(symbol, data.symbols)
    days = [instant(us).date() for us in decisions.origins_us]
    item = decision_on(symbol, day, list(range(len(decisions))), days)
    lookback, k = decisions.config.lookback, int(cfg.task.k)
    batch = collate([decisions[item]])
    reads_news = NEWS_EMB in model.required_inputs()
    texts = None
    if reads_news:
        if inputs.texts is None or inputs.embeddings is None:
            raise FinfusionError("the model reads news but the run's data has no texts")
        texts = window_texts(data, inputs.texts, inputs.embeddings, int(decisions.positions[item]), lookback)
        batch = _with_texts(batch, texts)
        _check_rebuilt(batch, lookback)
    model.eval()
    held, output = _weight_or_score(_logits(model, lookback, reads_news), batch, asset, k)
    explained = (
        f"weight of {symbol} in the top-{k} portfolio (the names held at the decision fixed)"
        if held
        else f"score (logit) of {symbol}, which is not among the {k} names held (its weight is 0)"
    )
    keys = [PAST, TEXTS] if texts is not None and len(texts.bar) else [PAST]
    with model.held_choices(batch):
        attributions = integrated_gradients(output, batch, keys, steps=steps)
    past = attributions.values[PAST][0]  # [A, L, F]
    heat = past[asset].numpy()  # [L, F]
    totals = {
        f"{symbol} price inputs": float(heat.sum()),
        "other assets' price inputs": float(past.sum() - past[asset].sum()),
    }
    rows: list[TextRow] = []
    if TEXTS in keys and texts is not None and inputs.texts is not None:
        totals["texts"] = float(attributions.total(TEXTS)[0])
        per_text = attributions.values[TEXTS][0].sum(dim=-1).numpy()  # [T]
        occluded = text_occlusion(output, batch, PRESENT)[0].numpy()  # [T]
        lake, dataset = Lake(cfg.data.get("lake")), str(cfg.data.texts)
        planted = set().union(*(planted_ids(lake, dataset, name) for name in data.symbols))
        rows = _text_rows(texts, inputs.texts, per_text, occluded, planted)
    return Explanation.of(
        attributions,
        heat,
        rows,
        symbol=symbol,
        decision=instant(decisions.origins_us[item]).isoformat(),
        model=str(cfg.model.name),
        explained=explained,
        totals=totals,
        channels=list(data.columns),
        attention=None,
        permutation=span_permutation(model, data, cfg, span, reads_news),
        permutation_measure="negative Sharpe ratio of the top-k portfolio",
    )


def span_permutation(model: Any, data: PortfolioData, cfg: Any, span: str, reads_news: bool) -> dict[str, float]:
    """Permutation importance per input channel (of every asset together) and for the news over the last
    `PERMUTATION_SAMPLES` decisions of `span` with a whole horizon: the rise in the negative Sharpe ratio of the
    top-k portfolio over the horizon, averaged over decisions."""
    decisions = span_decisions(data, cfg, span, require_future=True)
    count = len(decisions)
    if count < 2:
        return {}
    batch = collate([decisions[item] for item in range(max(0, count - PERMUTATION_SAMPLES), count)])
    k = int(cfg.task.k)
    groups = [Group(name, PAST, (c,)) for c, name in enumerate(data.columns)]
    if reads_news:
        groups.append(Group("news", NEWS_EMB, None, (NEWS_MASK, NEWS_COVERAGE)))

    def negative_sharpe(shuffled: Batch) -> Tensor:
        weights = top_k_abs_weights(model(shuffled)["logits"], k)
        return -sharpe(portfolio_returns(weights, shuffled[FUTURE]), SHARPE_EPS).mean()

    return permutation_importance(negative_sharpe, batch, groups)
