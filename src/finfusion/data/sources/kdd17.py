"""The KDD17 price files of Adv-ALSTM: `price_long_50/<TICKER>.csv`, in descending date order (dates are M/D/YYYY
in most files and ISO in some).

Eleven files carry both `Original_Open` (the traded open) and an `Open` column; `Original_Open` is used as open.
Rows are sorted ascending here because the descending order is the documented layout, not a defect.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from finfusion.data.ingest import BarOptions, ingest_bars
from finfusion.data.lake import Lake
from finfusion.data.report import IngestReport
from finfusion.data.schema import SOURCE_FILE, SOURCE_ROW
from finfusion.data.sources.csv_parquet import BAR_ALIASES, read_raw
from finfusion.errors import DataValidationError

SOURCE = "kdd17"


def price_folder(root: Path) -> Path:
    """Accept the dataset folder, its data/kdd17 folder or price_long_50 itself."""
    for candidate in (
        root / "data" / "kdd17" / "price_long_50",
        root / "kdd17" / "price_long_50",
        root / "price_long_50",
        root,
    ):
        if candidate.is_dir() and any(candidate.glob("*.csv")):
            return candidate
    raise DataValidationError("no KDD17 price_long_50 folder of CSV files here", file=root)


def ingest_kdd17(lake: Lake, root: Path, dataset: str = "kdd17") -> list[IngestReport]:
    aliases = {**BAR_ALIASES, "original_open": "open"}  # listed before Open, so it wins where both exist
    raw, rename, unmapped = read_raw(price_folder(root), aliases=aliases, symbol_from_filename=True)
    raw = raw.sort(SOURCE_FILE, pl.col(SOURCE_ROW), descending=[False, True])
    options = BarOptions(
        dataset=dataset,
        freq="1d",
        missing_bars="drop",
        source=SOURCE,
        notes=["files are in descending date order and are read ascending"],
        unmapped=unmapped,
    )
    return [ingest_bars(lake, raw, options, rename=rename)]
