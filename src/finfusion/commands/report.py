"""`finfusion report RUN`: the self-contained HTML report of a run folder, with metrics.json and metrics.csv."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from finfusion.commands.common import busy, reports_errors
from finfusion.commands.common import out as console


@reports_errors
def report(
    run: Annotated[Path, typer.Argument(help="Run folder (layout: docs/report.md).", show_default=False)],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="HTML file to write (default RUN/report/report.html); metrics.json and metrics.csv go beside it.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Write one HTML page (opens offline) with equity, drawdown, rolling Sharpe, weights, forecast fans,
    calibration plots and the metric tables with baselines side by side; parts missing from RUN are named.

    Example: finfusion report runs/cga-2024 --out reports/cga-2024/report.html
    """
    from finfusion.evaluation.report import write_report
    from finfusion.evaluation.run_layout import missing_parts

    with busy("rendering the report"):
        path = write_report(run, out)
    console.print(f"report: {path}")
    console.print(f"metrics: {path.parent / 'metrics.json'}, {path.parent / 'metrics.csv'}")
    for part in missing_parts(run):
        console.print(f"  missing: {part} (its sections say so)")
