"""The HTTP API over real HTTP: uvicorn on 127.0.0.1 (a free port) in a thread, httpx as the client."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import polars as pl
import pytest
import schemathesis
import torch
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from typer.testing import CliRunner

from finfusion.commands.serve import app as serve_app
from finfusion.data.lake import ENV_LAKE, Lake
from finfusion.data.schema import FORECASTS, WEIGHTS
from finfusion.serving import readers
from finfusion.serving.api import ENV_API_KEY, ENV_MODEL, ENV_STORE, app_from_env, create_app
from finfusion.serving.model_store import ModelStore
from finfusion.serving.readers import WeightsReader
from tests.serving_helpers import serving

KEY = "s3cret-key"
AUTH = {"X-API-Key": KEY}
MODEL = "cga"
SYMBOLS = ["AAA", "BBB", "CCC"]
#: Decision instants across a year boundary, so weights live in two year files.
DECISIONS = [datetime(2023, 12, 28, 21, tzinfo=UTC), datetime(2023, 12, 29, 21, tzinfo=UTC)] + [
    datetime(2024, 1, day, 21, tzinfo=UTC) for day in (2, 3, 4)
]


def weights_frame(decisions: list[datetime], version: str) -> pl.DataFrame:
    """Weights [ts, symbol, weight, model_version]: at decision i, AAA long 0.5 + i/100, the others short."""
    rows = []
    for i, ts in enumerate(decisions):
        long = 0.5 + i / 100
        rows += [(ts, "AAA", long, version), (ts, "BBB", -long / 2, version), (ts, "CCC", -long / 2, version)]
    return pl.DataFrame(rows, schema=WEIGHTS.names, orient="row")


def forecasts_frame() -> pl.DataFrame:
    origins = [datetime(2024, 1, day, 21, tzinfo=UTC) for day in (2, 3, 4, 5)]
    rows = [
        (symbol, origin, step, "close", 100.0 + step, None, 99.0, 101.0 + step)
        for symbol in ("AAA", "BBB")
        for origin in origins
        for step in (1, 2)
    ]
    frame = pl.DataFrame(rows, schema=[*FORECASTS.names, "q0.1", "q0.9"], orient="row")
    return frame.with_columns(point=pl.when(pl.col("step") == 2).then(float("nan")).otherwise("point"))


@dataclass(frozen=True)
class Served:
    url: str
    lake: Lake
    store: ModelStore
    versions: list[str]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("api")
    lake = Lake(root / "lake")
    store = ModelStore(root / "store", MODEL)
    first = store.save_version({"w": torch.zeros(3)}, {"d_model": 16}, {"val_loss": 0.5}, info={"kind": "train"})
    second = store.save_version(
        {"w": torch.ones(3)}, {"d_model": 16}, {"val_loss": 0.4}, info={"kind": "finetune", "parent": first}
    )
    store.promote(second)
    lake.write(WEIGHTS, MODEL, weights_frame(DECISIONS, second))
    lake.write(FORECASTS, "run1", forecasts_frame())
    lake.write(
        FORECASTS, "run1", forecasts_frame().filter(pl.col("symbol") == "AAA").with_columns(symbol=pl.lit("EVIL"))
    )
    committed = lake.dataset_dir("forecasts", "run1") / "symbol=EVIL"  # a committed folder swapped for a link out
    outside = root / "outside" / "symbol=EVIL"
    outside.parent.mkdir(parents=True)
    committed.rename(outside)
    committed.symlink_to(outside, target_is_directory=True)
    with serving(create_app(lake.root, store.root, KEY, MODEL)) as url:
        yield Served(url, lake, store, [first, second])


@pytest.fixture(scope="module")
def client(served: Served) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=served.url, headers=AUTH, timeout=10) as http:
        yield http


def assert_error(response: httpx.Response, status: int, *fragments: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "message", "details"}
    for fragment in fragments:
        assert fragment in body["message"], body["message"]


def test_health_needs_no_key(served: Served) -> None:
    response = httpx.get(f"{served.url}/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "model": MODEL, "current_version": served.versions[1]}


@pytest.mark.parametrize("headers", [{}, {"X-API-Key": "wrong"}, {"X-API-Key": KEY + "x"}, {"X-API-Key": ""}])
@pytest.mark.parametrize("path", ["/v1/weights/latest", "/v1/models", "/v1/forecasts/AAA?dataset=run1"])
def test_missing_or_wrong_key_is_401(served: Served, headers: dict[str, str], path: str) -> None:
    assert_error(httpx.get(f"{served.url}{path}", headers=headers), 401, "X-API-Key")


def test_latest_weights(client: httpx.Client) -> None:
    body = client.get("/v1/weights/latest").json()
    assert body["ts"] == "2024-01-04T21:00:00Z" and body["model"] == MODEL
    assert [(w["symbol"], w["weight"]) for w in body["weights"]] == [("AAA", 0.54), ("BBB", -0.27), ("CCC", -0.27)]
    assert body["gross"] == pytest.approx(1.08) and body["net"] == pytest.approx(0.0)


@pytest.mark.parametrize(
    ("at", "expected"),
    [
        ("2024-01-03T21:00:00Z", "2024-01-03T21:00:00Z"),  # exactly a decision instant
        ("2024-01-03T23:59:00+02:00", "2024-01-03T21:00:00Z"),  # 21:59 UTC, after it
        ("2024-01-02T12:00:00Z", "2023-12-29T21:00:00Z"),  # before the year's first: the previous year's last
        ("2030-01-01T00:00:00Z", "2024-01-04T21:00:00Z"),
    ],
)
def test_weights_at_or_before(client: httpx.Client, at: str, expected: str) -> None:
    response = client.get("/v1/weights", params={"at": at})
    assert response.status_code == 200 and response.json()["ts"] == expected


def test_weights_before_the_first_decision_is_404(client: httpx.Client) -> None:
    assert_error(client.get("/v1/weights", params={"at": "2020-01-01T00:00:00Z"}), 404, "no weights at or before")


@pytest.mark.parametrize(
    ("at", "fragment"),
    [
        ("2024-01-03", "no timezone"),
        ("2024-01-03T10:00:00", "no timezone"),
        ("yesterday", "not an ISO-8601 time"),
        ("2024-13-01T00:00:00Z", "not an ISO-8601 time"),
        ("0001-01-01T00:00:00+23:59", "out of range"),
    ],
)
def test_bad_times_are_422(client: httpx.Client, at: str, fragment: str) -> None:
    assert_error(client.get("/v1/weights", params={"at": at}), 422, "query.at", fragment)


def test_missing_time_is_422(client: httpx.Client) -> None:
    assert_error(client.get("/v1/weights"), 422, "query.at")


def test_forecasts(client: httpx.Client) -> None:
    body = client.get("/v1/forecasts/AAA", params={"dataset": "run1"}).json()
    assert body["count"] == 8 and not body["truncated"] and body["symbol"] == "AAA"
    first, second = body["rows"][:2]
    assert first == {
        "origin_ts": "2024-01-02T21:00:00Z",
        "step": 1,
        "target": "close",
        "point": 101.0,
        "realised": None,
        "values": {"q0.1": 99.0, "q0.9": 102.0},
    }
    assert second["step"] == 2 and second["point"] is None  # NaN becomes null, never invalid JSON
    window = {"dataset": "run1", "start": "2024-01-03T00:00:00Z", "end": "2024-01-04T21:00:00Z", "limit": 3}
    page = client.get("/v1/forecasts/AAA", params=window).json()
    assert [r["origin_ts"] for r in page["rows"]] == ["2024-01-03T21:00:00Z"] * 2 + ["2024-01-04T21:00:00Z"]
    assert page["truncated"] and page["count"] == 3


@pytest.mark.parametrize(
    ("path", "params", "status", "fragment"),
    [
        ("/v1/forecasts/AAA", {"dataset": "nope"}, 404, "no forecasts dataset 'nope'"),
        ("/v1/forecasts/ZZZ", {"dataset": "run1"}, 404, "no forecasts of symbol 'ZZZ'"),
        ("/v1/forecasts/EVIL", {"dataset": "run1"}, 404, "leads outside the lake root"),
        ("/v1/forecasts/%2E%2E", {"dataset": "run1"}, 422, "invalid symbol '..'"),
        ("/v1/forecasts/AAA", {"dataset": "../etc"}, 422, "invalid dataset '../etc'"),
        ("/v1/forecasts/AAA", {"dataset": "a" * 65}, 422, "query.dataset"),
        ("/v1/forecasts/AAA", {}, 422, "query.dataset"),
        ("/v1/forecasts/AAA", {"dataset": "run1", "limit": 10**9}, 422, "query.limit"),
        ("/v1/forecasts/AAA", {"dataset": "run1", "limit": 0}, 422, "query.limit"),
        ("/v1/forecasts/AAA", {"dataset": "run1", "start": "2024-01-05T00:00:00Z", "end": "2024-01-01T00:00:00Z"},
         422, "is after end"),
        ("/v1/models/not-a-version", {}, 422, "invalid version 'not-a-version'"),
        ("/v1/models/20200101T000000.000000Z", {}, 404, "no version '20200101T000000.000000Z'"),
        ("/v1/nothing", {}, 404, "Not Found"),
    ],
)  # fmt: skip
def test_bad_requests_get_clear_4xx(
    client: httpx.Client, path: str, params: dict[str, object], status: int, fragment: str
) -> None:
    assert_error(client.get(path, params=params), status, fragment)


def test_traversal_in_the_raw_path_never_reaches_files(served: Served) -> None:
    """`..` segments sent verbatim (no client-side normalisation) find no route."""
    with socket.create_connection(("127.0.0.1", int(served.url.rsplit(":", 1)[1])), timeout=10) as raw:
        raw.sendall(
            b"GET /v1/forecasts/../../etc/passwd?dataset=run1 HTTP/1.1\r\nHost: x\r\nX-API-Key: " + KEY.encode()
        )
        raw.sendall(b"\r\nConnection: close\r\n\r\n")
        reply = raw.recv(65536).decode("latin-1")
    assert reply.startswith("HTTP/1.1 404") and "root:" not in reply


def test_models_listing_and_detail(client: httpx.Client, served: Served) -> None:
    first, second = served.versions
    body = client.get("/v1/models").json()
    assert body["model"] == MODEL and body["current"] == second
    assert [(v["version"], v["current"], v["metrics"]["val_loss"]) for v in body["versions"]] == [
        (first, False, 0.5),
        (second, True, 0.4),
    ]
    assert body["versions"][1]["kind"] == "finetune" and body["versions"][1]["parent"] == first
    detail = client.get(f"/v1/models/{first}").json()
    assert detail["config"] == {"d_model": 16} and detail["version"] == first and not detail["current"]


def test_latest_weights_follow_new_writes(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake")
    store = ModelStore(tmp_path / "store", MODEL)
    with serving(create_app(lake.root, store.root, None, MODEL)) as url:
        assert_error(httpx.get(f"{url}/v1/weights/latest"), 404, "no weights yet")
        lake.write(WEIGHTS, MODEL, weights_frame(DECISIONS[:2], "v1"))
        assert httpx.get(f"{url}/v1/weights/latest").json()["ts"] == "2023-12-29T21:00:00Z"
        lake.write(WEIGHTS, MODEL, weights_frame([DECISIONS[1] + timedelta(days=1)], "v2"))
        body = httpx.get(f"{url}/v1/weights/latest").json()
        assert body["ts"] == "2023-12-30T21:00:00Z" and body["weights"][0]["model_version"] == "v2"


def test_app_from_env_and_the_cli_key_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_LAKE, str(tmp_path / "lake"))
    monkeypatch.setenv(ENV_STORE, str(tmp_path / "store"))
    monkeypatch.setenv(ENV_MODEL, "other")
    monkeypatch.setenv(ENV_API_KEY, "from-env")
    with serving(app_from_env()) as url:
        assert httpx.get(f"{url}/health").json()["model"] == "other"
        assert httpx.get(f"{url}/v1/models").status_code == 401
        assert httpx.get(f"{url}/v1/models", headers={"X-API-Key": "from-env"}).json()["versions"] == []
    monkeypatch.delenv("FINFUSION_TEST_UNSET_KEY", raising=False)
    result = CliRunner().invoke(serve_app, ["api", "--api-key-env", "FINFUSION_TEST_UNSET_KEY"])
    assert result.exit_code != 0 and "FINFUSION_TEST_UNSET_KEY: that environment variable is not set" in result.output


def test_latest_weights_are_read_once_until_the_files_change(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lake = Lake(tmp_path)
    lake.write(WEIGHTS, MODEL, weights_frame(DECISIONS, "v1"))
    reads = []
    original = pl.read_parquet
    monkeypatch.setattr(readers.pl, "read_parquet", lambda *a, **k: reads.append(a[0]) or original(*a, **k))
    reader = WeightsReader(lake, MODEL)
    for _ in range(5):
        assert reader.latest().ts == DECISIONS[-1]
    assert len(reads) == 1  # the 2024 file, once
    assert reader.at(DECISIONS[0]).ts == DECISIONS[0] and len(reads) == 2  # the 2023 file, once
    lake.write(WEIGHTS, MODEL, weights_frame([DECISIONS[-1] + timedelta(days=1)], "v2"))
    reads.clear()  # (the lake's own merge read the file too)
    assert reader.latest().ts == DECISIONS[-1] + timedelta(days=1) and len(reads) == 1  # re-read once it changed


@pytest.mark.parametrize("mode", list(GenerationMode))
def test_fuzz_never_a_server_error(served: Served, mode: GenerationMode) -> None:
    """Schemathesis cases for every operation of the OpenAPI schema: valid ones, and invalid ones for those with
    parameters to break (the key header is always sent right, its absence is tested above). Never a 5xx."""
    schema = schemathesis.openapi.from_url(f"{served.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 6
    if mode is GenerationMode.NEGATIVE:
        operations = [op for op in operations if any(p.name != "X-API-Key" for p in op.iter_parameters())]
    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
        def check(case: schemathesis.Case) -> None:
            response = case.call(base_url=served.url, headers=AUTH)
            case.validate_response(response, checks=[not_a_server_error])

        check()
