"""The StockNet (ACL18) layout: `price/raw/<TICKER>.csv` (Yahoo daily bars) and `tweet/preprocessed/<TICKER>/<DATE>`
(JSON lines of tweets with keys text (token list), created_at, user_id_str).

Each tweet line is one post of its ticker's folder: the same tweet filed under two tickers is two posts, as in the
benchmark (106,338 posts in the public copy). `source_ref` keeps the file and line of each post.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import polars as pl

from finfusion.data.ingest import BarOptions, TextOptions, prepare_bar_ingest, prepare_text_ingest, write_prepared
from finfusion.data.lake import Lake
from finfusion.data.report import IngestReport
from finfusion.data.schema import SOURCE_FILE, SOURCE_ROW
from finfusion.data.sources.csv_parquet import BAR_ALIASES, read_raw
from finfusion.errors import DataValidationError
from finfusion.progress import track

TWEET_TIME_FORMAT = "%a %b %d %H:%M:%S %z %Y"
SOURCE = "stocknet"


def is_stocknet(root: Path) -> bool:
    return (root / "price" / "raw").is_dir() and (root / "tweet" / "preprocessed").is_dir()


def read_tweets(root: Path) -> pl.DataFrame:
    """All posts as a raw text frame [N rows]: published_at (UTC), symbols, body, author, source_ref, _file, _row."""
    base = root / "tweet" / "preprocessed"
    records: dict[str, list] = {
        k: [] for k in ("published_at", "symbols", "body", "author", "source_ref", "_file", "_row")
    }
    tickers = sorted(p for p in base.iterdir() if p.is_dir())
    for ticker_dir in track(tickers, "reading StockNet tweets"):
        for day_file in sorted(p for p in ticker_dir.iterdir() if p.is_file()):
            _read_day_file(day_file, ticker_dir.name, root, records)
    return pl.DataFrame(
        records,
        schema={
            "published_at": pl.Datetime("us", "UTC"),
            "symbols": pl.List(pl.String),
            "body": pl.String,
            "author": pl.String,
            "source_ref": pl.String,
            SOURCE_FILE: pl.String,
            SOURCE_ROW: pl.Int64,
        },
    )


def _read_day_file(path: Path, ticker: str, root: Path, records: dict[str, list]) -> None:
    relative = path.relative_to(root).as_posix()
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise DataValidationError("not valid UTF-8", file=path, row=line) from exc
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            post = json.loads(line)
            tokens = post["text"]
            created = datetime.strptime(post["created_at"], TWEET_TIME_FORMAT)
        except json.JSONDecodeError as exc:
            raise DataValidationError(f"not a JSON object ({exc.msg})", file=path, row=number) from exc
        except KeyError as exc:
            raise DataValidationError("missing key", file=path, row=number, field=str(exc.args[0])) from exc
        except (TypeError, ValueError) as exc:
            raise DataValidationError(f"bad created_at ({exc})", file=path, row=number, field="created_at") from exc
        if not isinstance(tokens, list) or not tokens or not all(isinstance(t, str) for t in tokens):
            raise DataValidationError("expected a non-empty list of tokens", file=path, row=number, field="text")
        records["published_at"].append(created)
        records["symbols"].append([ticker])
        records["body"].append(" ".join(tokens))
        records["author"].append(str(post.get("user_id_str") or "") or None)
        records["source_ref"].append(f"{relative}:{number}")
        records["_file"].append(str(path))
        records["_row"].append(number)


def ingest_stocknet(lake: Lake, root: Path, dataset: str = "stocknet") -> list[IngestReport]:
    """Prices and tweets of a StockNet copy into bars/<dataset>/1d and text/<dataset>."""
    if not is_stocknet(root):
        raise DataValidationError("not a StockNet copy: expected price/raw and tweet/preprocessed folders", file=root)
    raw, rename, unmapped = read_raw(root / "price" / "raw", aliases=BAR_ALIASES, symbol_from_filename=True)
    bar_options = BarOptions(
        dataset=dataset,
        freq="1d",
        missing_bars="drop",
        source=SOURCE,
        notes=["StockNet price/raw rows whose values are all 'null' are dropped and counted"],
        unmapped=unmapped,
    )
    tweets = read_tweets(root)
    text_options = TextOptions(dataset=dataset, source=SOURCE, notes=["one post per line of tweet/preprocessed"])
    parts = [prepare_bar_ingest(raw, bar_options, rename), prepare_text_ingest(tweets, text_options)]
    return write_prepared(lake, parts)
