"""The bar-feature pipeline of a lake dataset, shared by `finfusion features build` and the features job.

Features are computed from a bars dataset's whole history (EWM indicators such as MACD depend on all of it), with the
calendar terms in the dataset's own time zone; exogenous series of other datasets can be joined as of each bar's
close. A per-symbol normaliser is then fitted on a training span and stored with the features dataset, or the stored
one is reused; a features dataset that has a stored normaliser is never written unnormalised.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import polars as pl

from finfusion.data.lake import Lake
from finfusion.errors import FinfusionError
from finfusion.features.bars import FeatureConfig, build_features
from finfusion.features.calendar_features import calendar_feature_names
from finfusion.features.exogenous import join_asof_exogenous, series_from_bars
from finfusion.features.normalize import FittedNormalizer, features_metadata, normalised_columns, normalizer_path

#: Reuse the normaliser stored with the features dataset.
SAVED: Literal["saved"] = "saved"


@dataclass(frozen=True)
class Exogenous:
    """The bars of one symbol of another dataset, joined to every bar as exo_<symbol>_ret_1 and _log_close."""

    dataset: str
    symbol: str

    @classmethod
    def parse(cls, spec: str) -> Exogenous:
        """'DATASET:SYMBOL', e.g. 'indices:SPY'."""
        dataset, _, symbol = spec.partition(":")
        if not dataset or not symbol:
            raise FinfusionError(f"exogenous series '{spec}': write it DATASET:SYMBOL, e.g. indices:SPY")
        return cls(dataset, symbol)

    @property
    def prefix(self) -> str:
        """exo_<symbol in lower case, runs of other characters as '_'>, e.g. '^VIX' -> 'exo_vix'."""
        return "exo_" + (re.sub(r"[^0-9a-z]+", "_", self.symbol.lower()).strip("_") or "series")


@dataclass(frozen=True)
class NormalizerFit:
    """Fit a per-symbol normaliser (`method`: zscore or robust) on [fit_start, fit_end) (ISO dates)."""

    method: str
    fit_start: str
    fit_end: str


#: How features are normalised: fitted anew, the stored normaliser (SAVED), or not at all (None).
Normalization = NormalizerFit | Literal["saved"] | None


@dataclass(frozen=True)
class FeatureSet:
    """Features of every bar ready to store: `frame` [N rows: symbol, ts, feature columns], normalised when
    `normalizer` is set, and the `_dataset.json` metadata that describes them."""

    frame: pl.DataFrame
    normalizer: FittedNormalizer | None
    metadata: dict[str, object]


def build_feature_set(
    lake: Lake,
    bars: str,
    freq: str,
    name: str,
    normalization: Normalization,
    *,
    exogenous: Sequence[Exogenous] = (),
    max_staleness: str | None = None,
) -> FeatureSet:
    """The features of every `freq` bar of the `bars` dataset, for the features dataset `name`.

    Exogenous values older than `max_staleness` (a polars duration such as "5d") are left null. A NormalizerFit is
    fitted on the feature columns but the calendar terms and stored with `name` (replacing any stored one); SAVED
    loads the stored one. Raises FinfusionError on a missing bars dataset, exogenous symbol or stored normaliser,
    and when `normalization` is None but `name` has a stored normaliser (its rows would mix scales).
    """
    if normalization is None and normalizer_path(lake, name, freq).exists():
        raise FinfusionError(
            f"features '{name}' ({freq}) have a stored normaliser: reuse it (saved) or fit a new one, as writing "
            "unnormalised rows would mix scales"
        )
    frame = lake.read("bars", bars, freq=freq)
    config = FeatureConfig(timezone=lake.metadata("bars", bars).get("timezone", FeatureConfig.timezone))
    features = build_features(frame, config)
    for exo in exogenous:
        features = join_asof_exogenous(
            features, series_from_bars(_exogenous_bars(lake, exo, freq)), exo.prefix, max_staleness=max_staleness
        )
    normalizer = _normalizer(lake, name, freq, features, config, normalization)
    if normalizer is not None:
        features = normalizer.transform(features)
    return FeatureSet(features, normalizer, features_metadata(f"bars/{bars}", features, normalizer))


def _exogenous_bars(lake: Lake, exo: Exogenous, freq: str) -> pl.DataFrame:
    if not (lake.dataset_dir("bars", exo.dataset, freq) / f"symbol={exo.symbol}").is_dir():
        raise FinfusionError(
            f"exogenous series '{exo.dataset}:{exo.symbol}': no {freq} bars of '{exo.symbol}' in dataset "
            f"'{exo.dataset}'"
        )
    return lake.read("bars", exo.dataset, freq=freq, symbols=[exo.symbol])


def _normalizer(
    lake: Lake, name: str, freq: str, features: pl.DataFrame, config: FeatureConfig, normalization: Normalization
) -> FittedNormalizer | None:
    if isinstance(normalization, NormalizerFit):
        columns = normalised_columns(features, set(calendar_feature_names(config.calendar_harmonics)))
        fitted = FittedNormalizer.fit(
            features, normalization.method, normalization.fit_start, normalization.fit_end, columns
        )
        fitted.save(lake, name, freq)
        return fitted
    return FittedNormalizer.load(lake, name, freq) if normalization == SAVED else None
