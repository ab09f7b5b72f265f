"""Write a generated synthetic market into the lake through the same validating pipeline as every other source."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import polars as pl

from finfusion.data.ingest import (
    BarOptions,
    Prepared,
    TextOptions,
    ingest_policy,
    prepare_bar_ingest,
    prepare_text_ingest,
    write_prepared,
)
from finfusion.data.lake import Lake
from finfusion.data.report import IngestReport
from finfusion.data.schema import EVENTS, SERIES, SOURCE_FILE, SOURCE_ROW
from finfusion.data.sources.synthetic import SyntheticConfig, SyntheticMarket, generate_market
from finfusion.errors import FinfusionError

SOURCE = "synthetic"
#: The bars' metadata note that records which settings made the market: this prefix + `config_fingerprint`.
FINGERPRINT_NOTE = "synthetic config "


def config_fingerprint(config: SyntheticConfig) -> str:
    """First 16 hex digits of the SHA-256 of the config's fields as sorted JSON: equal settings, equal markets (a
    market without context series hashes as before the field existed)."""
    fields = dataclasses.asdict(config)
    if fields["context"] is None:
        del fields["context"]
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def check_stored_market(lake: Lake, config: SyntheticConfig, dataset: str = "synthetic") -> None:
    """Raise FinfusionError when the lake's synthetic `dataset` was made with other settings than `config` (a
    dataset written before fingerprints were recorded passes)."""
    notes = [str(n) for n in lake.metadata("bars", dataset).get("notes", [])]
    stored = {n.removeprefix(FINGERPRINT_NOTE) for n in notes if n.startswith(FINGERPRINT_NOTE)}
    asked = config_fingerprint(config)
    if stored and asked not in stored:
        raise FinfusionError(
            f"the lake {lake.root} already holds a synthetic market '{dataset}' made with other settings "
            f"(config {', '.join(sorted(stored))}, asked for {asked}): use another lake "
            "(--lake) or dataset name (data.dataset), or delete that dataset"
        )


def _with_provenance(frame: pl.DataFrame, label: str) -> pl.DataFrame:
    return frame.with_columns(pl.lit(label).alias(SOURCE_FILE), pl.int_range(1, frame.height + 1).alias(SOURCE_ROW))


def ingest_market(lake: Lake, market: SyntheticMarket, dataset: str = "synthetic") -> list[IngestReport]:
    """Bars, texts and the planted-effect ground truth (kind=events) of a market under one dataset name (a market
    without news writes bars only)."""
    config = market.config
    bar_options = BarOptions(
        dataset=dataset,
        freq=config.freq,
        calendar=config.calendar,
        bar_label="end",
        source=SOURCE,
        notes=[
            f"synthetic market, seed {config.seed}: see docs/synthetic.md",
            FINGERPRINT_NOTE + config_fingerprint(config),
        ],
    )
    prepared = [prepare_bar_ingest(_with_provenance(market.bars, f"synthetic:{config.seed}:bars"), bar_options)]
    if market.texts.height:
        events = IngestReport(kind="events", dataset=dataset, source=SOURCE, rows_in=market.events.height)
        prepared += [
            prepare_text_ingest(
                _with_provenance(market.texts, f"synthetic:{config.seed}:texts"), TextOptions(dataset, SOURCE)
            ),
            Prepared(EVENTS, market.events, None, {"source": SOURCE, "seed": config.seed}, events, ingest_policy()),
        ]
    if market.series is not None:
        series = IngestReport(kind="series", dataset=dataset, source=SOURCE, rows_in=market.series.height)
        truth = [f"{group}-sensitive: {', '.join(symbols)}" for group, symbols in sorted(market.sensitive.items())]
        metadata = {"source": SOURCE, "seed": config.seed, "notes": truth}
        prepared.append(Prepared(SERIES, market.series, None, metadata, series, ingest_policy()))
    return write_prepared(lake, prepared)


def planted_sensitivity(lake: Lake, dataset: str = "synthetic") -> dict[str, tuple[str, ...]]:
    """The synthetic series dataset's ground truth: context group -> the symbols its effects move."""
    notes = [str(note) for note in lake.metadata("series", dataset).get("notes", [])]
    truth = {}
    for note in notes:
        group, _, symbols = note.partition("-sensitive: ")
        if symbols:
            truth[group] = tuple(symbols.split(", "))
    return truth


def make_and_ingest(lake: Lake, config: SyntheticConfig, dataset: str = "synthetic") -> list[IngestReport]:
    return ingest_market(lake, generate_market(config), dataset)
