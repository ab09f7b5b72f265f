"""The HTTP API: portfolio weights, forecasts and model versions, read from the lake and the model store.

    GET /health                                   no key needed
    GET /v1/weights/latest                        weights of the last decision instant
    GET /v1/weights?at=2024-01-02T15:30:00Z       weights of the last decision at or before `at`
    GET /v1/forecasts/{symbol}?dataset=D&start=&end=&limit=
    GET /v1/models                                versions with metrics, and which is current
    GET /v1/models/{version}                      one version with its config

With an API key, every /v1 request must carry it in the X-API-Key header (compared in constant time); a missing
or wrong key gets 401. Every error is JSON: {"error": code, "message": ..., "details": [{"location", "message"}]}.
The latest weights are answered from memory until a write replaces one of the weights files (mtime, size, inode).

`create_app` builds the app; `app_from_env` is the factory uvicorn imports (several workers, `--factory`).
"""

from __future__ import annotations

import hmac
import math
import os
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request, Response, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from finfusion import __version__
from finfusion.data.lake import ENV_LAKE, Lake
from finfusion.errors import FinfusionError, LakeError
from finfusion.serving.api_models import (
    DEFAULT_LIMIT,
    AtQuery,
    DatasetQuery,
    EndQuery,
    ErrorBody,
    ErrorDetail,
    ForecastRow,
    ForecastsPage,
    Health,
    LimitQuery,
    ModelVersions,
    StartQuery,
    SymbolPath,
    VersionDetail,
    VersionPath,
    VersionSummary,
    WeightRow,
    WeightsSnapshot,
)
from finfusion.serving.model_store import ModelStore, ModelStoreError, VersionInfo
from finfusion.serving.readers import Signature, Snapshot, WeightsReader, read_forecasts

API_KEY_HEADER = "X-API-Key"
ENV_STORE = "FINFUSION_STORE"
ENV_MODEL = "FINFUSION_MODEL"
ENV_API_KEY = "FINFUSION_API_KEY"
DEFAULT_STORE = "finfusion-models"
DEFAULT_MODEL = "cga"
JSON = "application/json"
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "Missing or wrong API key."},
    404: {"model": ErrorBody, "description": "Nothing found."},
    422: {"model": ErrorBody, "description": "Invalid parameter."},
}
#: What a valid value looks like, for parameters whose pattern a request broke.
PATTERN_HELP = {
    "symbol": "a symbol is 1-32 letters, digits, '.', '_', '-', '^' or '=', starting with a letter, digit or '^'",
    "dataset": "a dataset name is 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit",
    "version": "a model version is a UTC timestamp like 20240601T120000.123456Z",
}
ERROR_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    422: "invalid_request",
}


def create_app(lake_root: str | Path, store_root: str | Path, api_key: str | None, model_name: str) -> FastAPI:
    """The API over the lake at `lake_root` and model `model_name` in the store at `store_root`.

    `api_key` None serves /v1 without a key. Weights are read from the WEIGHTS dataset named `model_name`.
    """
    if api_key is not None and not api_key:
        raise FinfusionError("the API key is empty: give a non-empty key or none")
    lake = Lake(lake_root)
    store = ModelStore(store_root, model_name)
    weights = WeightsReader(lake, model_name)
    latest = _LatestCache(weights, model_name)

    app = FastAPI(
        title="finfusion",
        version=__version__,
        description="Portfolio weights, forecasts and model versions served from a finfusion lake.",
    )
    _install_error_handlers(app)
    router = APIRouter(prefix="/v1", dependencies=[Depends(_key_guard(api_key))], responses=ERROR_RESPONSES)

    @app.get("/health", response_model=Health, tags=["health"])
    def health() -> Health:
        return Health(model=model_name, current_version=store.current_version())

    @router.get("/weights/latest", response_model=WeightsSnapshot, tags=["weights"])
    async def latest_weights() -> Response:
        """Weights of the last decision instant."""
        signature, body = latest.lookup()
        if body is None:
            body = await run_in_threadpool(latest.build, signature)
        return Response(content=body, media_type=JSON)

    @router.get("/weights", response_model=WeightsSnapshot, tags=["weights"])
    def weights_at(at: AtQuery) -> WeightsSnapshot:
        """Weights of the last decision instant at or before `at`."""
        snapshot = weights.at(at)
        if snapshot is None:
            raise HTTPException(404, f"model '{model_name}' has no weights at or before {at.isoformat()}")
        return _weights_body(model_name, snapshot)

    @router.get("/forecasts/{symbol}", response_model=ForecastsPage, tags=["forecasts"])
    def forecasts(
        symbol: SymbolPath,
        dataset: DatasetQuery,
        start: StartQuery = None,
        end: EndQuery = None,
        limit: LimitQuery = DEFAULT_LIMIT,
    ) -> ForecastsPage:
        """Forecasts of `symbol` in `dataset` with start <= origin_ts <= end, by origin, step and target."""
        if start is not None and end is not None and start > end:
            raise HTTPException(422, f"start {start.isoformat()} is after end {end.isoformat()}")
        try:
            page = read_forecasts(lake, dataset, symbol, start, end, limit)
        except LakeError as exc:
            raise HTTPException(404, str(exc)) from exc
        rows = [
            ForecastRow(
                origin_ts=row["origin_ts"],
                step=row["step"],
                target=row["target"],
                point=_finite(row["point"]),
                realised=_finite(row.get("realised")),
                values={c: _finite(row[c]) for c in page.extra_columns},
            )
            for row in page.rows.iter_rows(named=True)
        ]
        return ForecastsPage(symbol=symbol, dataset=dataset, count=len(rows), truncated=page.truncated, rows=rows)

    @router.get("/models", response_model=ModelVersions, tags=["models"])
    def models() -> ModelVersions:
        """Every version of the model, oldest first, with its metrics; `current` is the one served."""
        versions = store.list_versions()
        return ModelVersions(
            model=model_name,
            current=next((v.version for v in versions if v.current), None),
            versions=[_summary(v) for v in versions],
        )

    @router.get("/models/{version}", response_model=VersionDetail, tags=["models"])
    def model_version(version: VersionPath) -> VersionDetail:
        """One version with its metrics and config."""
        try:
            info, config = store.version(version), store.load_config(version)
        except ModelStoreError as exc:
            raise HTTPException(404, f"model '{model_name}' has no version '{version}'") from exc
        return VersionDetail(**_summary(info).model_dump(), config=config)

    app.include_router(router)
    return app


def app_from_env() -> FastAPI:
    """`create_app` from $FINFUSION_LAKE, $FINFUSION_STORE, $FINFUSION_MODEL and $FINFUSION_API_KEY (for uvicorn)."""
    return create_app(
        lake_root=os.environ.get(ENV_LAKE, "finfusion-data"),
        store_root=os.environ.get(ENV_STORE, DEFAULT_STORE),
        api_key=os.environ.get(ENV_API_KEY) or None,
        model_name=os.environ.get(ENV_MODEL, DEFAULT_MODEL),
    )


class _LatestCache:
    """The encoded latest-weights answer, rebuilt only when the weights files' signature changes."""

    def __init__(self, reader: WeightsReader, model: str) -> None:
        self.reader = reader
        self.model = model
        self._signature: Signature | None = None
        self._body = b""
        self._lock = threading.Lock()

    def lookup(self) -> tuple[Signature, bytes | None]:
        """(the files' signature, the cached answer when it is still valid) - a few stat calls, no reading."""
        signature = self.reader.signature()
        with self._lock:
            return signature, self._body if signature == self._signature else None

    def build(self, signature: Signature) -> bytes:
        """Read the latest weights for `signature` and cache the encoded answer."""
        snapshot = self.reader.latest(signature)
        if snapshot is None:
            raise HTTPException(404, f"model '{self.model}' has no weights yet: run the predict job")
        body = _weights_body(self.model, snapshot).model_dump_json().encode("utf-8")
        with self._lock:
            self._signature, self._body = signature, body
        return body


def _weights_body(model: str, snapshot: Snapshot) -> WeightsSnapshot:
    rows = snapshot.rows
    return WeightsSnapshot(
        model=model,
        ts=snapshot.ts,
        gross=float(rows["weight"].abs().sum()),
        net=float(rows["weight"].sum()),
        weights=[WeightRow(**row) for row in rows.iter_rows(named=True)],
    )


def _summary(info: VersionInfo) -> VersionSummary:
    return VersionSummary(
        version=info.version,
        created_at=info.created_at,
        current=info.current,
        kind=info.info.get("kind"),
        status=info.info.get("status"),
        parent=info.info.get("parent"),
        metrics=info.metrics,
        info=info.info,
    )


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _key_guard(api_key: str | None) -> Callable[[str | None], Awaitable[None]]:
    header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False, description="The API key, when the server has one.")
    expected = api_key.encode("utf-8") if api_key is not None else None

    async def guard(given: str | None = Security(header)) -> None:
        if expected is None:
            return
        if given is None or not hmac.compare_digest(given.encode("utf-8"), expected):
            raise HTTPException(401, f"missing or wrong API key: send it in the {API_KEY_HEADER} header")

    return guard


def _explain(error: dict[str, Any]) -> str:
    """A validation error in words: the pattern a name must follow rather than the regular expression."""
    field = str(error.get("loc", ("",))[-1])
    if error.get("type") in ("string_pattern_mismatch", "string_too_long") and field in PATTERN_HELP:
        return f"invalid {field} {str(error.get('input'))[:40]!r}: {PATTERN_HELP[field]}"
    return str(error.get("msg", "invalid value")).removeprefix("Value error, ")


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(Exception)
    async def server_error(_: Request, exc: Exception) -> JSONResponse:
        body = ErrorBody(error="internal_error", message=f"the server failed to answer ({type(exc).__name__})")
        return JSONResponse(body.model_dump(), status_code=500)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        body = ErrorBody(error=ERROR_CODES.get(exc.status_code, f"http_{exc.status_code}"), message=str(exc.detail))
        return JSONResponse(body.model_dump(), status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        details = [
            ErrorDetail(location=".".join(str(part) for part in error.get("loc", ())), message=_explain(error))
            for error in exc.errors()
        ]
        message = "; ".join(f"{d.location}: {d.message}" for d in details) or "invalid request"
        body = ErrorBody(error="invalid_request", message=message, details=details)
        return JSONResponse(body.model_dump(), status_code=422)
