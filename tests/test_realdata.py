"""The public datasets in ../shared/data through the CLI: counts and date ranges (skipped when absent)."""

from __future__ import annotations

import csv
import math
from collections.abc import Callable
from datetime import date
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from typer.testing import Result

from finfusion.data.catalog import Catalog
from finfusion.data.lake import Lake
from finfusion.features.vocabulary import Vocabulary, vocabulary_path
from tests.conftest import KDD17, STOCKNET, requires

pytestmark = pytest.mark.realdata


def raw_ranges(folder: Path) -> dict[str, tuple[date, date]]:
    """First and last date of each CSV's non-null rows, read independently with the csv module."""
    ranges = {}
    for path in sorted(folder.glob("*.csv")):
        with open(path, newline="") as handle:
            dates = [date.fromisoformat(r["Date"]) for r in csv.DictReader(handle) if r["Close"] != "null"]
        ranges[path.stem] = (min(dates), max(dates))
    return ranges


@requires(STOCKNET)
def test_stocknet_counts_and_ranges(cli: Callable[..., Result], lake_root: Path) -> None:
    result = cli("data", "ingest", "stocknet", str(STOCKNET))
    assert result.exit_code == 0, result.output
    assert "rows with missing values dropped" in result.output  # the three all-'null' rows, reported
    listing = cli("data", "list")
    assert listing.exit_code == 0
    catalog = Catalog(Lake(lake_root))
    datasets = {(r["kind"], r["dataset"]): r for r in catalog.datasets().iter_rows(named=True)}
    bars, text = datasets[("bars", "stocknet")], datasets[("text", "stocknet")]
    assert bars["symbols"] == 88 and bars["rows"] == 108_589
    assert text["symbols"] == 87 and text["rows"] == 106_338
    for expected in ("88", "87", "106,338"):
        assert expected in listing.output
    per_symbol = catalog.symbols("bars", "stocknet", "1d")
    stored = {
        r["symbol"]: (r["first"].astimezone(_ny()).date(), r["last"].astimezone(_ny()).date())
        for r in per_symbol.iter_rows(named=True)
    }
    assert stored == raw_ranges(STOCKNET / "price" / "raw")
    assert stored["GMRE"][0] == date(2016, 6, 30) and stored["AAPL"] == (date(2012, 9, 4), date(2017, 9, 1))
    show = cli("data", "show", "stocknet")
    assert "2012-09-04" in show.output and "2017-09-01" in show.output
    posters = set(catalog.symbols("text", "stocknet")["symbol"].to_list())
    assert posters == set(stored) - {"GMRE"}


@requires(KDD17)
def test_kdd17_counts_and_ranges(cli: Callable[..., Result], lake_root: Path) -> None:
    result = cli("data", "ingest", "kdd17", str(KDD17))
    assert result.exit_code == 0, result.output
    bars = Lake(lake_root).read("bars", "kdd17", freq="1d")
    assert bars["symbol"].n_unique() == 50 and bars.height == 125_900
    aapl = bars.filter(bars["symbol"] == "AAPL")
    assert aapl.height == 2518
    assert aapl["ts"].is_sorted()
    assert aapl["ts"][0].astimezone(_ny()).date() == date(2007, 1, 3)
    assert aapl["ts"][-1].astimezone(_ny()).date() == date(2016, 12, 30)


def _ny():

    return ZoneInfo("America/New_York")


@requires(STOCKNET)
def test_stocknet_features_and_tokens_for_every_symbol(cli: Callable[..., Result], lake_root: Path) -> None:
    assert cli("data", "ingest", "stocknet", str(STOCKNET)).exit_code == 0
    built = cli("features", "build", "stocknet")
    assert built.exit_code == 0, built.output
    tokenized = cli("tokenize", "brooks", "stocknet", "--out", "stocknet_brooks")
    assert tokenized.exit_code == 0, tokenized.output
    lake = Lake(lake_root)
    bars = lake.read("bars", "stocknet", freq="1d")
    features = lake.read("features", "stocknet", freq="1d")
    tokens = lake.read("tokens", "stocknet_brooks", freq="1d")
    assert features["symbol"].n_unique() == 88 and features.height == bars.height
    assert tokens["symbol"].n_unique() == 88 and tokens.height == bars.height
    vocabulary = Vocabulary.from_json(vocabulary_path(lake, "stocknet_brooks", "1d"))
    stats = vocabulary.entropy_stats()
    assert stats.n_tokens == bars.height
    assert 0 < stats.entropy_bits < math.log2(stats.n_types) + 1e-9
    assert 0.9 < stats.coverage <= 1.0
    assert "entropy" in tokenized.output.lower()
