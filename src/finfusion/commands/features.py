"""`finfusion features ...`: compute point-in-time bar features from bars in the lake and store them there."""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Annotated

import typer

from finfusion.commands.common import LakeOption, busy, out, reports_errors
from finfusion.errors import FinfusionError

if TYPE_CHECKING:
    from finfusion.features.pipeline import Normalization

app = typer.Typer(help="Compute point-in-time features from bars in the lake.", no_args_is_help=True)


@app.callback()  # a group even with one command, so that `build` keeps its name
def features() -> None:
    """Compute point-in-time features from bars in the lake."""


class Normalize(StrEnum):
    zscore = "zscore"
    robust = "robust"
    saved = "saved"


@app.command(
    epilog="Examples:\n\n"
    "  finfusion features build synthetic\n\n"
    "  finfusion features build stocknet --exogenous indices:SPY --exogenous indices:VIX --max-staleness 5d\n\n"
    "  finfusion features build synthetic --out synth_z --normalize zscore --fit-start 2018-01-01 "
    "--fit-end 2020-01-01\n\n"
    "  finfusion features build synthetic --out synth_z --normalize saved   (new bars, same statistics)"
)
@reports_errors
def build(
    dataset: Annotated[str, typer.Argument(help="Bars dataset to read.")],
    freq: Annotated[str, typer.Option(help="Bar frequency: 1d, 5m, 1h, ...")] = "1d",
    out_name: Annotated[str | None, typer.Option("--out", help="Features dataset to write (default: DATASET).")] = None,
    exogenous: Annotated[
        list[str] | None,
        typer.Option(
            help="DATASET:SYMBOL bars joined as of each bar's close as exo_<symbol>_ret_1 and exo_<symbol>_log_close "
            "(repeatable)."
        ),
    ] = None,
    max_staleness: Annotated[
        str | None, typer.Option(help="Leave exogenous values older than this out (e.g. 5d, 12h).")
    ] = None,
    normalize: Annotated[
        Normalize | None,
        typer.Option(
            help="zscore or robust: fit per-symbol statistics on [--fit-start, --fit-end) and store them with the "
            "features; saved: apply the statistics stored with --out earlier."
        ),
    ] = None,
    fit_start: Annotated[str | None, typer.Option(help="Start of the normaliser's training span (ISO date).")] = None,
    fit_end: Annotated[str | None, typer.Option(help="End of the training span, exclusive (ISO date).")] = None,
    lake: LakeOption = None,
) -> None:
    """Compute the continuous bar features of DATASET (returns, volatility, volume, RSI, MACD, ATR, Bollinger,
    moving averages, calendar terms), each from bars at or before its own, and write them to the lake."""
    from finfusion.data.lake import Lake
    from finfusion.data.schema import FEATURES
    from finfusion.features.normalize import KEY_COLUMNS
    from finfusion.features.pipeline import Exogenous, build_feature_set

    normalization = _normalization(normalize, fit_start, fit_end)
    exo = [Exogenous.parse(spec) for spec in exogenous or []]
    store = Lake(lake)
    name = out_name or dataset
    with busy(f"computing features of {dataset}"):
        built = build_feature_set(store, dataset, freq, name, normalization, exogenous=exo, max_staleness=max_staleness)
        result = store.write(FEATURES, name, built.frame, freq=freq, metadata=built.metadata)
    features, normalizer = built.frame, built.normalizer
    n_features = features.width - len(KEY_COLUMNS)
    out.print(
        f"[bold]features[/bold] {name} ({freq}) from bars {dataset}: {features.height:,} rows x {n_features} "
        f"features, {features['symbol'].n_unique():,} symbols; {result.files_written} files written, "
        f"{result.files_unchanged} unchanged"
    )
    if normalizer is not None:
        out.print(
            f"  normalised ({normalizer.method}, per symbol) with statistics fitted on "
            f"[{normalizer.fit_start.date()}, {normalizer.fit_end.date()})"
        )


def _normalization(normalize: Normalize | None, fit_start: str | None, fit_end: str | None) -> Normalization:
    """The --normalize choice: zscore and robust need --fit-start and --fit-end, saved and none take neither."""
    from finfusion.features.pipeline import SAVED, NormalizerFit

    if normalize is not None and normalize is not Normalize.saved:
        if fit_start is not None and fit_end is not None:
            return NormalizerFit(normalize.value, fit_start, fit_end)
    elif fit_start is None and fit_end is None:
        return SAVED if normalize is Normalize.saved else None
    raise FinfusionError("--fit-start and --fit-end go with --normalize zscore or robust, and it needs both")
