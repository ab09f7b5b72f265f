"""Request parameters and response bodies of the HTTP API, all validated by pydantic.

Names follow the lake's rules (data/lake.py: NAME_RE for datasets, SYMBOL_RE for symbols), model versions the
store's (UTC timestamps), and times must be ISO-8601 with a timezone (naive times are ambiguous and refused).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import Path, Query
from pydantic import BaseModel, BeforeValidator, Field

from finfusion.data.lake import NAME_RE, SYMBOL_RE
from finfusion.serving.model_store import VERSION_RE

#: Most forecast rows one request returns.
MAX_LIMIT = 10_000
DEFAULT_LIMIT = 1_000
TIME_EXAMPLE = "2024-01-02T15:30:00Z"


def parse_instant(value: object) -> datetime:
    """An aware ISO-8601 time as UTC; ValueError (with what to write instead) for anything else."""
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(f"not an ISO-8601 time, e.g. {TIME_EXAMPLE}") from None
    else:
        raise ValueError(f"expected an ISO-8601 time text, e.g. {TIME_EXAMPLE}")
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise ValueError(f"time has no timezone: end it with Z or an offset such as %2B02:00 (e.g. {TIME_EXAMPLE})")
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        raise ValueError("time is out of range once converted to UTC") from None


Instant = Annotated[datetime, BeforeValidator(parse_instant)]
TIME_HELP = f"ISO-8601 time with a timezone, e.g. {TIME_EXAMPLE} (write '+' as %2B in a URL)."

SymbolPath = Annotated[
    str, Path(pattern=SYMBOL_RE.pattern, max_length=32, description="Ticker: letters, digits, '.', '_', '-', '^', '='.")
]
VersionPath = Annotated[
    str, Path(pattern=VERSION_RE.pattern, description="Model version: a UTC timestamp like 20240601T120000.123456Z.")
]
DatasetQuery = Annotated[
    str, Query(pattern=NAME_RE.pattern, max_length=64, description="Forecasts dataset (a run or model version).")
]
AtQuery = Annotated[Instant, Query(description="Weights at or before this time. " + TIME_HELP)]
StartQuery = Annotated[Instant | None, Query(description="Earliest forecast origin (inclusive). " + TIME_HELP)]
EndQuery = Annotated[Instant | None, Query(description="Latest forecast origin (inclusive). " + TIME_HELP)]
LimitQuery = Annotated[int, Query(ge=1, le=MAX_LIMIT, description=f"Most rows returned (1 to {MAX_LIMIT:,}).")]


class ErrorDetail(BaseModel):
    location: str = Field(description="Where the problem is, e.g. query.at or path.symbol.")
    message: str


class ErrorBody(BaseModel):
    """Every 4xx/5xx answer."""

    error: str = Field(description="Short code: invalid_request, unauthorized, not_found, ...")
    message: str
    details: list[ErrorDetail] = Field(default_factory=list)


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    model: str
    current_version: str | None


class WeightRow(BaseModel):
    symbol: str
    weight: float
    model_version: str


class WeightsSnapshot(BaseModel):
    """Portfolio weights of one decision instant."""

    model: str
    ts: datetime
    gross: float = Field(description="Sum of absolute weights.")
    net: float = Field(description="Sum of weights.")
    weights: list[WeightRow]


class ForecastRow(BaseModel):
    origin_ts: datetime
    step: int
    target: str
    point: float | None
    realised: float | None
    values: dict[str, float | None] = Field(description="Further columns: quantiles q0.1, ..., samples sample_0, ...")


class ForecastsPage(BaseModel):
    symbol: str
    dataset: str
    count: int
    truncated: bool = Field(description="More rows matched than `limit`: narrow the range or raise the limit.")
    rows: list[ForecastRow]


class VersionSummary(BaseModel):
    version: str
    created_at: datetime
    current: bool
    kind: str | None = Field(description="train or finetune.")
    status: str | None = Field(
        description="promoted, candidate (saved, never promoted) or rejected (a finetune that did not improve "
        "validation).",
    )
    parent: str | None
    metrics: dict[str, float | None]
    info: dict[str, Any]


class VersionDetail(VersionSummary):
    config: dict[str, Any]


class ModelVersions(BaseModel):
    model: str
    current: str | None
    versions: list[VersionSummary]
