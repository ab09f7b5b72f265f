"""The model jobs: train, finetune (promoted only when validation improves) and predict, for any family.

Each takes the model steps it needs (see steps.py) and the features dataset's last instant as the end of its input.

train     trains from scratch on (start, end], saves a version and promotes it (a kill in between leaves a
          candidate, never a version marked promoted: the store derives that from its pointer). Up to date when the
          state file says it already trained on data up to `end`.
finetune  trains the served version further on the data it has not seen, (its data end, end], or with --latest
          HOURS on (end - HOURS, end]. Both the served version and the candidate are validated on that span by the
          same `validate` step; the candidate is promoted only when its loss is strictly lower (and finite).
          Otherwise the served model is unchanged and the candidate is kept as a version with status "rejected".
predict   writes the served version's predictions (the family's table: weights, forecasts, ...) for the decision
          instants after the last stored ones (or in the last HOURS) to the dataset named after the model; weights
          rows are tagged with the version that made them, every write's metadata names it.
"""

from __future__ import annotations

import math
from datetime import datetime

import polars as pl

from finfusion.data.lake import SYMBOL_RE, Lake
from finfusion.data.schema import SCHEMAS, WEIGHTS, TableSchema
from finfusion.errors import FinfusionError
from finfusion.serving.jobs import (
    JobError,
    JobResult,
    JobRunner,
    JobState,
    PipelineSpec,
    Span,
    last_instant,
    latest_start,
)
from finfusion.serving.model_store import REJECTED, ModelStore, StoredModel
from finfusion.serving.steps import FinetuneFn, ModelArtifact, PredictFn, TrainFn, ValidateFn

#: The column of a table (weights) that records the model version which wrote each row.
VERSION_COLUMN = "model_version"


def features_end(lake: Lake, spec: PipelineSpec) -> datetime:
    """The last instant of the features dataset; raises JobError when it has none."""
    end = last_instant(lake, "features", spec.features, "ts", spec.freq)
    if end is None:
        raise JobError(f"no {spec.freq} features dataset '{spec.features}' in {lake.root}: run the features job first")
    return end


def run_train(
    runner: JobRunner,
    lake: Lake,
    store: ModelStore,
    spec: PipelineSpec,
    train: TrainFn,
    *,
    latest_hours: float | None = None,
) -> JobResult:
    """Train a new version on the features up to their end (the last `latest_hours` only, when given); promote it."""
    job = f"train.{spec.model}"

    def work(state: JobState) -> JobResult:
        end = features_end(lake, spec)
        if state.last_processed is not None and state.last_processed >= end:
            return JobResult(job, "up-to-date", f"already trained on data up to {end}")
        span = Span(latest_start(end, latest_hours), end)
        artifact = train(lake, spec, span)
        info = {"kind": "train", "parent": None, "data": span.as_dict()}
        version = store.save_version(artifact.state_dict, artifact.config, artifact.metrics, info=info)
        store.promote(version)
        details = {"version": version, "metrics": store.version(version).metrics}
        return JobResult(job, "done", f"trained and promoted version {version}", span, end, details)

    return runner.run(job, work)


def run_finetune(
    runner: JobRunner,
    lake: Lake,
    store: ModelStore,
    spec: PipelineSpec,
    finetune: FinetuneFn,
    validate: ValidateFn,
    *,
    latest_hours: float | None = None,
) -> JobResult:
    """Finetune the served version; promote the candidate only when its validation loss is lower."""
    job = f"finetune.{spec.model}"

    def work(state: JobState) -> JobResult:
        end = features_end(lake, spec)
        base = store.load()
        seen = _latest_of(state.last_processed, _data_end(store, base.version))
        if seen is not None and seen >= end:
            return JobResult(job, "up-to-date", f"version {base.version} has seen the data up to {end}")
        start = latest_start(end, latest_hours)
        span = Span(start if start is not None else seen, end)
        served = _artifact(base)
        base_loss = float(validate(lake, spec, span, served))
        candidate = finetune(lake, spec, span, served)
        candidate_loss = float(validate(lake, spec, span, candidate))
        improved = math.isfinite(candidate_loss) and (not math.isfinite(base_loss) or candidate_loss < base_loss)
        comparison = f"validation loss {candidate_loss:.6g} vs {base_loss:.6g} of {base.version}"
        info = {"kind": "finetune", "parent": base.version, "data": span.as_dict(), "note": comparison}
        if not improved:
            info["status"] = REJECTED
        metrics = {**candidate.metrics, "val_loss": candidate_loss, "base_val_loss": base_loss}
        version = store.save_version(candidate.state_dict, candidate.config, metrics, info=info)
        details = {"candidate": version, "base": base.version, "val_loss": candidate_loss, "base_val_loss": base_loss}
        if not improved:
            message = f"candidate {version} rejected ({comparison}); {base.version} stays current"
            return JobResult(job, "rejected", message, span, end, details)
        store.promote(version)
        return JobResult(job, "done", f"promoted {version} ({comparison})", span, end, details)

    return runner.run(job, work)


def run_predict(
    runner: JobRunner,
    lake: Lake,
    store: ModelStore,
    spec: PipelineSpec,
    predict: PredictFn,
    *,
    table: str = WEIGHTS.kind,
    latest_hours: float | None = None,
) -> JobResult:
    """Write the served version's predictions (rows of lake table `table`, dataset = the model's name) for the
    decision instants that have none (or the last `latest_hours`)."""
    job = f"predict.{spec.model}"
    schema = SCHEMAS[table]

    def work(_: JobState) -> JobResult:
        end = features_end(lake, spec)
        start = latest_start(end, latest_hours)
        if start is None:
            start = last_instant(lake, table, spec.model, schema.time_column)
            if start is not None and start >= end:
                return JobResult(job, "up-to-date", f"{table} exist up to {end}, the last features")
        model = store.load()
        span = Span(start, end)
        rows = checked_rows(predict(lake, spec, span, _artifact(model)), schema, span, model.version)
        if rows.height == 0:
            return JobResult(job, "up-to-date", f"the model made no decision in ({start}, {end}]", span)
        metadata = {"model": spec.model, "features": spec.features, "version": model.version}
        result = lake.write(schema, spec.model, rows, metadata=metadata)
        details = {"rows": rows.height, "decisions": rows[schema.time_column].n_unique(), "version": model.version}
        if not result.files_written:
            return JobResult(job, "up-to-date", f"recomputed {table} equal the stored ones", span, details=details)
        message = f"{details['decisions']:,} decisions of version {model.version}"
        return JobResult(job, "done", message, span, end, details)

    return runner.run(job, work)


def checked_rows(frame: pl.DataFrame, schema: TableSchema, span: Span, version: str) -> pl.DataFrame:
    """Rows of `schema`'s table from a predict step (a `model_version` column, where the table has one, is set to
    `version`).

    Raises FinfusionError on a missing column or value, a decision outside `span`, a repeated key, a symbol that
    cannot name a lake partition, or a non-finite number.
    """
    stamped = VERSION_COLUMN in schema.names
    required = [c.name for c in schema.columns if c.required and c.name != VERSION_COLUMN]
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise FinfusionError(f"predict step returned no column(s) {', '.join(missing)} (needs {', '.join(required)})")
    rows = schema.conform(frame.with_columns(pl.lit(version).alias(VERSION_COLUMN)) if stamped else frame)
    not_null = [c.name for c in schema.columns if not c.nullable]
    if rows.select(not_null).null_count().sum_horizontal().item():
        raise FinfusionError(f"predict step returned missing values (null {' or '.join(not_null)})")
    outside = rows.filter(~span.mask(schema.time_column))
    if outside.height:
        raise FinfusionError(
            f"predict step returned a decision at {outside[schema.time_column][0]}, outside the span {span}"
        )
    if rows.select(pl.struct(*schema.key).is_duplicated().any()).item():
        raise FinfusionError(f"predict step returned two {schema.kind} rows for one ({', '.join(schema.key)})")
    if "symbol" in rows.columns:
        bad = [s for s in rows["symbol"].unique().to_list() if not SYMBOL_RE.match(s)]
        if bad:
            raise FinfusionError(f"predict step returned invalid symbol(s) {bad[:5]}")
    floats = [name for name, dtype in rows.schema.items() if dtype == pl.Float64]
    finite = pl.all_horizontal(pl.col(floats).is_finite() | pl.col(floats).is_null())
    if floats and not rows.select(finite).to_series().all():
        raise FinfusionError("predict step returned a non-finite number")
    return rows


def _artifact(model: StoredModel) -> ModelArtifact:
    return ModelArtifact(state_dict=model.state_dict, config=model.config, metrics=model.metrics)


def _data_end(store: ModelStore, version: str) -> datetime | None:
    """The end of the data `version` was trained on, from its version.json."""
    end = (store.version(version).info.get("data") or {}).get("end")
    return datetime.fromisoformat(end) if end else None


def _latest_of(*instants: datetime | None) -> datetime | None:
    known = [t for t in instants if t is not None]
    return max(known) if known else None
