"""The data jobs: ingest new bars and texts, and extend the bar features, reusing the fitted normaliser.

ingest   A source (e.g. a drop folder of CSV/Parquet files) is read and validated by the ingest pipeline of
         data/ingest.py; of its rows, only those after the lake's last instant (per symbol for bars) are written, or
         with --latest HOURS those of the last HOURS of the source's data (corrections merge by key).
features Features of every bar are computed from the whole bar history (EWM indicators such as MACD depend on all
         of it, so a truncated history would not give the same values) and only the rows after each symbol's last
         stored feature are written, so the features equal a full rebuild's. A normaliser stored with the features
         dataset is always reused, never refitted; the first run fits one on [fit_start, fit_end) when asked.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Protocol

import polars as pl

from finfusion.data.ingest import (
    BarOptions,
    Prepared,
    TextOptions,
    ingest_policy,
    prepare_bar_ingest,
    prepare_text_ingest,
    write_prepared,
)
from finfusion.data.lake import Lake
from finfusion.data.schema import FEATURES
from finfusion.data.sources.csv_parquet import BAR_ALIASES, TEXT_ALIASES, read_raw
from finfusion.features.normalize import normalizer_path
from finfusion.features.pipeline import SAVED, Normalization, NormalizerFit, build_feature_set
from finfusion.serving.jobs import (
    JobError,
    JobResult,
    JobRunner,
    JobState,
    PipelineSpec,
    Span,
    after_per_symbol,
    last_instant,
    last_instants,
    latest_start,
)


class IngestSource(Protocol):
    """Validated rows to ingest (`Prepared` parts of the ingest pipeline); `dataset` names the job."""

    @property
    def dataset(self) -> str: ...

    def __call__(self) -> list[Prepared]: ...


@dataclass(frozen=True)
class FolderSource:
    """Bars (and optionally texts) from CSV/Parquet files or folders, read with the `data ingest csv` rules."""

    bars: Path
    bar_options: BarOptions
    texts: Path | None = None
    text_options: TextOptions | None = None

    @property
    def dataset(self) -> str:
        return self.bar_options.dataset

    def __call__(self) -> list[Prepared]:
        raw, rename, unmapped = read_raw(self.bars, aliases=BAR_ALIASES, symbol_from_filename=True)
        parts = [prepare_bar_ingest(raw, replace(self.bar_options, unmapped=unmapped), rename)]
        if self.texts is not None:
            options = self.text_options or TextOptions(dataset=self.dataset, source=self.bar_options.source)
            raw_texts, text_rename, text_unmapped = read_raw(self.texts, aliases=TEXT_ALIASES)
            parts.append(prepare_text_ingest(raw_texts, replace(options, unmapped=text_unmapped), text_rename))
        return parts


def run_ingest(runner: JobRunner, lake: Lake, source: IngestSource, *, latest_hours: float | None = None) -> JobResult:
    """Write the source's rows the lake lacks (or, with `latest_hours`, the source's last hours: asking for a window
    is asking to replace its stored values, so only then may stored rows change)."""
    job = f"ingest.{source.dataset}"

    def work(_: JobState) -> JobResult:
        parts = source()
        if not parts or all(part.frame.height == 0 for part in parts):
            return JobResult(job, "up-to-date", "the source has no rows")
        policy = ingest_policy(update=latest_hours is not None)
        todo = [replace(part, frame=_unseen(lake, part, latest_hours), policy=policy) for part in parts]
        todo = [part for part in todo if part.frame.height]
        timed = [part.frame[part.schema.time_column] for part in parts if part.schema.time_column and part.frame.height]
        end = max(column.max() for column in timed) if timed else None
        reports = write_prepared(lake, todo)
        new = {f"{r.kind}/{r.dataset}": r.new_rows for r in reports}
        if not any(r.files_written for r in reports):
            message = "the lake already holds every row of the source"
            return JobResult(job, "up-to-date", message, details={"new_rows": new})
        return JobResult(
            job,
            "done",
            ", ".join(f"{n:,} new {what} rows" for what, n in new.items()),
            processed_until=end,
            details={"new_rows": new, "updated_rows": {f"{r.kind}/{r.dataset}": r.updated_rows for r in reports}},
        )

    return runner.run(job, work)


def _unseen(lake: Lake, part: Prepared, latest_hours: float | None) -> pl.DataFrame:
    """Rows of `part` not yet in the lake (bars: after their symbol's last bar; others: from the last instant on, as
    rows at that very instant may be new), or with `latest_hours` those in the last hours of the part."""
    schema, frame, dataset = part.schema, part.frame, part.report.dataset
    column = schema.time_column
    if column is None or frame.height == 0:
        return frame
    start = latest_start(frame[column].max(), latest_hours)
    if "symbol" in schema.partition_by:
        done = last_instants(lake, schema.kind, dataset, part.freq) if start is None else {}
        return after_per_symbol(frame, done, start, column)
    if start is not None:
        return frame.filter(pl.col(column) > start)
    last = last_instant(lake, schema.kind, dataset, column, part.freq)
    return frame if last is None else frame.filter(pl.col(column) >= last)


@dataclass(frozen=True)
class FeatureJobOptions:
    """How the first run normalises: `normalize` (zscore or robust) fitted on [fit_start, fit_end). Later runs reuse
    the stored normaliser whatever these say."""

    normalize: str | None = None
    fit_start: str | None = None
    fit_end: str | None = None


def run_features(
    runner: JobRunner,
    lake: Lake,
    spec: PipelineSpec,
    options: FeatureJobOptions | None = None,
    *,
    latest_hours: float | None = None,
) -> JobResult:
    """Write the features of the bars that have none yet (or of the bars in the last `latest_hours`)."""
    options = options or FeatureJobOptions()
    job = f"features.{spec.features}"

    def work(_: JobState) -> JobResult:
        bars_last = last_instants(lake, "bars", spec.bars, spec.freq)
        if not bars_last:
            raise JobError(f"no {spec.freq} bars dataset '{spec.bars}' in {lake.root}: run the ingest job first")
        done = last_instants(lake, "features", spec.features, spec.freq)
        end = max(bars_last.values())
        start = latest_start(end, latest_hours)
        if start is None and all(symbol in done and done[symbol] >= ts for symbol, ts in bars_last.items()):
            return JobResult(job, "up-to-date", f"features '{spec.features}' cover every bar (last {end})")
        normalization, how = _normalization(lake, spec, options, has_rows=bool(done))
        built = build_feature_set(lake, spec.bars, spec.freq, spec.features, normalization)
        todo = after_per_symbol(built.frame, done, start)
        result = lake.write(FEATURES, spec.features, todo, freq=spec.freq, metadata=built.metadata)
        span = Span(start if start is not None else _earliest(done), end)
        details = {"rows": todo.height, "files_written": result.files_written, "normalizer": how}
        if not result.files_written:
            return JobResult(job, "up-to-date", "recomputed features equal the stored ones", span, details=details)
        message = f"{todo.height:,} feature rows of {todo['symbol'].n_unique()} symbols (normaliser: {how})"
        return JobResult(job, "done", message, span, processed_until=end, details=details)

    return runner.run(job, work)


def _earliest(done: dict[str, datetime]) -> datetime | None:
    return min(done.values()) if done else None


def _normalization(
    lake: Lake, spec: PipelineSpec, options: FeatureJobOptions, *, has_rows: bool
) -> tuple[Normalization, str]:
    """(how the features are normalised, how the normaliser is obtained: reused / fitted / none): a stored normaliser
    is always reused; the first run fits one when asked."""
    if normalizer_path(lake, spec.features, spec.freq).exists():
        return SAVED, "reused"
    if options.normalize is None:
        return None, "none"
    if has_rows:
        raise JobError(
            f"features '{spec.features}' exist without a normaliser: write normalised features to a new dataset"
        )
    if options.fit_start is None or options.fit_end is None:
        raise JobError("normalising needs the training span: give fit_start and fit_end (ISO dates)")
    return NormalizerFit(options.normalize, options.fit_start, options.fit_end), "fitted"
