"""A generated market in the files a user has: one price CSV per symbol named in lower case (`aaa.csv`, no symbol
column), one news CSV per symbol without a symbol column (`news_aaa.csv`), and a wide table of market headlines
(`headlines.csv`: Date, Top1, Top2, one row per day).

Planted effect: on about 40% of sessions a symbol's news file has a headline published during the session, either
good ("<SYM> wins a large contract") or bad ("<SYM> faces a costly lawsuit"); the next session's close-to-close
return of that symbol is shifted by +/- `effect`. Other news ("<SYM> shares traded on the exchange") and the market
headlines carry no effect. Returns are otherwise Gaussian with `noise` daily volatility.
"""

from __future__ import annotations

from pathlib import Path

import exchange_calendars
import numpy as np
import polars as pl

SYMBOLS = ("aaa", "bbb", "ccc", "ddd")
MARKET_HEADLINES = ("Stocks mixed in quiet trade", "Oil prices steady", "Investors await data", "Bond yields edge up")


def write_movement_market(
    root: Path, start: str = "2019-01-02", end: str = "2021-06-30", effect: float = 0.025, noise: float = 0.01
) -> Path:
    """Write the files under `root` (see the module docstring) and return `root`."""
    rng = np.random.default_rng(7)
    sessions = exchange_calendars.get_calendar("XNYS").sessions_in_range(start, end)
    days = [session.date() for session in sessions]
    (root / "prices").mkdir(parents=True, exist_ok=True)
    for symbol in SYMBOLS:
        tone = rng.choice([1, -1, 0], size=len(days), p=[0.2, 0.2, 0.6])  # news of day i moves day i + 1
        shift = np.concatenate([[0.0], effect * tone[:-1]])
        close = 40 * np.exp(np.cumsum(rng.normal(0, noise, len(days)) + shift))
        open_ = close * np.exp(rng.normal(0, 0.003, len(days)))
        pl.DataFrame(
            {
                "Date": [day.isoformat() for day in days],
                "Open": open_,
                "High": np.maximum(open_, close) * 1.005,
                "Low": np.minimum(open_, close) * 0.995,
                "Close": close,
                "Volume": rng.integers(10_000, 50_000, len(days)),
            }
        ).write_csv(root / "prices" / f"{symbol}.csv")
        upper = symbol.upper()
        words = {1: f"{upper} wins a large contract", -1: f"{upper} faces a costly lawsuit"}
        neutral = rng.random(len(days)) < 0.3
        rows = [
            (f"{day.isoformat()}T15:00:00Z", words[int(t)] if t else f"{upper} shares traded on the exchange")
            for day, t, filler in zip(days, tone, neutral, strict=True)
            if t or filler
        ]
        pl.DataFrame(rows, schema=["published_at", "headline"], orient="row").write_csv(root / f"news_{symbol}.csv")
    picks = rng.integers(0, len(MARKET_HEADLINES), size=(len(days), 2))
    pl.DataFrame(
        {
            "Date": [day.isoformat() for day in days],
            "Top1": [MARKET_HEADLINES[i] for i in picks[:, 0]],
            "Top2": [f"b'{MARKET_HEADLINES[i]}'" for i in picks[:, 1]],
        }
    ).write_csv(root / "headlines.csv")
    return root
