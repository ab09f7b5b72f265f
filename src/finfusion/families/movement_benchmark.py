"""The StockNet (ACL18) benchmark, a movement-family evaluation: build it as published, train each experiment per
seed, select on dev, test once.

Flow (`run_benchmark`): ingest the StockNet copy into the lake when it is not there yet and embed its tweets (texts
already embedded are skipped), build the samples (`samples/daily_movement.py`) and check the published sample counts,
then for every experiment config and seed: `families.movement.evaluate_seed` (the one pipeline's `train_run`, keeping
the checkpoint with the best dev MCC: selection on dev only, no early stopping or picking on test), scored on dev and,
unless `dev_only`, once on test. The results table (accuracy, MCC, F1 of the up class: mean ± sample standard
deviation over seeds) is written beside the published numbers to a markdown file with the command line, the
configs, the seeds and the machine.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from finfusion.config import ConfigError, load_config
from finfusion.data.lake import Lake
from finfusion.data.sources.stocknet import ingest_stocknet
from finfusion.errors import FinfusionError
from finfusion.families.movement import SeedResult, evaluate_seed, family_data
from finfusion.features.text import embed_texts, load_encoder
from finfusion.samples.daily_movement import (
    ACL18_SPLITS,
    PRICE_CHANNELS,
    PUBLISHED_COUNTS,
    PUBLISHED_UP_RATE,
    DailyMovementConfig,
    DailyMovementSamples,
)
from finfusion.samples.daily_movement_lake import read_daily_inputs

DEFAULT_EXPERIMENTS = ("stocknet_price", "stocknet_text", "stocknet_fusion")
DEFAULT_SEEDS = (0, 1, 2, 3, 4)


@dataclass(frozen=True)
class PublishedResult:
    """A published result on the ACL18 test split."""

    model: str
    accuracy: float
    mcc: float
    source: str


PUBLISHED: tuple[PublishedResult, ...] = (
    PublishedResult("Random guess", 0.509, -0.002, "MAN-SF (EMNLP 2020) Table 1"),
    PublishedResult("ARIMA", 0.514, -0.021, "MAN-SF (EMNLP 2020) Table 1"),
    PublishedResult("HAN", 0.576, 0.052, "MAN-SF (EMNLP 2020) Table 1"),
    PublishedResult("StockNet (HedgeFundAnalyst)", 0.582, 0.081, "MAN-SF (EMNLP 2020) Table 1"),
    PublishedResult("Adv-ALSTM", 0.572, 0.148, "MAN-SF (EMNLP 2020) Table 1"),
    PublishedResult("DTML", 0.5812, 0.1806, "SLOT (IEEE BigData 2022) Table IV"),
    PublishedResult("MAN-SF", 0.608, 0.195, "MAN-SF (EMNLP 2020) Table 1"),
    PublishedResult("SLOT", 0.5872, 0.2065, "SLOT (IEEE BigData 2022) Table IV"),
)


METHOD_NOTES = (
    "- Targets, labels and splits as in yumoxu/stocknet-code: movement = adj_close(t) / adj_close(t-1) - 1 (rounded "
    "to 6 decimals as in price/preprocessed), dropped inside [-0.5%, +0.55%), up if > 1e-7; a full price lookback "
    "is required. The first table scores every target of the published 20,339 / 2,555 / 3,720; the second applies "
    "the code's extra rule that every lag day has a tweet (to train, dev and test alike; models retrained).",
    "- Inputs of target t (`samples/daily_movement.py`): the symbol's trading days in [t-4, t] are the steps; each "
    "step holds the price channels of the trading day before it and the tweets filed on the calendar days since the "
    "previous step (from t-5), the most recent `max_tweets` of them; tweets of day t itself never enter. The "
    "decision instant is 00:00 UTC of day t.",
    f"- Price channels ({len(PRICE_CHANNELS)}: {', '.join(PRICE_CHANNELS)}): the day's close, open, high and low "
    "over the previous adjusted close, the log change of volume, the adjusted close over its trailing 5/10/20/30-day "
    "moving averages, and the market (the mean close channel of every symbol that day); z-scored per symbol with "
    "statistics of the bars before 2015-08-01 only. Tweets are all-MiniLM-L6-v2 sentence embeddings (frozen, cached "
    "in the lake).",
    "- Published rows are copied from the cited tables; their protocols (e.g. the tweet-eligibility filter above, "
    "selection rules) may differ from this run's.",
)


def prepare_lake(lake: Lake, data: Path, dataset: str, encoder: str) -> None:
    """Ingest the StockNet copy at `data` unless the lake has it, and embed its texts not yet embedded."""
    if not data.is_dir():
        raise FinfusionError(f"no StockNet copy at {data}: expected a folder with price/raw and tweet/preprocessed")
    present = {(kind, name) for kind, name, _ in lake.datasets()}
    if not {("bars", dataset), ("text", dataset)} <= present:
        ingest_stocknet(lake, data, dataset)
    embed_texts(lake, lake.read("text", dataset).select("title", "body"), load_encoder(encoder))


def check_counts(samples: DailyMovementSamples) -> None:
    """Raise unless the samples match the published 20,339 / 2,555 / 3,720 targets and 50.2% up rate."""
    counts = samples.counts()
    if counts != PUBLISHED_COUNTS or round(samples.up_rate(), 3) != round(PUBLISHED_UP_RATE, 3):
        raise FinfusionError(
            f"the ACL18 samples do not match the published benchmark: counts {counts} (published "
            f"{PUBLISHED_COUNTS}), up rate {samples.up_rate():.4f} (published {PUBLISHED_UP_RATE})"
        )


#: Protocol -> what its targets are.
PROTOCOLS: dict[str, str] = {
    "all": "every published target",
    "tweets_every_day": "targets with a tweet on every lag day (the filter of the published code)",
}
#: The seed of the placebo twin's permutation of the tweets' contents.
PLACEBO_SEED = 0


@dataclass(frozen=True)
class ProtocolRun:
    """One protocol's samples and results: one per (experiment, seed); a text experiment's placebo twin (tweets'
    contents permuted across dates) is the experiment `<name>_placebo`."""

    name: str
    samples: DailyMovementSamples
    results: list[SeedResult]


@dataclass(frozen=True)
class BenchmarkRun:
    """What `run_benchmark` did: the resolved configs, each protocol's results, the data summary."""

    configs: list[DictConfig]
    protocols: list[ProtocolRun]
    data_note: str


def run_benchmark(
    data: Path,
    lake: Lake,
    experiments: Sequence[str] = DEFAULT_EXPERIMENTS,
    seeds: Sequence[int] = DEFAULT_SEEDS,
    runs: Path = Path("runs/stocknet"),
    overrides: Sequence[str] = (),
    dev_only: bool = False,
    on_result: Callable[[SeedResult], None] | None = None,
    protocols: Sequence[str] = tuple(PROTOCOLS),
) -> BenchmarkRun:
    """Every experiment (a config name or YAML path) with every seed on the StockNet copy at `data`, under each
    protocol; text experiments also train their placebo twin."""
    from finfusion.families.movement_evaluation import reads_texts

    try:
        configs = [load_config(name, overrides) for name in experiments]
    except ConfigError as exc:
        raise FinfusionError(str(exc)) from exc
    data_cfgs = {(c.data.dataset, c.data.encoder, int(c.data.lag_days), int(c.data.max_tweets)) for c in configs}
    if len(data_cfgs) != 1:
        raise FinfusionError(
            "the experiments of one benchmark run must share data.dataset, encoder, lag_days and max_tweets"
        )
    if unknown := [name for name in protocols if name not in PROTOCOLS]:
        raise FinfusionError(f"unknown protocol {unknown[0]!r}: use {', '.join(PROTOCOLS)}")
    ((dataset, encoder, lag_days, max_tweets),) = data_cfgs
    prepare_lake(lake, data, str(dataset), str(encoder))
    config = DailyMovementConfig(lag_days=lag_days, max_tweets=max_tweets)
    inputs = read_daily_inputs(lake, str(dataset), str(dataset), str(encoder), text_days="stocknet_files")
    samples = inputs.build(config)
    check_counts(samples)
    texts = [cfg for cfg in configs if reads_texts(str(cfg.model.name))]
    placebo = inputs.with_texts_permuted(PLACEBO_SEED).build(config) if texts else None
    done = []
    for protocol in protocols:
        keep = samples.every_step_has_text() if protocol == "tweets_every_day" else np.ones(len(samples.labels), bool)
        real = samples.restricted(keep)
        results = []
        for cfg in configs:
            variants = [(str(cfg.name), real)]
            if placebo is not None and cfg in texts:
                variants.append((f"{cfg.name}_placebo", placebo.restricted(keep)))
            for name, version in variants:
                data_part = family_data(version, cfg)
                for seed in seeds:
                    run_dir = runs / protocol / name / f"seed{seed}"
                    result = evaluate_seed(cfg, seed, run_dir, data_part, evaluate_test=not dev_only)
                    result = replace(result, experiment=name)
                    results.append(result)
                    if on_result is not None:
                        on_result(result)
        done.append(ProtocolRun(protocol, real, results))
    return BenchmarkRun(configs, done, samples_note(samples))


def samples_note(samples: DailyMovementSamples) -> str:
    counts = samples.counts()
    spans = ", ".join(f"{name} [{start}, {end}) {counts[name]:,}" for name, (start, end) in ACL18_SPLITS.items())
    return f"StockNet targets by split: {spans}; {samples.up_rate():.2%} up; lag window {samples.config.lag_days} days"
