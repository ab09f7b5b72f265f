"""`finfusion orderbook ...`: limit-order-book snapshots (LOBSTER files) into the lake, and the synthetic book."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from finfusion.commands.common import LakeOption, out, reports_errors

if TYPE_CHECKING:
    import polars as pl

    from finfusion.data.lake import Lake

app = typer.Typer(help="Limit-order books: ingest LOBSTER files, make the synthetic book.", no_args_is_help=True)


@app.command(
    epilog="Example:\n\n  finfusion orderbook ingest AAPL_2012-06-21_34200000_57600000_message_10.csv "
    "AAPL_2012-06-21_34200000_57600000_orderbook_10.csv --symbol AAPL --date 2012-06-21 --dataset lobster"
)
@reports_errors
def ingest(
    message: Annotated[Path, typer.Argument(help="LOBSTER message file (CSV, no header).")],
    orderbook: Annotated[Path, typer.Argument(help="LOBSTER orderbook file of the same events.")],
    symbol: Annotated[str, typer.Option(help="The symbol of the files.")],
    day: Annotated[str, typer.Option("--date", help="The trading day of the files (YYYY-MM-DD).")],
    dataset: Annotated[str, typer.Option(help="Dataset name in the lake.")] = "lobster",
    tz: Annotated[str, typer.Option(help="Time zone of the message times (seconds after local midnight).")] = (
        "America/New_York"
    ),
    lake: LakeOption = None,
) -> None:
    """Validate one day of LOBSTER files (crossed books, negative sizes, times going backwards, ... are refused
    with the file, row and field) and store its snapshots in the lake's orderbooks table."""
    from finfusion.data.lake import Lake
    from finfusion.data.sources.lobster import LobsterDay, read_lobster

    frame = read_lobster(LobsterDay(message, orderbook, symbol, date.fromisoformat(day), tz))
    _store(Lake(lake), frame, dataset, f"lobster {message.name}")


@app.command(epilog="Example:\n\n  finfusion orderbook synth --days 10 --dataset lob_synthetic")
@reports_errors
def synth(
    dataset: Annotated[str, typer.Option(help="Dataset name in the lake.")] = "lob_synthetic",
    symbol: Annotated[str, typer.Option(help="Symbol of the synthetic book.")] = "SYNL",
    days: Annotated[int, typer.Option(help="Trading days to simulate.", min=1)] = 10,
    events: Annotated[int, typer.Option(help="Events per day.", min=100)] = 20_000,
    effect: Annotated[float, typer.Option(help="Strength of the planted order-flow effect (0: none).")] = 2.0,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    files: Annotated[Path | None, typer.Option(help="Keep the LOBSTER files in this folder.")] = None,
    lake: LakeOption = None,
) -> None:
    """Simulate a limit-order book with a planted short-horizon order-flow-imbalance effect, write it as LOBSTER
    files and ingest them through the same reader as real data."""
    import tempfile

    import exchange_calendars
    import polars as pl

    from finfusion.data.lake import Lake
    from finfusion.data.sources.lobster import read_lobster
    from finfusion.data.sources.synthetic_lob import LobConfig, write_lobster_days

    sessions = exchange_calendars.get_calendar("XNYS").sessions_in_range("2024-01-02", "2024-12-31")[:days]
    store = Lake(lake)
    config = LobConfig(events=events, effect=effect, seed=seed)
    with tempfile.TemporaryDirectory() as scratch:
        written = write_lobster_days(files or Path(scratch), symbol, [s.date() for s in sessions], config)
        frame = pl.concat([read_lobster(day) for day in written])
    _store(store, frame, dataset, f"synthetic order book, seed {seed}, effect {effect}")


def _store(store: Lake, frame: pl.DataFrame, dataset: str, note: str) -> None:
    from finfusion.data.schema import ORDERBOOKS

    result = store.write(ORDERBOOKS, dataset, frame, metadata={"source": "lobster", "notes": [note]})
    out.print(f"[bold]orderbooks[/bold] {dataset}: {frame.height:,} snapshots, {result.files_written} files written")
