"""Shared fixtures: a temporary lake, the CLI runner, small bar files, byte snapshots of a lake and a loopback HTTP
server."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from finfusion.cli import app

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
STOCKNET = SHARED_DATA / "stocknet"
KDD17 = SHARED_DATA / "kdd17-acl18-advalstm"

#: Daily bars of two XNYS sessions and a half day (2014-11-26 Wed, 2014-11-28 Fri half day; 27th is Thanksgiving).
GOOD_BARS = """Date,Open,High,Low,Close,Adj Close,Volume
2014-11-24,10.0,10.5,9.8,10.2,10.2,1000
2014-11-25,10.2,10.6,10.0,10.4,10.4,1200
2014-11-26,10.4,10.9,10.3,10.8,10.8,900
2014-11-28,10.8,11.0,10.7,10.9,10.9,400
"""


def requires(path: Path) -> pytest.MarkDecorator:
    return pytest.mark.skipif(not path.exists(), reason=f"public dataset not found at {path} (needs ../shared/data)")


@pytest.fixture
def lake_root(tmp_path: Path) -> Path:
    return tmp_path / "lake"


@pytest.fixture
def cli(lake_root: Path) -> Callable[..., Result]:
    """Run `finfusion ARGS --lake <tmp lake>` in-process; returns click's Result (exit_code, output, stderr)."""
    runner = CliRunner()

    def invoke(*args: str) -> Result:
        return runner.invoke(app, [*args, "--lake", str(lake_root)], catch_exceptions=False)

    return invoke


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under `root` (the lake), by relative path, with its bytes."""
    if not root.exists():
        return {}
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def write_text(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def http_folder(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A loopback HTTP server over a temporary folder: (base url, folder)."""
    root = tmp_path / "www"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(root), **kwargs)  # type: ignore[arg-type]

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(autouse=True)
def untracked(monkeypatch: pytest.MonkeyPatch) -> None:
    """Commands run by tests are not tracked in MLflow (tests/test_tracking.py switches it back on)."""
    monkeypatch.setenv("FINFUSION_TRACKING", "off")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """Torch on one thread for a module (`pytestmark = pytest.mark.usefixtures("one_thread")`): its results do not
    depend on how many cores the worker has, and two workers do not fight over them."""
    from tests.portfolio_helpers import single_thread

    with single_thread():
        yield
