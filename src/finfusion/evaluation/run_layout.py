"""The run folder contract: where a run's backtest, forecasts and metrics live, their columns, loaders and writers.

Every part is optional. A loader validates a part (columns, types, nulls, duplicates) and raises a
`DataValidationError` naming the file and the field; `load_run` loads whatever exists and lists what is missing.
See docs/report.md for the contract in prose.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import polars as pl

from finfusion.data.atomic import atomic_path
from finfusion.errors import DataValidationError, FinfusionError

EQUITY_FILE = "backtest/equity.parquet"
WEIGHTS_FILE = "backtest/weights.parquet"
FORECASTS_FILE = "forecasts.parquet"
METRICS_FILE = "metrics.json"
RUN_FILE = "run.json"
PARTS = (EQUITY_FILE, WEIGHTS_FILE, FORECASTS_FILE, METRICS_FILE)

Kind = Literal["datetime", "number", "integer", "string"]
Goal = Literal["max", "min", "min_abs"]
GOALS: tuple[Goal, ...] = ("max", "min", "min_abs")

#: column -> kind; required columns must be present; numbers must be finite.
EQUITY_COLUMNS: dict[str, Kind] = {"ts": "datetime", "strategy": "number"}
EQUITY_OPTIONAL: dict[str, Kind] = {"benchmark": "number"}
WEIGHTS_COLUMNS: dict[str, Kind] = {"ts": "datetime", "symbol": "string", "weight": "number"}
FORECAST_COLUMNS: dict[str, Kind] = {
    "symbol": "string",
    "ts": "datetime",
    "h": "integer",
    "target_ts": "datetime",
    "actual": "number",
}
FORECAST_OPTIONAL: dict[str, Kind] = {"model": "string", "base": "number", "mean": "number", "p_up": "number"}
#: Columns where null (or NaN, read as null) means "not known": an actual still to come, a weight after a wipe-out.
NULLABLE = frozenset({"actual", "benchmark", "weight"})
QUANTILE_PATTERN = re.compile(r"^q(0?\.\d+)$")


def quantile_column(level: float) -> str:
    """The column name of quantile `level` in forecasts.parquet, e.g. 0.1 -> 'q0.1', 0.025 -> 'q0.025'."""
    if not 0.0 < level < 1.0:
        raise FinfusionError(f"quantile level must be in (0, 1), got {level}")
    return f"q{level:f}".rstrip("0")


def quantile_columns(frame: pl.DataFrame) -> dict[float, str]:
    """Quantile level -> column name for every `q<level>` column, sorted by level."""
    found = {float(m.group(1)): name for name in frame.columns if (m := QUANTILE_PATTERN.match(name))}
    return dict(sorted(found.items()))


@dataclass(frozen=True)
class Metrics:
    """metrics.json: `models` maps a model (baselines included) to {metric: value}; `baselines` names the baselines;
    `goals` overrides whether a metric is best at its max, min or smallest absolute value; `significance` holds
    test results, each with at least `model`, `baseline` and `p_value`."""

    models: dict[str, dict[str, float]]
    baselines: list[str] = field(default_factory=list)
    goals: dict[str, Goal] = field(default_factory=dict)
    significance: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The metrics.json payload; NaN values become null."""
        return {
            "models": {m: {k: None if math.isnan(v) else v for k, v in vs.items()} for m, vs in self.models.items()},
            "baselines": self.baselines,
            "goals": self.goals,
            "significance": self.significance,
        }


@dataclass(frozen=True)
class RunInfo:
    """run.json (optional): a display name and the periods per year used to annualise."""

    name: str
    periods_per_year: float = 252.0
    rolling_window: int = 63


@dataclass(frozen=True)
class Run:
    """A loaded run folder: each part is None when its file is absent, and `missing` says which files are absent."""

    root: Path
    info: RunInfo
    equity: pl.DataFrame | None
    weights: pl.DataFrame | None
    forecasts: pl.DataFrame | None
    metrics: Metrics | None
    missing: list[str]


def _read_parquet(path: Path) -> pl.DataFrame:
    try:
        frame = pl.read_parquet(path)
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise DataValidationError(f"cannot read Parquet: {exc}", file=path) from exc
    if frame.is_empty():
        raise DataValidationError("has no rows", file=path)
    return frame


def _conforms(dtype: pl.DataType, kind: Kind) -> bool:
    if kind == "datetime":
        return isinstance(dtype, pl.Datetime | pl.Date)
    if kind == "number":
        return dtype.is_numeric()
    if kind == "integer":
        return dtype.is_integer()
    return dtype in (pl.String, pl.Categorical)


def _nan_as_null(frame: pl.DataFrame) -> pl.DataFrame:
    floats = [c for c in NULLABLE if c in frame.columns and frame.schema[c].is_float()]
    return frame.with_columns(pl.col(c).fill_nan(None) for c in floats)


def _check_columns(frame: pl.DataFrame, path: Path, required: dict[str, Kind], optional: dict[str, Kind]) -> None:
    for name in required:
        if name not in frame.columns:
            raise DataValidationError(f"missing required column (needs {', '.join(required)})", file=path, field=name)
    for name, kind in {**required, **optional}.items():
        if name not in frame.columns:
            continue
        if not _conforms(frame.schema[name], kind):
            raise DataValidationError(f"must be {kind}, got {frame.schema[name]}", file=path, field=name)
        if name not in NULLABLE and frame[name].null_count():
            raise DataValidationError(f"has {frame[name].null_count()} null values", file=path, field=name)
        if kind == "number" and frame.schema[name].is_float() and not frame[name].is_finite().all():
            raise DataValidationError("has NaN or infinite values", file=path, field=name)


def _check_unique(frame: pl.DataFrame, path: Path, key: list[str]) -> None:
    duplicated = frame.select(key).is_duplicated()
    if duplicated.any():
        first = frame.filter(duplicated).row(0, named=True)
        raise DataValidationError(f"duplicate rows for {first}", file=path, field=", ".join(key))


def _utc_datetimes(frame: pl.DataFrame, columns: list[str]) -> pl.DataFrame:
    """Date and naive datetime columns are read as UTC; every datetime column becomes Datetime(us, UTC)."""
    out = []
    for name in columns:
        dtype = frame.schema[name]
        if isinstance(dtype, pl.Datetime) and dtype.time_zone:
            out.append(pl.col(name).dt.convert_time_zone("UTC").dt.cast_time_unit("us"))
        else:
            out.append(pl.col(name).cast(pl.Datetime("us")).dt.replace_time_zone("UTC"))
    return frame.with_columns(out)


def check_equity(frame: pl.DataFrame, path: Path) -> pl.DataFrame:
    """Validate equity: ts, strategy (capital, e.g. starting at 1.0) and an optional benchmark; sorted by ts."""
    frame = _nan_as_null(frame)
    _check_columns(frame, path, EQUITY_COLUMNS, EQUITY_OPTIONAL)
    _check_unique(frame, path, ["ts"])
    columns = [c for c in (*EQUITY_COLUMNS, *EQUITY_OPTIONAL) if c in frame.columns]
    return _utc_datetimes(frame.select(columns), ["ts"]).sort("ts")


def check_weights(frame: pl.DataFrame, path: Path) -> pl.DataFrame:
    """Validate weights (long format): one row per ts and symbol with the weight held from ts on."""
    frame = _nan_as_null(frame)
    _check_columns(frame, path, WEIGHTS_COLUMNS, {})
    _check_unique(frame, path, ["ts", "symbol"])
    selected = frame.select(*WEIGHTS_COLUMNS).with_columns(pl.col("symbol").cast(pl.String))
    return _utc_datetimes(selected, ["ts"]).sort("ts", "symbol")


def check_forecasts(frame: pl.DataFrame, path: Path) -> pl.DataFrame:
    """Validate forecasts: one row per (model,) symbol, origin ts and step h >= 1, with quantiles and/or p_up."""
    frame = _nan_as_null(frame)
    _check_columns(frame, path, FORECAST_COLUMNS, FORECAST_OPTIONAL)
    quantiles = quantile_columns(frame)
    if not quantiles and "p_up" not in frame.columns:
        raise DataValidationError("needs quantile columns (q0.1, q0.5, ...) or p_up", file=path, field="q<level>")
    _check_columns(frame, path, {}, dict.fromkeys(quantiles.values(), "number"))
    if "p_up" in frame.columns and not frame["p_up"].is_between(0.0, 1.0).all():
        raise DataValidationError("must lie in [0, 1]", file=path, field="p_up")
    if (frame["h"] < 1).any():
        raise DataValidationError("horizon steps start at 1", file=path, field="h")
    keys = ["model", "symbol", "ts", "h"] if "model" in frame.columns else ["symbol", "ts", "h"]
    _check_unique(frame, path, keys)
    optional = [c for c in FORECAST_OPTIONAL if c in frame.columns]
    selected = frame.select(*FORECAST_COLUMNS, *optional, *quantiles.values()).with_columns(
        pl.col(c).cast(pl.String) for c in ("symbol", "model") if c in frame.columns
    )
    return _utc_datetimes(selected, ["ts", "target_ts"]).sort(keys)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataValidationError(f"cannot read JSON: {exc}", file=path) from exc


def _number(value: Any, path: Path, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DataValidationError(f"must be a number or null, got {value!r}", file=path, field=where)
    return float(value)


def parse_metrics(payload: Any, path: Path) -> Metrics:
    """metrics.json as {"models": {...}, "baselines": [...], "goals": {...}, "significance": [...]}.

    The plain form {model: {metric: value}} is accepted too (no baselines marked). Null values become NaN.
    """
    if not isinstance(payload, dict):
        raise DataValidationError("must be a JSON object", file=path)
    structured = isinstance(payload.get("models"), dict)
    models_raw = payload["models"] if structured else payload
    models: dict[str, dict[str, float]] = {}
    for model, values in models_raw.items():
        if not isinstance(values, dict):
            raise DataValidationError("must map metric names to numbers", file=path, field=str(model))
        models[str(model)] = {
            str(k): math.nan if v is None else _number(v, path, f"{model}.{k}") for k, v in values.items()
        }
    for key, kind in (("baselines", list), ("goals", dict), ("significance", list)):
        if structured and not isinstance(payload.get(key, kind()), kind):
            raise DataValidationError(f"must be a JSON {'array' if kind is list else 'object'}", file=path, field=key)
    baselines = [str(b) for b in payload.get("baselines", [])] if structured else []
    unknown = [b for b in baselines if b not in models]
    if unknown:
        raise DataValidationError(f"baselines {unknown} have no metrics under 'models'", file=path, field="baselines")
    goals = dict(payload.get("goals", {})) if structured else {}
    for metric, goal in goals.items():
        if goal not in GOALS:
            raise DataValidationError(f"must be one of {', '.join(GOALS)}", file=path, field=f"goals.{metric}")
    significance = list(payload.get("significance", [])) if structured else []
    for index, test in enumerate(significance):
        if not isinstance(test, dict) or not {"model", "baseline", "p_value"} <= test.keys():
            raise DataValidationError(
                "each test needs model, baseline and p_value", file=path, field=f"significance[{index}]"
            )
    return Metrics(models=models, baselines=baselines, goals=goals, significance=significance)


def load_equity(path: Path) -> pl.DataFrame:
    return check_equity(_read_parquet(path), path)


def load_weights(path: Path) -> pl.DataFrame:
    return check_weights(_read_parquet(path), path)


def load_forecasts(path: Path) -> pl.DataFrame:
    return check_forecasts(_read_parquet(path), path)


def load_metrics(path: Path) -> Metrics:
    return parse_metrics(_read_json(path), path)


def load_info(root: Path) -> RunInfo:
    """run.json, or defaults (the folder's name, 252 periods a year, a 63-period window) when it is absent."""
    path = root / RUN_FILE
    if not path.exists():
        return RunInfo(name=root.resolve().name)
    payload = _read_json(path)
    if not isinstance(payload, dict):
        raise DataValidationError("must be a JSON object", file=path)
    info = RunInfo(
        name=str(payload.get("name", root.resolve().name)),
        periods_per_year=_number(payload.get("periods_per_year", 252), path, "periods_per_year"),
        rolling_window=int(_number(payload.get("rolling_window", 63), path, "rolling_window")),
    )
    if info.periods_per_year <= 0:
        raise DataValidationError("must be positive", file=path, field="periods_per_year")
    if info.rolling_window < 2:
        raise DataValidationError("must be at least 2", file=path, field="rolling_window")
    return info


def load_run(root: Path) -> Run:
    """Load every part of the run folder that exists; a part that exists but breaks the contract is an error."""
    if not root.is_dir():
        raise FinfusionError(f"{root}: run folder not found")
    present = {name: root / name for name in PARTS if (root / name).exists()}
    return Run(
        root=root,
        info=load_info(root),
        equity=load_equity(present[EQUITY_FILE]) if EQUITY_FILE in present else None,
        weights=load_weights(present[WEIGHTS_FILE]) if WEIGHTS_FILE in present else None,
        forecasts=load_forecasts(present[FORECASTS_FILE]) if FORECASTS_FILE in present else None,
        metrics=load_metrics(present[METRICS_FILE]) if METRICS_FILE in present else None,
        missing=missing_parts(root),
    )


def missing_parts(root: Path) -> list[str]:
    """The contract's files (relative paths) that the run folder lacks."""
    return [name for name in PARTS if not (root / name).exists()]


def _write_parquet(path: Path, frame: pl.DataFrame) -> Path:
    with atomic_path(path) as tmp:
        frame.write_parquet(tmp)
    return path


def write_equity(root: Path, frame: pl.DataFrame) -> Path:
    """Validate and write RUN/backtest/equity.parquet atomically."""
    path = root / EQUITY_FILE
    return _write_parquet(path, check_equity(frame, path))


def write_weights(root: Path, frame: pl.DataFrame) -> Path:
    """Validate and write RUN/backtest/weights.parquet atomically."""
    path = root / WEIGHTS_FILE
    return _write_parquet(path, check_weights(frame, path))


def write_forecasts(root: Path, frame: pl.DataFrame) -> Path:
    """Validate and write RUN/forecasts.parquet atomically."""
    path = root / FORECASTS_FILE
    return _write_parquet(path, check_forecasts(frame, path))


def dump_metrics(path: Path, metrics: Metrics) -> Path:
    """Write metrics as JSON atomically, keeping the order of models and metrics (NaN is written as null)."""
    payload = metrics.to_json()
    parse_metrics(payload, path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return path


def write_metrics(root: Path, metrics: Metrics) -> Path:
    """Validate and write RUN/metrics.json atomically."""
    return dump_metrics(root / METRICS_FILE, metrics)
