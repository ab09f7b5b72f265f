"""The `data` part of an experiment config -> a panel of bars (and features) and its train / val / test windows.

Keys of the part (configs/data/*.yaml):

    source: lake            # "lake": read `dataset` from the lake; "synthetic": make it first when it is absent
    dataset: synthetic      # bars dataset in the lake
    freq: 1d
    lake: null              # lake root (default: $FINFUSION_LAKE, else ./finfusion-data)
    symbols: null           # a list, or null for every symbol of the dataset
    start: null             # a date: bars before it are not read (features start warming up there)
    features: []            # bar features (features/bars.py names) computed point-in-time and joined as columns
    inputs: [log_return]    # input channels C of `past` (log_return and any of `features`)
    targets: [log_return]   # target channels T of `future`
    lookback: 64
    horizon: 8
    stride: 1
    split: {train: 0.7, val: 0.15}   # fractions of the distinct bar instants, or dates: {train_end, val_end}
    batch_size: 64
    num_workers: 0
    synthetic: {n_symbols: 8, ...}   # SyntheticConfig fields, used when source is "synthetic"
    texts: {enabled: false, ...}     # aligned text embeddings in every window (forecasting/texts.py)

Splits are point-in-time: the normaliser sees only bars before `train_end`; a training window's whole future ends
before `train_end`, a validation window's before `val_end`; test windows start at `val_end`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import timedelta
from typing import Any

import numpy as np
import polars as pl
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from finfusion.config import plain
from finfusion.data.calendar import to_us
from finfusion.data.lake import Lake
from finfusion.data.sources.synthetic import SyntheticConfig
from finfusion.data.sources.synthetic_context import ContextConfig
from finfusion.data.sources.synthetic_ingest import check_stored_market, make_and_ingest
from finfusion.errors import FinfusionError
from finfusion.features.align import AlignedText
from finfusion.features.bars import FeatureConfig, build_features
from finfusion.features.normalize import FittedNormalizer
from finfusion.forecasting.texts import TEXT_DEFAULTS, align_panel_texts, with_texts
from finfusion.samples.text_windows import TextWindowDataset
from finfusion.samples.windows import EPOCH, LOG_RETURN, Panel, WindowConfig, WindowDataset, build_panel, collate

Windows = WindowDataset | TextWindowDataset

DATA_DEFAULTS: dict[str, Any] = {
    "source": "lake",
    "dataset": "synthetic",
    "freq": "1d",
    "lake": None,
    "symbols": None,
    "start": None,
    "features": [],
    "inputs": [LOG_RETURN],
    "targets": [LOG_RETURN],
    "lookback": 64,
    "horizon": 8,
    "stride": 1,
    "split": {"train": 0.7, "val": 0.15},
    "batch_size": 64,
    "num_workers": 0,
    "synthetic": {},
    "texts": TEXT_DEFAULTS,
}


def data_options(cfg: Mapping[str, Any] | DictConfig) -> dict[str, Any]:
    """The data part as a plain dict with `DATA_DEFAULTS` filling what it leaves out."""
    given = plain(cfg)
    return OmegaConf.to_container(OmegaConf.merge(OmegaConf.create(DATA_DEFAULTS), given), resolve=True)


def synthetic_config(options: Mapping[str, Any]) -> SyntheticConfig:
    """SyntheticConfig from the `synthetic` mapping; an unknown field raises FinfusionError."""
    known = {f.name for f in fields(SyntheticConfig)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise FinfusionError(
            f"data.synthetic: unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in options.items() if k != "context"}
    context = options.get("context")
    if context is not None:
        known = {f.name for f in fields(ContextConfig)}
        unknown = sorted(set(context) - known)
        if unknown:
            raise FinfusionError(
                f"data.synthetic.context: unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        values["context"] = ContextConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in context.items()})
    return SyntheticConfig(**values)


def ensure_bars(options: Mapping[str, Any]) -> Lake:
    """The data part's lake, with the synthetic market made in it first when the source is synthetic and it is absent
    (a stored one must have been made with the same `synthetic` settings)."""
    lake = Lake(options["lake"])
    dataset, freq = str(options["dataset"]), str(options["freq"])
    if options["source"] == "synthetic":
        if lake.files("bars", dataset, freq):
            check_stored_market(lake, synthetic_config(options["synthetic"]), dataset)
        else:
            make_and_ingest(lake, synthetic_config(options["synthetic"]), dataset=dataset)
    elif options["source"] not in ("lake", "synthetic"):
        raise FinfusionError(f"data.source must be 'lake' or 'synthetic', got {options['source']!r}")
    return lake


def load_bars(options: Mapping[str, Any]) -> pl.DataFrame:
    """The bars of the data part (`ensure_bars`)."""
    lake = ensure_bars(options)
    dataset, freq = str(options["dataset"]), str(options["freq"])
    symbols = options["symbols"]
    bars = lake.read("bars", dataset, freq=freq, symbols=list(symbols) if symbols else None)
    if options.get("start") is not None:
        bars = bars.filter(pl.Series(to_us(bars["ts"]) >= start_us(options["start"])))
    if bars.height == 0:
        span = "" if options.get("start") is None else f" from data.start {options['start']}"
        raise FinfusionError(f"bars dataset '{dataset}' ({freq}) has no rows for the requested symbols{span}")
    return bars


def build_experiment_panel(options: Mapping[str, Any]) -> Panel:
    """Panel of `log_return` plus the requested `features` (each computed from bars at or before its own)."""
    bars = load_bars(options)
    wanted = list(options["features"])
    if not wanted:
        return build_panel(bars)
    config = FeatureConfig()
    unknown = [name for name in wanted if name not in config.names]
    if unknown:
        raise FinfusionError(
            f"data.features: unknown feature(s) {', '.join(unknown)}; known: {', '.join(config.names)}"
        )
    return build_panel(bars, build_features(bars, config).select("symbol", "ts", *wanted))


def split_instants(panel: Panel, split: Mapping[str, Any]) -> tuple[int, int]:
    """(train_end, val_end) UTC microseconds from fractions of the distinct bar instants or from dates."""
    if "train_end" in split:
        bounds = [instant_us(split["train_end"]), instant_us(split.get("val_end", split["train_end"]))]
    else:
        instants = np.unique(np.concatenate(panel.ts))
        train, val = float(split.get("train", 0.7)), float(split.get("val", 0.15))
        if not (0 < train < 1 and 0 <= val < 1 and train + val < 1):
            raise FinfusionError(f"data.split: need 0 < train, 0 <= val and train + val < 1, got {train} and {val}")
        bounds = [int(instants[int(len(instants) * f)]) for f in (train, train + val)]
    if bounds[1] < bounds[0]:
        raise FinfusionError("data.split: val_end is before train_end")
    return bounds[0], bounds[1]


def instant_us(value: Any) -> int:
    return int(to_us(pl.Series([str(value)]).str.to_datetime(time_zone="UTC"))[0])


def start_us(value: Any) -> int:
    """`data.start` as UTC microseconds; a value that is not a date is one clear error."""
    try:
        return instant_us(value)
    except pl.exceptions.PolarsError:
        raise FinfusionError(f"data.start: '{value}' is not a date (YYYY-MM-DD)") from None


@dataclass
class ExperimentData:
    """Train / val / test windows sharing one panel and one normaliser fitted before `train_end`."""

    panel: Panel
    config: WindowConfig
    train: Windows
    val: Windows
    test: Windows
    train_end_us: int
    val_end_us: int
    batch_size: int
    num_workers: int
    freq: str = "1d"
    aligned: AlignedText | None = None

    @property
    def n_channels(self) -> int:
        return len(self.config.inputs)

    @property
    def target_index(self) -> list[int]:
        """Positions [T] of the target channels among the inputs (targets must be inputs too)."""
        missing = [t for t in self.config.targets if t not in self.config.inputs]
        if missing:
            raise FinfusionError(f"data: target(s) {', '.join(missing)} must also be inputs")
        return [self.config.inputs.index(t) for t in self.config.targets]

    @property
    def normalizer(self) -> FittedNormalizer | None:
        """The normaliser fitted on the bars before `train_end` (None when the data part does not normalise)."""
        return self.train.normalizer

    @property
    def model_arguments(self) -> dict[str, Any]:
        """Constructor arguments these windows determine: n_channels (C), target_index [T], context_length (L),
        horizon (H) and the bars' frequency."""
        return {
            "n_channels": self.n_channels,
            "target_index": self.target_index,
            "context_length": self.config.lookback,
            "horizon": self.config.horizon,
            "freq": self.freq,
        }

    def state(self) -> dict[str, Any]:
        """What prediction needs to rebuild these windows without refitting: split instants and the normaliser."""
        return {
            "train_end_us": self.train_end_us,
            "val_end_us": self.val_end_us,
            "normalizer": None if self.normalizer is None else self.normalizer.to_dict(),
        }

    def loader(self, dataset: Windows, shuffle: bool = False) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            collate_fn=collate,
        )

    def batches(self, dataset: Windows, shuffle: bool = False, seed: int = 0) -> DataLoader:
        """`loader` with the pipeline's loader signature: windows are shuffled by torch's global RNG, which the
        trainer seeds from (seed, epoch) before every epoch (training/resume.py), so `seed` needs no generator."""
        del seed
        return self.loader(dataset, shuffle)


def window_config(options: Mapping[str, Any], train_end_us: int | None, require_future: bool = True) -> WindowConfig:
    train_end = None if train_end_us is None else EPOCH + timedelta(microseconds=train_end_us)
    return WindowConfig(
        lookback=int(options["lookback"]),
        horizon=int(options["horizon"]),
        stride=int(options["stride"]),
        inputs=tuple(options["inputs"]),
        targets=tuple(options["targets"]),
        train_end=train_end,
        require_future=require_future,
    )


def held_out_before(dataset: Windows, start_us: int | None, end_us: int | None) -> np.ndarray:
    """Mask [M] of windows with origin >= start_us whose whole future ends before end_us (either bound may be open)."""
    origins, ends = dataset.origins_us, dataset.future_end_us
    keep = np.ones(len(origins), dtype=bool)
    if start_us is not None:
        keep &= origins >= start_us
    if end_us is not None:
        keep &= ends < end_us
    return keep


def build_experiment_data(
    cfg: Mapping[str, Any] | DictConfig, state: Mapping[str, Any] | None = None
) -> ExperimentData:
    """Datasets of the data part `cfg` (see the module docstring). With `state` (`ExperimentData.state()` of the
    training run) the split instants and the normaliser are the stored ones: nothing is refitted on a lake that has
    grown since."""
    options = data_options(cfg)
    panel = build_experiment_panel(options)
    if state is None:
        train_end, val_end = split_instants(panel, options["split"])
        normalizer = None
    else:
        train_end, val_end = int(state["train_end_us"]), int(state["val_end_us"])
        stored = state.get("normalizer")
        normalizer = None if stored is None else FittedNormalizer.from_dict(stored)
    config = window_config(options, train_end)
    aligned = align_panel_texts(options, panel)
    everything = with_texts(WindowDataset(panel, config, normalizer), aligned)
    return ExperimentData(
        panel=panel,
        config=config,
        train=everything.subset(held_out_before(everything, None, train_end)),
        val=everything.subset(held_out_before(everything, train_end, val_end)),
        test=everything.subset(held_out_before(everything, val_end, None)),
        train_end_us=train_end,
        val_end_us=val_end,
        batch_size=int(options["batch_size"]),
        num_workers=int(options["num_workers"]),
        freq=str(options["freq"]),
        aligned=aligned,
    )
