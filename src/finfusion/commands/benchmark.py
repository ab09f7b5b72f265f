"""`finfusion benchmark ...`: published benchmarks on real data, results written beside the published numbers."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from finfusion.commands.common import LakeOption, out, reports_errors

if TYPE_CHECKING:
    from finfusion.families.movement import SeedResult

app = typer.Typer(no_args_is_help=True)


@app.callback()
def benchmark() -> None:
    """Published benchmarks on real data (StockNet / ACL18), results beside the published numbers."""


EPILOG = (
    "Examples:\n\n"
    "  finfusion benchmark stocknet --data ../shared/data/stocknet --lake ./lakes/stocknet\n\n"
    "  finfusion benchmark stocknet --data ../shared/data/stocknet -e stocknet_fusion --seeds 1 --dev-only"
    " model.d_model=32"
)


def _print(result: SeedResult) -> None:
    test = f", test acc {result.test.accuracy:.4f} MCC {result.test.mcc:.4f}" if result.test else ""
    out.print(
        f"{result.experiment} seed {result.seed}: epoch {result.epoch} chosen on dev (acc {result.dev.accuracy:.4f}"
        f" MCC {result.dev.mcc:.4f}){test} [{result.seconds:.0f} s]"
    )


@app.command("stocknet", epilog=EPILOG)
@reports_errors
def stocknet(
    data: Annotated[
        Path, typer.Option("--data", help="StockNet copy (price/raw, tweet/preprocessed).", show_default=False)
    ],
    overrides: Annotated[
        list[str] | None, typer.Argument(help="Config overrides for every experiment, e.g. model.d_model=32.")
    ] = None,
    experiment: Annotated[
        list[str] | None,
        typer.Option("--experiment", "-e", help="Experiment config (repeatable; default: price, text and fusion)."),
    ] = None,
    seeds: Annotated[int, typer.Option(min=1, help="Seeds 0 .. N-1 per experiment.")] = 5,
    out_file: Annotated[Path, typer.Option("--out", help="Results markdown.")] = Path("docs/results/stocknet.md"),
    runs: Annotated[Path, typer.Option(help="Run folders (checkpoints, logs).")] = Path("runs/stocknet"),
    dev_only: Annotated[
        bool, typer.Option("--dev-only", help="Score on dev only: the test split is not touched, nothing written.")
    ] = False,
    threads: Annotated[int | None, typer.Option(min=1, help="torch CPU threads (default: torch's).")] = None,
    lake: LakeOption = None,
) -> None:
    """Build StockNet as published (split, 5-day lag window, dead band; the 20,339 / 2,555 / 3,720 sample counts are
    checked), train each experiment per seed, select on dev, score on test once and write the results table."""
    import torch

    from finfusion.data.lake import Lake
    from finfusion.families.movement_benchmark import DEFAULT_EXPERIMENTS, run_benchmark
    from finfusion.families.movement_benchmark_page import results_markdown, write_markdown

    if threads is not None:
        torch.set_num_threads(threads)
    store = Lake(lake)
    run = run_benchmark(
        data,
        store,
        experiments=experiment or DEFAULT_EXPERIMENTS,
        seeds=range(seeds),
        runs=runs,
        overrides=overrides or [],
        dev_only=dev_only,
        on_result=_print,
    )
    if not dev_only:
        options = [
            *("--data", str(data), "--lake", str(store.root), "--seeds", str(seeds), "--out", str(out_file)),
            *("--runs", str(runs)),
            *(option for name in experiment or () for option in ("-e", name)),
            *(("--threads", str(threads)) if threads is not None else ()),
            *(overrides or ()),
        ]
        command = shlex.join(["finfusion", "benchmark", "stocknet", *options])
        out.print(f"results: {write_markdown(out_file, results_markdown(command, run))}")
