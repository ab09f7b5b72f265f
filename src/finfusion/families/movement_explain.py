"""Explanations of a trained movement classifier's decision (`finfusion explain RUN --at SYMBOL:DATE`, movement runs).

For the target (symbol, day) of a split (samples/daily_movement.py; L lag days, C price channels, N tweets per day, D
text dim), the explained output is the probability of the class the model predicts (softmax of its `logits` [B, 2]):

- Integrated Gradients (evaluation/explain.py) per lag day and price channel of `past` [L, C] (models that read
  prices) and per tweet of `text_emb` [L, N, D], summed over D (models that read tweets), from all-zero inputs;
- each tweet's occlusion effect (its mask off);
- the model's attention (`lag_attention`, models/movement/): the temporal attention over the lag days (`step k`,
  0 = oldest, the target day's step last) and each tweet's share of its day's attention;
- permutation importance over the split's targets: the rise in the Brier score of P(up) against the label when a
  price channel, or the tweets (with their masks and ages), are shuffled across the targets.

Tweets are named by the texts the samples were built from (`DailyMovementSamples.texts`): the tweet of a slot is its
symbol's text with the slot's embedding row published closest to the decision instant minus the slot's age.
"""

from __future__ import annotations

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
from finfusion.samples.contract import LABEL, PAST, PAST_MASK, TEXT_AGE, TEXT_EMB, TEXT_MASK
from finfusion.samples.daily_movement import PRICE_CHANNELS, DailyMovementDataset, DailyMovementSamples

_US_PER_DAY = 86_400_000_000
CLASSES = ("down", "up")


def _target_of(samples: DailyMovementSamples, dataset: DailyMovementDataset, symbol: str, day: date) -> int:
    """The position in `dataset` of `symbol`'s target on `day`."""
    position = check_symbol(symbol, samples.symbols)
    ours = np.flatnonzero(samples.symbol_index[dataset.rows] == position)
    days = samples.targets["day"].gather(dataset.rows[ours]).to_list()
    return decision_on(symbol, day, ours.tolist(), days)


def _tweets(samples: DailyMovementSamples, row: int, symbol: str) -> pl.DataFrame:
    """The tweets of target `row`: [slot (l * N + n), id, published_at, title], in slot order."""
    index = samples.tweet_index[row]  # [L, N]
    steps, slots = np.nonzero(index >= 0)
    age = samples.tweet_age[row][steps, slots].astype(np.float64)
    wanted = pl.DataFrame(
        {
            "slot": steps * index.shape[1] + slots,
            "row": index[steps, slots],
            "published_us": samples.origin_us[row] - np.round(age * _US_PER_DAY).astype(np.int64),
        }
    )
    texts = samples.texts.filter(pl.col("symbol") == symbol).select(
        "row", "id", "published_at", "title", pl.col("published_at").dt.epoch("us").alias("stored_us")
    )
    matched = (
        wanted.join(texts, on="row", how="left")
        .with_columns((pl.col("stored_us") - pl.col("published_us")).abs().alias("gap"))
        .sort("slot", "gap", nulls_last=True)
        .unique("slot", keep="first", maintain_order=True)
    )
    if matched["id"].null_count():
        raise FinfusionError(f"{symbol}: a tweet slot of the decision has no text in the run's text dataset")
    return matched.select("slot", "id", "published_at", "title")


def _tweet_rows(
    tweets: pl.DataFrame, per_tweet: np.ndarray, occluded: np.ndarray, shares: np.ndarray | None, planted: set[str]
) -> list[TextRow]:
    """One row per tweet (`_tweets`) with its IG [L, N], occlusion effect [L, N] and attention [L, N] (None: the
    model has none), read at its slot l * N + n."""
    per_tweet, occluded = per_tweet.reshape(-1), occluded.reshape(-1)
    shares = None if shares is None else shares.reshape(-1)
    return [
        TextRow(
            slot=int(tweet["slot"]),
            id=str(tweet["id"]),
            published_at=tweet["published_at"].isoformat(),
            title=str(tweet["title"]),
            integrated_gradients=float(per_tweet[tweet["slot"]]),
            occlusion=float(occluded[tweet["slot"]]),
            attention=None if shares is None else float(shares[tweet["slot"]]),
            planted=tweet["id"] in planted,
        )
        for tweet in tweets.iter_rows(named=True)
    ]


def _attention(model: Any, batch: Batch) -> tuple[dict[str, float] | None, np.ndarray | None]:
    """The temporal attention per present lag step ({"step k": share}) and the tweets' attention [L, N] (None where
    the model has none)."""
    if not hasattr(model, "lag_attention"):
        return None, None
    with torch.no_grad():
        maps = model.lag_attention(batch)
    present = batch[PAST_MASK][0].numpy()
    steps = {f"step {k}": float(w) for k, w in enumerate(maps["steps"][0].tolist()) if present[k]}
    return steps, maps["texts"][0].numpy() if "texts" in maps else None


def _probability(model: Any, label: int) -> Output:
    """The explained output: P(class `label`) [B] of the model's logits."""

    def output(batch: Batch) -> Tensor:
        return torch.softmax(model(batch)["logits"], dim=-1)[:, label]

    return output


def explain_target(
    model: Any, samples: DailyMovementSamples, cfg: Any, symbol: str, day: date, split: str, steps: int = 64
) -> Explanation:
    """Explain `model`'s movement call for `symbol` on `day` (a target of `split`; see the module docstring)."""
    dataset = samples.dataset(split)
    item = _target_of(samples, dataset, symbol, day)
    row = int(dataset.rows[item])
    batch = dataset.__getitems__([item])
    model.eval()
    with torch.no_grad():
        predicted = int(model(batch)["logits"][0].argmax())
    output = _probability(model, predicted)
    reads = model.required_inputs()
    keys = [key for key in (PAST, TEXT_EMB) if key in reads]
    attributions = integrated_gradients(output, batch, keys, steps=steps)
    totals = {"price inputs" if key == PAST else "tweets": float(attributions.total(key)[0]) for key in keys}
    heat = attributions.values[PAST][0].numpy() if PAST in keys else np.zeros((0, 0))  # [L, C]
    attention, tweet_attention = _attention(model, batch)
    texts: list[TextRow] = []
    if TEXT_EMB in keys:
        per_tweet = attributions.values[TEXT_EMB][0].sum(dim=-1).numpy()  # [L, N]
        occluded = text_occlusion(output, batch)[0].numpy()  # [L, N]
        planted = planted_ids(Lake(cfg.data.get("lake")), str(cfg.data.dataset), symbol)
        texts = _tweet_rows(_tweets(samples, row, symbol), per_tweet, occluded, tweet_attention, planted)
    return Explanation.of(
        attributions,
        heat,
        texts,
        symbol=symbol,
        decision=instant(samples.origin_us[row]).isoformat(),
        model=str(cfg.model.name),
        explained=f"P({CLASSES[predicted]}), the probability of the predicted class",
        totals=totals,
        channels=list(PRICE_CHANNELS) if PAST in keys else [],
        attention=attention,
        permutation=split_permutation(model, dataset, keys),
        permutation_measure="Brier score",
    )


def split_permutation(model: Any, dataset: DailyMovementDataset, keys: list[str]) -> dict[str, float]:
    """Permutation importance per price channel and for the tweets (those of `keys` the model reads) over the last
    `PERMUTATION_SAMPLES` targets of the split: the rise in the Brier score of P(up) against the label."""
    count = len(dataset)
    if count < 2:
        return {}
    batch = dataset.__getitems__(list(range(max(0, count - PERMUTATION_SAMPLES), count)))
    labels = batch[LABEL].float()
    up = _probability(model, 1)
    groups = [Group(name, PAST, (c,)) for c, name in enumerate(PRICE_CHANNELS)] if PAST in keys else []
    if TEXT_EMB in keys:
        groups.append(Group("tweets", TEXT_EMB, None, (TEXT_MASK, TEXT_AGE)))

    def brier(shuffled: Batch) -> Tensor:
        return ((up(shuffled) - labels) ** 2).mean()

    return permutation_importance(brier, batch, groups)
