"""`finfusion features ...`: compute point-in-time bar features from bars in the lake and store them there."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated

import typer

from finfusion.commands.common import LakeOption, busy, out, reports_errors
from finfusion.data.lake import Lake
from finfusion.data.schema import FEATURES
from finfusion.errors import FinfusionError
from finfusion.features.bars import FeatureConfig, build_features
from finfusion.features.calendar_features import calendar_feature_names
from finfusion.features.exogenous import join_asof_exogenous, series_from_bars
from finfusion.features.normalize import KEY_COLUMNS, FittedNormalizer, features_metadata, normalised_columns

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
    store = Lake(lake)
    name = out_name or dataset
    if (normalize in (Normalize.zscore, Normalize.robust)) != (fit_start is not None and fit_end is not None):
        raise FinfusionError("--fit-start and --fit-end go with --normalize zscore or robust, and it needs both")
    bars = store.read("bars", dataset, freq=freq)
    config = FeatureConfig(timezone=store.metadata("bars", dataset).get("timezone", FeatureConfig.timezone))
    with busy(f"computing features of {dataset}"):
        features = build_features(bars, config)
        for spec in exogenous or []:
            exo_dataset, symbol = _parse_exogenous(spec)
            if not (store.dataset_dir("bars", exo_dataset, freq) / f"symbol={symbol}").is_dir():
                raise FinfusionError(f"--exogenous '{spec}': no {freq} bars of '{symbol}' in dataset '{exo_dataset}'")
            exo_bars = store.read("bars", exo_dataset, freq=freq, symbols=[symbol])
            features = join_asof_exogenous(
                features, series_from_bars(exo_bars), _prefix(symbol), max_staleness=max_staleness
            )
        normalizer = None
        if normalize is Normalize.saved:
            normalizer = FittedNormalizer.load(store, name, freq)
        elif normalize is not None:
            columns = normalised_columns(features, set(calendar_feature_names(config.calendar_harmonics)))
            normalizer = FittedNormalizer.fit(features, normalize.value, fit_start, fit_end, columns)
            normalizer.save(store, name, freq)
        if normalizer is not None:
            features = normalizer.transform(features)
        metadata = features_metadata(f"bars/{dataset}", features, normalizer)
        result = store.write(FEATURES, name, features, freq=freq, metadata=metadata)
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


def _parse_exogenous(spec: str) -> tuple[str, str]:
    dataset, _, symbol = spec.partition(":")
    if not dataset or not symbol:
        raise FinfusionError(f"--exogenous '{spec}': write it DATASET:SYMBOL, e.g. indices:SPY")
    return dataset, symbol


def _prefix(symbol: str) -> str:
    """exo_<symbol in lower case, runs of other characters as '_'>, e.g. '^VIX' -> 'exo_vix'."""
    return "exo_" + (re.sub(r"[^0-9a-z]+", "_", symbol.lower()).strip("_") or "series")
