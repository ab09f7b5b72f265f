"""Token windows with labels for fine-tuning a token model (seed 001, the token track): the last `window` tokens up to
and including bar t, and one of three labels of the next `horizon` bars, defined point-in-time.

Label sets (`label`), with R the log return of the close over bars t+1 .. t+k and V the realised volatility
sqrt(mean r^2) of their one-bar log returns:

- `direction`: 1 when R > `dead_band`, 0 when R < -`dead_band`, ignored (-1) in between;
- `volatility`: 1 (high) when V is above the median of V over the training samples, else 0 (low);
- `trend`: 1 (trend) when |R| exceeds `trend_threshold` x s x sqrt(k), s the standard deviation of one-bar log
  returns over the training span, else 0 (range);
- `pivots`: not one label but a tag per bar of the window (`tags` [W]): swing high, swing low or none within
  `pivot_span` bars on each side, in hindsight (`pivot_tags`), for pattern tagging with a CRF.

Everything in a sample's window is known at bar t; only the label reads bars after t. The thresholds (the median of
V, s) are fitted on the training samples and stored. A sample whose k bars are not there yet gets -1 (predicted,
never scored). Splits: training samples end their label before `train_end`, validation samples start at `train_end`
and end their label before `val_end`, test samples start at `val_end` (and end before `test_end` when the split
names one: a walk-forward fold). `prices` and `texts` add the price window and the texts known at the decision bar
(samples/token_fusion.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
import torch

from finfusion.data.calendar import to_us
from finfusion.errors import FinfusionError
from finfusion.features.vocabulary import Vocabulary
from finfusion.samples.contract import IGNORE_LABEL, LABEL, ORIGIN_US, SYMBOL_INDEX, TAGS, TOKENS, TOKENS_MASK
from finfusion.samples.token_sequences import TOKEN_SOURCE_DEFAULTS

LABEL_SETS = ("direction", "volatility", "trend", "pivots")
#: Tags of the `pivots` label set, per bar.
PIVOT_TAGS = ("none", "swing_high", "swing_low")
#: `data.prices`: the price window of each token window (samples/token_fusion.py; channels: features/bars.py names).
PRICE_DEFAULTS: dict[str, Any] = {
    "enabled": False,
    "lookback": 32,
    "channels": ["ret_1", "gap", "body", "range_hl", "close_pos", "volume_z_20"],
}
#: `data.texts`: the texts known at each window's decision bar (samples/token_fusion.py; `dataset` None: the bars
#: dataset's name, `encoder` None: the default MiniLM).
TEXT_DEFAULTS: dict[str, Any] = {
    "enabled": False,
    "dataset": None,
    "encoder": None,
    "window": 1,
    "max_texts": 4,
    "scope": "symbol",
    "batch_size": 64,
}
#: The data part of the token-classification family (the tokens dataset and its bars as in token_sequences.py).
CLASSIFICATION_DEFAULTS: dict[str, Any] = {
    **TOKEN_SOURCE_DEFAULTS,
    "vocabulary": None,  # a masked-LM run folder whose vocabulary to use (None: fitted on the training span)
    "min_freq": 5,
    "label": "direction",
    "window": 32,
    "horizon": 5,
    "dead_band": 0.0,
    "trend_threshold": 1.0,
    "pivot_span": 3,
    "split": {"train": 0.7, "val": 0.15},
    "batch_size": 64,
    "num_workers": 0,
    "prices": PRICE_DEFAULTS,
    "texts": TEXT_DEFAULTS,
    "synthetic": {},
}


@dataclass(frozen=True)
class RawWindows:
    """Per sample [N]: `ids` [N, W], `symbol_index`, `origin_us`, `label_end_us` (the last label bar; -1 when the
    bars do not reach it), `forward` R, `volatility` V (NaN when unknown)."""

    ids: np.ndarray
    symbol_index: np.ndarray
    origin_us: np.ndarray
    label_end_us: np.ndarray
    forward: np.ndarray
    volatility: np.ndarray
    tags: np.ndarray


def pivot_tags(high: np.ndarray, low: np.ndarray, span: int) -> np.ndarray:
    """Per bar [n]: 1 when its high is the highest of the bars within `span` on each side (a swing high), 2 when its
    low is the lowest (a swing low; a bar that is both is a swing high), 0 otherwise, -1 for the last `span` bars
    (their later bars are not there yet). Hindsight tags: a bar's tag reads `span` bars after it, so the tags
    describe patterns for analysis and never enter a sample's inputs."""
    n = len(high)
    tags = np.full(n, -1, dtype=np.int64)
    if n < 2 * span + 1:
        return tags
    highs = np.lib.stride_tricks.sliding_window_view(high, 2 * span + 1)
    lows = np.lib.stride_tricks.sliding_window_view(low, 2 * span + 1)
    middle = np.arange(span, n - span)
    is_high = high[middle] >= highs.max(axis=1)
    is_low = low[middle] <= lows.min(axis=1)
    tags[middle] = np.where(is_high, 1, np.where(is_low, 2, 0))
    tags[:span] = 0  # the first bars have too little on their left to be pivots
    return tags


def raw_windows(
    tokens: pl.DataFrame, bars: pl.DataFrame, vocabulary: Vocabulary, symbols: list[str], window: int, horizon: int,
    pivot_span: int = 3,
) -> RawWindows:  # fmt: skip
    """Windows of every bar with `window` tokens of history (module docstring), with the windows' pivot tags."""
    factor = pl.col("adj_factor").fill_null(1.0) if "adj_factor" in bars.columns else pl.lit(1.0)
    columns = [(pl.col(c) * factor).alias(c) for c in ("high", "low") if c in bars.columns]
    prices = bars.select("symbol", "ts", (pl.col("close") * factor).log().alias("log_close"), *columns)
    joined = tokens.join(prices, on=["symbol", "ts"], how="inner").sort("symbol", "ts")
    parts: dict[str, list[np.ndarray]] = {name: [] for name in RawWindows.__dataclass_fields__}
    for (symbol,), rows in joined.group_by("symbol", maintain_order=True):
        if symbol not in symbols or rows.height < window:
            continue
        ids = vocabulary.encode(rows["token"]).numpy()
        log_close, ts = rows["log_close"].to_numpy(), to_us(rows["ts"])
        one_bar = np.diff(log_close, prepend=np.nan)
        at = np.arange(window - 1, rows.height)
        end = at + horizon
        known = end < rows.height
        safe = np.minimum(end, rows.height - 1)
        squares = np.concatenate([[0.0], np.cumsum(np.nan_to_num(one_bar) ** 2)])
        parts["ids"].append(np.lib.stride_tricks.sliding_window_view(ids, window))
        parts["symbol_index"].append(np.full(len(at), symbols.index(str(symbol)), dtype=np.int64))
        parts["origin_us"].append(ts[at])
        parts["label_end_us"].append(np.where(known, ts[safe], -1))
        parts["forward"].append(np.where(known, log_close[safe] - log_close[at], np.nan))
        parts["volatility"].append(np.where(known, np.sqrt((squares[safe + 1] - squares[at + 1]) / horizon), np.nan))
        close = np.exp(log_close)
        high = rows["high"].fill_null(float("nan")).to_numpy() if "high" in rows.columns else close
        low = rows["low"].fill_null(float("nan")).to_numpy() if "low" in rows.columns else close
        tags = pivot_tags(np.where(np.isfinite(high), high, close), np.where(np.isfinite(low), low, close), pivot_span)
        parts["tags"].append(np.lib.stride_tricks.sliding_window_view(tags, window))
    if not parts["ids"]:
        raise FinfusionError(f"no symbol has {window} tokens joined to its bars")
    return RawWindows(**{name: np.concatenate(values) for name, values in parts.items()})


def split_masks(raw: RawWindows, train_end: int, val_end: int, test_end: int | None = None) -> dict[str, np.ndarray]:
    """Training windows end their label before `train_end`, validation windows start at `train_end` and end their
    label before `val_end`, test windows start at `val_end` (and before `test_end` when given)."""
    known = raw.label_end_us >= 0
    test = raw.origin_us >= val_end
    return {
        "train": known & (raw.label_end_us < train_end),
        "val": known & (raw.origin_us >= train_end) & (raw.label_end_us < val_end),
        "test": test if test_end is None else test & (raw.origin_us < test_end),
    }


def fit_thresholds(raw: RawWindows, returns_train: np.ndarray, train: np.ndarray) -> dict[str, float]:
    """The label thresholds fitted on the training samples: the median forward volatility and s."""
    if not train.any():
        raise FinfusionError("the split leaves no training samples (each needs its label before train_end)")
    return {
        "volatility_median": float(np.median(raw.volatility[train])),
        "return_std": float(np.nanstd(returns_train)),
    }


def labels(raw: RawWindows, label: str, options: Mapping[str, Any], thresholds: Mapping[str, float]) -> np.ndarray:
    """The label [N] (int64; -1 ignored or unknown) of each window (module docstring)."""
    if label not in LABEL_SETS[:3]:
        raise FinfusionError(f"data.label: unknown label set '{label}'; known: {', '.join(LABEL_SETS)}")
    known = np.isfinite(raw.forward)
    forward = np.nan_to_num(raw.forward)
    if label == "direction":
        band = float(options["dead_band"])
        out = np.where(forward > band, 1, np.where(forward < -band, 0, IGNORE_LABEL))
    elif label == "volatility":
        out = (np.nan_to_num(raw.volatility) > thresholds["volatility_median"]).astype(np.int64)
    else:
        scale = float(options["trend_threshold"]) * thresholds["return_std"] * np.sqrt(int(options["horizon"]))
        out = (np.abs(forward) > scale).astype(np.int64)
    return np.where(known, out, IGNORE_LABEL).astype(np.int64)


def window_tensors(raw: RawWindows, label: np.ndarray | None, rows: np.ndarray) -> dict[str, torch.Tensor]:
    """The sample-contract tensors of the windows `rows`: tokens [n, W], tokens_mask, symbol_index, origin_us, and
    `label` [n] (None: the windows' pivot `tags` [n, W] instead)."""
    ids = torch.from_numpy(np.ascontiguousarray(raw.ids[rows]).astype(np.int64))
    target = (
        {TAGS: torch.from_numpy(np.ascontiguousarray(raw.tags[rows]))}
        if label is None
        else {LABEL: torch.from_numpy(label[rows])}
    )
    return {
        TOKENS: ids,
        TOKENS_MASK: torch.ones(ids.shape, dtype=torch.bool),
        **target,
        SYMBOL_INDEX: torch.from_numpy(raw.symbol_index[rows]),
        ORIGIN_US: torch.from_numpy(raw.origin_us[rows]),
    }
