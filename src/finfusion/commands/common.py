"""Shared pieces of the command line: the lake option, error reporting and report printing."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from finfusion.data.lake_root import ENV_LAKE
from finfusion.errors import FinfusionError
from finfusion.progress import console as progress_console

if TYPE_CHECKING:
    from finfusion.data.report import IngestReport

P = ParamSpec("P")
R = TypeVar("R")
out = Console()
if not out.is_terminal:
    out = Console(width=160)
err = Console(stderr=True)

LakeOption = Annotated[
    Path | None,
    typer.Option("--lake", envvar=ENV_LAKE, help="Lake root folder (default ./finfusion-data).", show_default=False),
]


def reports_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Print a FinfusionError as one clear line on stderr and exit with its code (non-zero)."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except FinfusionError as exc:
            err.print(f"[bold red]error:[/bold red] {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from exc

    return wrapper


@contextmanager
def busy(what: str) -> Iterator[None]:
    """A spinner on stderr while a step runs (only on a terminal; progress bars inside still show)."""
    if progress_console.is_terminal:
        with progress_console.status(what):
            yield
    else:
        yield


def print_report(report: IngestReport) -> None:
    """What an ingest did: rows, files, and every repair or anomaly counted."""
    out.print(
        f"[bold]{report.kind}[/bold] {report.dataset} ({report.source}): {report.rows_in:,} rows read, "
        f"{report.new_rows:,} new, {report.updated_rows:,} updated, "
        f"{report.files_written} files written, {report.files_unchanged} unchanged"
    )
    if report.counts:
        table = Table("repair / anomaly", "count", title="cleaning report", title_justify="left")
        for name, count in sorted(report.counts.items()):
            table.add_row(name.replace("_", " "), f"{count:,}")
        out.print(table)
    for note in report.notes:
        out.print(f"  note: {note}")
