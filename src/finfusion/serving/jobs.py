"""The batch-job framework: one lock per job, an atomically written state file, and the span of work to do.

Every job (ingest, features, train, finetune, predict; see data_jobs.py and model_jobs.py) computes its work from
the state of the lake and the model store, writes its outputs atomically (lake writes merge rows by key), and only
then records the last instant it processed. So a job is safe to rerun at any moment: after a crash it redoes what
was not written, and after a success it finds nothing new and does nothing.

Spans are half-open: (start, end], `start` None meaning from the beginning. By default a job starts where the lake
(or its state) says it stopped. `--latest HOURS` instead restricts it to (end - HOURS, end], `end` being the last
instant of its input data, and recomputes that window (rows that did not change are not rewritten).

    LAKE/_jobs/<job>.<target>.json   state: last processed instant, when, and what the last run did
    LAKE/_jobs/<job>.<target>.lock   held (flock) while the job runs; released by the OS if the process dies
"""

from __future__ import annotations

import fcntl
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import polars as pl

from finfusion.data.atomic import write_json_atomic
from finfusion.data.catalog import Catalog
from finfusion.data.lake import Lake, check_name
from finfusion.errors import FinfusionError
from finfusion.training.tracking import tracked_run

STATE_DIR = "_jobs"
#: The MLflow experiment of the serve jobs' runs (tracked when a command switches tracking on).
JOBS_EXPERIMENT = "serve-jobs"
Status = Literal["done", "up-to-date", "rejected"]


class JobError(FinfusionError):
    """A job cannot run: it is already running, or its inputs are missing or wrong."""


@dataclass(frozen=True)
class PipelineSpec:
    """The lake datasets and the model a pipeline of jobs works on. Weights go to WEIGHTS dataset `model`."""

    bars: str
    freq: str = "1d"
    texts: str | None = None
    features_name: str | None = None
    model: str = "cga"

    def __post_init__(self) -> None:
        for what, value in (("bars", self.bars), ("text", self.texts), ("features", self.features_name)):
            if value is not None:
                check_name(value, what)
        check_name(self.model, "model")

    @property
    def features(self) -> str:
        """The features dataset (default: named like the bars)."""
        return self.features_name or self.bars


@dataclass(frozen=True)
class Span:
    """Instants start < t <= end (UTC); start None: everything up to end."""

    start: datetime | None
    end: datetime

    def mask(self, column: str) -> pl.Expr:
        inside = pl.col(column) <= self.end
        return inside if self.start is None else inside & (pl.col(column) > self.start)

    def as_dict(self) -> dict[str, str | None]:
        return {"start": self.start.isoformat() if self.start else None, "end": self.end.isoformat()}


@dataclass(frozen=True)
class JobState:
    """What the state file says: the last instant the job processed (None before its first success)."""

    last_processed: datetime | None = None
    updated_at: datetime | None = None
    last_result: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class JobResult:
    """What one run did. `processed_until`, when set, is recorded in the state file."""

    job: str
    status: Status
    message: str
    span: Span | None = None
    processed_until: datetime | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def did_work(self) -> bool:
        return self.status != "up-to-date"

    def summary(self) -> dict[str, Any]:
        return {
            "job": self.job,
            "status": self.status,
            "message": self.message,
            "span": self.span.as_dict() if self.span else None,
            "processed_until": self.processed_until.isoformat() if self.processed_until else None,
            "details": self.details,
        }


class JobRunner:
    """Runs jobs under their lock and keeps their state files in `state_dir`."""

    def __init__(self, state_dir: str | Path, *, clock: Callable[[], datetime] | None = None) -> None:
        self.state_dir = Path(state_dir)
        self._clock = clock or (lambda: datetime.now(UTC))

    @classmethod
    def for_lake(cls, lake: Lake) -> JobRunner:
        return cls(lake.root / STATE_DIR)

    def state_path(self, job: str) -> Path:
        return self.state_dir / f"{check_name(job, 'job')}.json"

    def state(self, job: str) -> JobState:
        path = self.state_path(job)
        if not path.exists():
            return JobState()
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
            last = payload.get("last_processed")
            updated = payload.get("updated_at")
            return JobState(
                last_processed=datetime.fromisoformat(last) if last else None,
                updated_at=datetime.fromisoformat(updated) if updated else None,
                last_result=payload.get("last_result") or {},
            )
        except (ValueError, TypeError, AttributeError) as exc:
            raise JobError(f"job state file {path} is unreadable ({exc}); delete it to start the job afresh") from exc

    @contextmanager
    def lock(self, job: str) -> Iterator[None]:
        """Hold job's lock; raises JobError at once when another process (or thread) holds it."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        path = self.state_dir / f"{check_name(job, 'job')}.lock"
        with open(path, "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as exc:
                raise JobError(f"job '{job}' is already running (lock {path} is held)") from exc
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def run(self, job: str, work: Callable[[JobState], JobResult]) -> JobResult:
        """Run `work` under the job's lock with its state; record the state only when `work` returns having done
        something and set `processed_until`."""
        with self.lock(job), tracked_run("job", job, experiment=JOBS_EXPERIMENT) as tracked:
            result = work(self.state(job))
            if tracked is not None:
                tracked.log_metrics(result.details)
                tracked.log_text(json.dumps(result.summary(), indent=2, default=str), "job.json")
            if result.did_work and result.processed_until is not None:
                payload = {
                    "job": job,
                    "last_processed": result.processed_until.isoformat(),
                    "updated_at": self._clock().astimezone(UTC).isoformat(),
                    "last_result": result.summary(),
                }
                write_json_atomic(self.state_path(job), payload)
            return result


def latest_start(end: datetime, latest_hours: float | None) -> datetime | None:
    """end - latest_hours (None without --latest). Raises JobError unless latest_hours is positive."""
    if latest_hours is None:
        return None
    if not latest_hours > 0:
        raise JobError(f"--latest must be a positive number of hours, got {latest_hours}")
    return end - timedelta(hours=latest_hours)


def last_instants(lake: Lake, kind: str, dataset: str, freq: str | None = None) -> dict[str, datetime]:
    """{symbol: last instant} of a per-symbol dataset ({} when the dataset does not exist)."""
    if not lake.files(kind, dataset, freq):
        return {}
    frame = Catalog(lake).symbols(kind, dataset, freq)
    return dict(zip(frame["symbol"].to_list(), frame["last"].to_list(), strict=True))


def last_instant(lake: Lake, kind: str, dataset: str, column: str, freq: str | None = None) -> datetime | None:
    """The largest `column` value of a dataset (None when it does not exist or is empty)."""
    files = lake.files(kind, dataset, freq)
    if not files:
        return None
    return pl.scan_parquet(files).select(pl.col(column).max()).collect().item()


def after_per_symbol(
    frame: pl.DataFrame, done: dict[str, datetime], start: datetime | None, column: str = "ts"
) -> pl.DataFrame:
    """Rows of `frame` [symbol, column, ...] after their symbol's `done` instant, or after `start` when given."""
    if start is not None:
        return frame.filter(pl.col(column) > start)
    if not done:
        return frame
    table = pl.DataFrame(
        {"symbol": list(done), "__done": list(done.values())},
        schema={"symbol": pl.String, "__done": frame.schema[column]},
    )
    joined = frame.join(table, on="symbol", how="left", maintain_order="left")
    return joined.filter(pl.col("__done").is_null() | (pl.col(column) > pl.col("__done"))).drop("__done")
