"""A seeded synthetic limit-order book with a planted short-horizon order-flow-imbalance effect, written as LOBSTER
files (so that it enters the lake through the same reader and checks as real data: data/sources/lobster.py).

Per event t of a day: a persistent latent order flow f_t = phi f_{t-1} + e_t tilts which side the event lands on
(limit orders added to the bid and market orders lifting the ask when f_t > 0, the mirror when f_t < 0); every event
changes the best-level sizes, so the book shows the imbalance. The planted effect: with probability `move_prob` an
event moves the mid price by one tick, up with probability sigmoid(`effect` x OFI_t), OFI_t the order-flow imbalance
(bid-size additions minus ask-size additions at the best levels) of the last `window` events divided by its typical
size; without the effect (`effect` 0) the moves are coin flips and nothing in the book predicts them. When the
price moves, the book shifts by one tick and the new levels get fresh sizes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np

from finfusion.data.sources.lobster import PRICE_SCALE, LobsterDay

OPEN_SECONDS = 9.5 * 3600
CLOSE_SECONDS = 16 * 3600


@dataclass(frozen=True)
class LobConfig:
    """Settings of the synthetic order book (see the module docstring)."""

    levels: int = 10
    events: int = 20_000
    tick: float = 0.01
    start_price: float = 100.0
    phi: float = 0.995
    move_prob: float = 0.04
    effect: float = 2.0
    window: int = 50
    seed: int = 0


def simulate_day(config: LobConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Messages [N, 6] and book rows [N, 4 x levels] of one day, in LOBSTER units (prices x 10,000)."""
    n, levels = config.events, config.levels
    ticks = round(config.start_price / config.tick)
    ask = rng.integers(50, 500, size=levels).astype(float)
    bid = rng.integers(50, 500, size=levels).astype(float)
    flow, recent = 0.0, np.zeros(config.window)
    shocks, sides, sizes = rng.standard_normal(n), rng.random(n), rng.integers(1, 100, size=n).astype(float)
    moves, ups = rng.random(n), rng.random(n)
    times = OPEN_SECONDS + np.sort(rng.random(n)) * (CLOSE_SECONDS - OPEN_SECONDS)
    messages = np.zeros((n, 6))
    book = np.zeros((n, 4 * levels))
    for t in range(n):
        flow = config.phi * flow + np.sqrt(1 - config.phi**2) * shocks[t]
        buying = sides[t] < 0.5 + 0.35 * np.tanh(flow)
        size = sizes[t]
        if buying:  # a bid added at the best level, or the best ask lifted
            if t % 2:
                bid[0] += size
                event, direction, imbalance = 1, 1, size
            else:
                taken = min(size, ask[0] - 1)
                ask[0] -= taken
                event, direction, imbalance = 4, -1, taken
        elif t % 2:
            ask[0] += size
            event, direction, imbalance = 1, -1, -size
        else:
            taken = min(size, bid[0] - 1)
            bid[0] -= taken
            event, direction, imbalance = 4, 1, -taken
        recent[t % config.window] = imbalance
        if moves[t] < config.move_prob:
            signal = recent.sum() / (50.0 * np.sqrt(config.window))
            up = ups[t] < 1.0 / (1.0 + np.exp(-config.effect * signal))
            ticks += 1 if up else -1
            if up:  # the book shifts one tick up: a fresh best bid level, the best ask level gone
                bid = np.concatenate([[rng.integers(50, 500)], bid[:-1]])
                ask = np.concatenate([ask[1:], [rng.integers(50, 500)]])
            else:
                ask = np.concatenate([[rng.integers(50, 500)], ask[:-1]])
                bid = np.concatenate([bid[1:], [rng.integers(50, 500)]])
        best_ask = (ticks + 1) * config.tick
        best_bid = (ticks - 1) * config.tick
        ask_prices = (best_ask + config.tick * np.arange(levels)) * PRICE_SCALE
        bid_prices = (best_bid - config.tick * np.arange(levels)) * PRICE_SCALE
        row = book[t]
        row[0::4], row[1::4], row[2::4], row[3::4] = np.round(ask_prices), ask, np.round(bid_prices), bid
        price = row[0] if direction == -1 else row[2]
        messages[t] = (times[t], event, t + 1, size, price, direction)
    return messages, book


def write_lobster_days(folder: Path, symbol: str, days: list[date], config: LobConfig) -> list[LobsterDay]:
    """Simulate each day and write its LOBSTER message and orderbook files into `folder` (names as LOBSTER's)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, day in enumerate(days):
        rng = np.random.default_rng([config.seed, i])
        messages, book = simulate_day(config, rng)
        stem = f"{symbol}_{day.isoformat()}_34200000_57600000"
        message_path = folder / f"{stem}_message_{config.levels}.csv"
        book_path = folder / f"{stem}_orderbook_{config.levels}.csv"
        np.savetxt(message_path, messages, delimiter=",", fmt=["%.9f", "%d", "%d", "%d", "%d", "%d"])
        np.savetxt(book_path, book, delimiter=",", fmt="%d")
        out.append(LobsterDay(message_path, book_path, symbol, day))
    return out
