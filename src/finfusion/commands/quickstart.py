"""`finfusion quickstart`: the whole pipeline on data it makes itself, offline."""

from __future__ import annotations

from typing import Annotated

import typer

from finfusion.commands.common import LakeOption, out, print_report, reports_errors
from finfusion.commands.data import list_
from finfusion.data.lake import Lake
from finfusion.data.sources.synthetic import SyntheticConfig
from finfusion.data.sources.synthetic_ingest import make_and_ingest


@reports_errors
def quickstart(
    symbols: Annotated[int, typer.Option(help="Symbols in the synthetic market.")] = 20,
    seed: Annotated[int, typer.Option(help="Random seed of the synthetic market.")] = 0,
    lake: LakeOption = None,
) -> None:
    """Make the synthetic multimodal market, ingest it into the lake and print the catalog.

    Example: finfusion quickstart --lake ./finfusion-data
    """
    store = Lake(lake)
    out.rule("[bold]finfusion quickstart")
    out.print(f"lake: {store.root.resolve()}")
    out.print(f"1/2 synthetic market: {symbols} symbols, seed {seed} (prices, news with planted effects)")
    for report in make_and_ingest(store, SyntheticConfig(n_symbols=symbols, seed=seed)):
        print_report(report)
    out.print("2/2 catalog")
    list_(lake=store.root)
