"""Draw docs/img/tokenizer.png: ~60 synthetic daily bars annotated with their Brooks-style price-action tokens.

Run from the repository root:  .venv/bin/python scripts/draw_tokenizer_chart.py [--out docs/img/tokenizer.png]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import polars as pl
from matplotlib.axes import Axes
from matplotlib.patches import Rectangle

from finfusion.data.sources.synthetic import SyntheticConfig, generate_market
from finfusion.features.brooks import BrooksConfig, tokenize_bars

WINDOW = 60
CONFIG = BrooksConfig()
MARKET = SyntheticConfig(n_symbols=3, start="2019-01-01", end="2019-12-31", seed=11)
UP, DOWN, NEUTRAL = "#2e8b57", "#c0392b", "#7f8c8d"
SHORT_BAR = {
    "bull_small": "+S", "bull_medium": "+M", "bull_large": "+L", "bear_small": "-S", "bear_medium": "-M",
    "bear_large": "-L", "doji": "D", "inside_bull": "i+", "inside_bear": "i-", "inside_doji": "iD",
    "outside_bull": "o+", "outside_bear": "o-", "outside_doji": "oD",
}  # fmt: skip
SHORT = {
    "trend": {"up": "up", "down": "dn", "flat": "--"},
    "bar": SHORT_BAR,
    "swing": {"none": ""},
    "context": {"trend": "T", "range": "R"},
    "event": {"none": "", "bo_up": "BO+", "bo_down": "BO-", "fbo_up": "F+", "fbo_down": "F-"},
}
ROWS = ("trend", "bar", "swing", "context", "event")
HIGH_SWINGS = {"SH", "HH", "LH", "DT"}
GOOD = {"up", "bo_up", "fbo_down", *(v for v in SHORT_BAR if v.endswith("bull") or v.startswith("bull"))}
BAD = {"down", "bo_down", "fbo_up", *(v for v in SHORT_BAR if v.endswith("bear") or v.startswith("bear"))}


def pick_window(frame: pl.DataFrame) -> pl.DataFrame:
    """The WINDOW consecutive bars (after the warm-up) of one symbol with the most swings and events."""
    best, best_score = frame.head(WINDOW), -1
    for symbol in frame["symbol"].unique().sort():
        rows = frame.filter(pl.col("symbol") == symbol)
        busy = (rows["swing"] != "none").cast(pl.Int64) + 2 * (rows["event"].str.starts_with("bo")).cast(pl.Int64)
        for start in range(40, rows.height - WINDOW, 5):
            score = int(busy[start : start + WINDOW].sum())
            if score > best_score:
                best, best_score = rows.slice(start, WINDOW), score
    return best


def draw_candles(ax: Axes, window: pl.DataFrame) -> None:
    for x, row in enumerate(window.iter_rows(named=True)):
        colour = UP if row["close"] > row["open"] else DOWN if row["close"] < row["open"] else NEUTRAL
        ax.vlines(x, row["low"], row["high"], color=colour, linewidth=1)
        bottom, height = min(row["open"], row["close"]), abs(row["close"] - row["open"])
        ax.add_patch(Rectangle((x - 0.32, bottom), 0.64, max(height, 1e-9), color=colour))
    ax.plot(
        range(window.height), window["ema"], color="#2c3e50", linewidth=1, alpha=0.6, label=f"EMA {CONFIG.ema_length}"
    )


def draw_swings(ax: Axes, window: pl.DataFrame, pad: float) -> None:
    """Each swing label sits at its pivot bar; a dotted arrow runs to the bar that confirmed (emitted) it."""
    k = CONFIG.swing_k
    for t, row in enumerate(window.iter_rows(named=True)):
        label, pivot = row["swing"], t - k
        if label == "none" or pivot < 0:
            continue
        high = label in HIGH_SWINGS
        price = window["high"][pivot] + pad if high else window["low"][pivot] - pad
        ax.annotate(
            label, xy=(t, price), xytext=(pivot, price), ha="center", va="bottom" if high else "top", fontsize=9,
            fontweight="bold", color=DOWN if high else UP,
            arrowprops={"arrowstyle": "->", "linestyle": ":", "color": "#555555", "shrinkA": 8, "shrinkB": 0},
        )  # fmt: skip


def draw_events(ax: Axes, window: pl.DataFrame, pad: float) -> None:
    marks = {"bo_up": ("^", UP), "bo_down": ("v", DOWN), "fbo_up": ("x", DOWN), "fbo_down": ("x", UP)}
    for t, row in enumerate(window.iter_rows(named=True)):
        if row["event"] in marks:
            marker, colour = marks[row["event"]]
            up = row["event"] in ("bo_up", "fbo_down")
            y = row["low"] - 2.4 * pad if up else row["high"] + 2.4 * pad
            ax.scatter([t], [y], marker=marker, color=colour, s=40, zorder=3)


def draw_token_strip(ax: Axes, window: pl.DataFrame) -> None:
    """One row per component, one column per bar, with short value codes."""
    for r, name in enumerate(ROWS):
        for x, value in enumerate(window[name]):
            text = SHORT[name].get(value, value)
            colour = UP if value in GOOD else DOWN if value in BAD else "black"
            ax.text(
                x, r, text, ha="center", va="center", fontsize=6.5, rotation=90 if len(text) > 2 else 0, color=colour
            )
        ax.axhline(r + 0.5, color="#dddddd", linewidth=0.6)
    ax.set_yticks(range(len(ROWS)), ROWS, fontsize=8)
    ax.set_ylim(len(ROWS) - 0.5, -0.5)
    ax.set_xlim(-1, window.height)
    ax.set_xticks([])
    ax.set_facecolor("#fafafa")


def annotate_examples(ax: Axes, window: pl.DataFrame) -> None:
    """Full composite tokens of a few notable bars, in boxes above the chart."""
    picks: list[int] = []
    for wanted in ("bo_up", "bo_down", "fbo_up", "fbo_down"):
        hits = [i for i, e in enumerate(window["event"]) if e == wanted and i > 3]
        if hits and len(picks) < 2:
            picks.append(hits[0])
    swings = [i for i, s in enumerate(window["swing"]) if s in ("HL", "LH", "HH", "LL") and i not in picks]
    picks += swings[len(swings) // 2 : len(swings) // 2 + 1]
    top = ax.get_ylim()[1]
    for n, i in enumerate(sorted(picks)):
        token = window["token"][i].replace("|", " | ")
        ax.annotate(
            token, xy=(i, window["high"][i]), xytext=(0.02 + 0.33 * n, 1.04 + 0.07 * (n % 2)),
            textcoords="axes fraction", fontsize=7.5, family="monospace",
            bbox={"boxstyle": "round", "fc": "#fffbe6", "ec": "#b7950b"},
            arrowprops={"arrowstyle": "->", "color": "#b7950b"}, annotation_clip=False,
        )  # fmt: skip
    ax.set_ylim(ax.get_ylim()[0], top)


def draw(out: Path) -> None:
    bars = generate_market(MARKET).bars
    tokens = tokenize_bars(bars, CONFIG)
    ema = bars.sort("symbol", "ts").select(
        "symbol", "ts", pl.col("close").mul(pl.col("adj_factor")).ewm_mean(span=CONFIG.ema_length, adjust=False)
        .over("symbol").alias("ema"),
    )  # fmt: skip
    adjusted = bars.select(
        "symbol", "ts", *[(pl.col(c) * pl.col("adj_factor")).alias(c) for c in ("open", "high", "low", "close")]
    )
    frame = tokens.join(adjusted, on=["symbol", "ts"]).join(ema, on=["symbol", "ts"]).sort("symbol", "ts")
    window = pick_window(frame)
    pad = float((window["high"] - window["low"]).mean()) * 0.25

    fig, (chart, strip) = plt.subplots(
        2, 1, figsize=(14, 8.5), gridspec_kw={"height_ratios": [3, 1.25], "hspace": 0.04}, sharex=True
    )
    draw_candles(chart, window)
    draw_swings(chart, window, pad)
    draw_events(chart, window, pad)
    chart.set_xlim(-1, window.height)
    chart.set_ylim(float(window["low"].min()) - 4 * pad, float(window["high"].max()) + 4 * pad)
    chart.set_ylabel("price (split-adjusted)")
    chart.legend(loc="lower right", fontsize=8)
    chart.grid(alpha=0.2)
    annotate_examples(chart, window)
    draw_token_strip(strip, window)
    first, last = window["ts"][0].date(), window["ts"][-1].date()
    fig.suptitle(
        f"Brooks-style tokens of {window['symbol'][0]} (synthetic, daily, {first} to {last}): swing labels sit at the "
        f"pivot bar, arrows point to the bar that emits them ({CONFIG.swing_k} bars later)\n"
        "markers: ^/v breakout up/down, x failed breakout; strip: +/- bull/bear, S/M/L size, D doji, i inside, "
        "o outside, T trend, R range",
        fontsize=9.5,
        y=0.995,
    )
    fig.subplots_adjust(left=0.06, right=0.99, top=0.84, bottom=0.03)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/img/tokenizer.png"))
    draw(parser.parse_args().out)


if __name__ == "__main__":
    main()
