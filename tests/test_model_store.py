"""The model store: versions named by UTC timestamps, safetensors only, atomic promotion, previous versions kept,
a status derived from the pointer (never stored as promoted), staging folders of killed writers swept."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import torch

from finfusion.data.lake import Lake
from finfusion.errors import FinfusionError
from finfusion.serving import model_jobs, model_store
from finfusion.serving.jobs import JobRunner, PipelineSpec
from finfusion.serving.model_jobs import run_train
from finfusion.serving.model_store import (
    CURRENT_FILE,
    INFO_FILE,
    LOCK_FILE,
    STAGING_DIR,
    VERSION_RE,
    WEIGHTS_FILE,
    ModelStore,
    ModelStoreError,
    staging,
)
from finfusion.serving.steps import ModelArtifact


def ticking(start: datetime, step: timedelta = timedelta(seconds=1)) -> Callable[[], datetime]:
    """A clock that advances by `step` at every call."""
    now = [start - step]

    def clock() -> datetime:
        now[0] += step
        return now[0]

    return clock


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    return ModelStore(tmp_path / "store", "cga", clock=ticking(datetime(2024, 6, 1, 12, 0, tzinfo=UTC)))


def state(value: float) -> dict[str, torch.Tensor]:
    return {"linear.weight": torch.full((2, 3), value), "linear.bias": torch.zeros(2)}


def test_save_list_load_round_trip(store: ModelStore) -> None:
    first = store.save_version(state(1.0), {"d_model": 8, "layers": [1, 2]}, {"val_loss": 0.5}, info={"kind": "train"})
    second = store.save_version(state(2.0), {"d_model": 8}, {"val_loss": 0.4, "sharpe": float("nan")})
    assert first == "20240601T120000.000000Z" and VERSION_RE.match(second)
    assert [v.version for v in store.list_versions()] == [first, second]
    listed = store.list_versions()
    assert listed[0].metrics == {"val_loss": 0.5} and listed[0].info["kind"] == "train"
    assert listed[1].metrics == {"val_loss": 0.4, "sharpe": None}  # non-finite metrics are stored as null
    assert listed[0].created_at == datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
    assert store.load_config(first) == {"d_model": 8, "layers": [1, 2]}
    assert torch.equal(store.load_state_dict(first)["linear.weight"], torch.full((2, 3), 1.0))
    assert sorted(p.name for p in (store.versions_dir / first).iterdir()) == [
        "config.yaml",
        "metrics.json",
        "model.safetensors",
        "version.json",
    ]


def test_promote_switches_current_and_keeps_previous(store: ModelStore) -> None:
    assert store.current_version() is None
    with pytest.raises(ModelStoreError, match="no current version"):
        store.load()
    first = store.save_version(state(1.0), {}, {"val_loss": 0.5})
    second = store.save_version(state(2.0), {}, {"val_loss": 0.4})
    store.promote(first)
    assert store.current_version() == first
    store.promote(second)
    assert store.current_version() == second
    assert [(v.version, v.current) for v in store.list_versions()] == [(first, False), (second, True)]
    assert torch.equal(store.load().state_dict["linear.weight"], torch.full((2, 3), 2.0))
    assert torch.equal(store.load_state_dict(first)["linear.weight"], torch.full((2, 3), 1.0))  # still there
    leftovers = [p.name for p in store.home.iterdir() if p.name.startswith(".")]
    assert leftovers == []  # the pointer's temporary file was renamed, not left behind


def test_promote_is_one_rename(store: ModelStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """A crash before the rename leaves the old pointer intact: the switch happens only at os.replace."""
    first = store.save_version(state(1.0), {}, {})
    second = store.save_version(state(2.0), {}, {})
    store.promote(first)

    def crash(*_: object) -> None:
        raise OSError("power cut")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="power cut"):
        store.promote(second)
    monkeypatch.undo()
    assert store.current_version() == first
    assert (store.home / CURRENT_FILE).read_text(encoding="utf-8").strip() == first


def test_crash_while_saving_leaves_no_version(store: ModelStore, monkeypatch: pytest.MonkeyPatch) -> None:
    def crash(*_: object, **__: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(model_store, "write_json_atomic", crash)
    with pytest.raises(OSError, match="disk full"):
        store.save_version(state(1.0), {}, {"val_loss": 1.0})
    monkeypatch.undo()
    assert store.list_versions() == []
    assert list(store.versions_dir.iterdir()) == []  # the staging folder is removed too


def test_same_instant_gets_distinct_versions(tmp_path: Path) -> None:
    frozen = ModelStore(tmp_path, "m", clock=lambda: datetime(2024, 1, 1, tzinfo=UTC))
    a = frozen.save_version(state(1.0), {}, {})
    b = frozen.save_version(state(2.0), {}, {})
    assert a != b and [v.version for v in frozen.list_versions()] == [a, b]
    assert json.loads((frozen.versions_dir / b / "version.json").read_text())["version"] == b


def test_tied_weights_are_saved_as_copies(store: ModelStore) -> None:
    shared = torch.randn(4, 4)
    version = store.save_version({"encoder.weight": shared, "decoder.weight": shared}, {}, {})
    loaded = store.load_state_dict(version)
    assert torch.equal(loaded["encoder.weight"], shared) and torch.equal(loaded["decoder.weight"], shared)


def test_bad_requests_are_clear_errors(store: ModelStore) -> None:
    with pytest.raises(ModelStoreError, match=re.escape("invalid model version '../x'")):
        store.load_state_dict("../x")
    with pytest.raises(ModelStoreError, match=re.escape("no version '20200101T000000.000000Z'")):
        store.promote("20200101T000000.000000Z")
    with pytest.raises(ModelStoreError, match="'w' is a list, not a tensor"):
        store.save_version({"w": [1.0]}, {}, {})  # type: ignore[dict-item]
    with pytest.raises(ModelStoreError, match="cannot be stored as YAML"):
        store.save_version(state(1.0), {"f": object()}, {})
    with pytest.raises(FinfusionError, match="invalid model name"):
        ModelStore(store.root, "../escape")


def test_weights_file_is_safetensors_not_pickle(store: ModelStore) -> None:
    version = store.save_version(state(3.0), {}, {})
    raw = (store.versions_dir / version / WEIGHTS_FILE).read_bytes()
    header_len = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + header_len])
    assert set(header) >= {"linear.weight", "linear.bias"} and header["linear.weight"]["dtype"] == "F32"


def test_a_stored_config_is_read_back_as_text_never_resolved(
    store: ModelStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A config that names an environment variable (e.g. the API key) is served as the text it holds."""
    monkeypatch.setenv("FINFUSION_API_KEY", "secret")
    version = store.save_version(state(1.0), {"d_model": 8}, {"val_loss": 0.5})
    (store.versions_dir / version / "config.yaml").write_text("leak: ${oc.env:FINFUSION_API_KEY}\n", encoding="utf-8")
    assert store.load_config(version) == {"leak": "${oc.env:FINFUSION_API_KEY}"}
    assert "secret" not in json.dumps(store.load(version).config)


# ---------------------------------------------------------------- status: derived, never stored as promoted


def statuses(store: ModelStore) -> list[str]:
    return [v.info["status"] for v in store.list_versions()]


def test_a_kill_between_saving_and_promoting_leaves_a_candidate(
    store: ModelStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """run_train saves the version, then the process dies before the pointer moves: nothing claims it is served."""
    end = datetime(2024, 6, 1, tzinfo=UTC)
    monkeypatch.setattr(model_jobs, "features_end", lambda *_: end)

    def killed(*_: object) -> None:
        raise KeyboardInterrupt("kill -9 between save_version and promote")

    monkeypatch.setattr(ModelStore, "promote", killed)
    toy = ModelArtifact(state(1.0), {"d_model": 8}, {"val_loss": 0.5})
    with pytest.raises(KeyboardInterrupt):
        run_train(JobRunner(tmp_path / "jobs"), Lake(tmp_path / "lake"), store, PipelineSpec(bars="b"), lambda *_: toy)
    monkeypatch.undo()
    (saved,) = store.list_versions()
    assert store.current_version() is None and not saved.current
    assert saved.info["status"] == "candidate" and saved.info["kind"] == "train"
    assert "status" not in json.loads((store.versions_dir / saved.version / INFO_FILE).read_text())
    store.promote(saved.version)
    assert statuses(store) == ["promoted"]


def test_promoted_is_what_the_pointer_names_or_named(store: ModelStore, monkeypatch: pytest.MonkeyPatch) -> None:
    first, second, third = (store.save_version(state(v), {}, {}) for v in (1.0, 2.0, 3.0))
    rejected = store.save_version(state(4.0), {}, {}, info={"status": "rejected"})
    assert statuses(store) == ["candidate", "candidate", "candidate", "rejected"]
    store.promote(first)
    store.promote(second)
    assert statuses(store) == ["promoted", "promoted", "candidate", "rejected"]  # first was served: it stays promoted

    def killed(self: ModelStore, version: str) -> None:
        if version == third:
            raise KeyboardInterrupt("kill -9 after the pointer moved, before its mark")

    monkeypatch.setattr(ModelStore, "_mark_promoted", killed)
    with pytest.raises(KeyboardInterrupt):
        store.promote(third)
    monkeypatch.undo()
    assert store.current_version() == third and statuses(store)[2] == "promoted"  # the pointer says so
    store.promote(rejected)  # marks third (the outgoing version) before moving the pointer
    assert statuses(store) == ["promoted"] * 4 and store.version(third).info["status"] == "promoted"


def test_a_stored_promoted_status_is_not_believed_and_cannot_be_saved(store: ModelStore) -> None:
    version = store.save_version(state(1.0), {}, {})
    info_file = store.versions_dir / version / INFO_FILE
    info_file.write_text(json.dumps({**json.loads(info_file.read_text()), "status": "promoted"}))  # an older store
    assert store.version(version).info["status"] == "candidate"
    with pytest.raises(ModelStoreError, match="status can only be 'rejected', not 'promoted'"):
        store.save_version(state(2.0), {}, {}, info={"status": "promoted"})


# ---------------------------------------------------------------- staging: a killed writer's folder is swept

KILLED_WRITER = """
import os, signal, sys
from pathlib import Path
from finfusion.serving.model_store import staging
with staging(Path(sys.argv[1])) as work:
    (work / "run").mkdir()
    (work / "run" / "last.ckpt").write_bytes(b"half a checkpoint")
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_writer_killed_in_staging_leaves_a_folder_the_next_writer_removes(store: ModelStore) -> None:
    killed = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(store.root)], check=False)
    assert killed.returncode == -signal.SIGKILL
    area = store.root / STAGING_DIR
    (left,) = [p for p in area.iterdir() if p.is_dir()]
    assert (left / "run" / "last.ckpt").is_file()
    with staging(store.root) as live:  # a writer at work: its folder survives the next writer's sweep
        (live / "run").mkdir()
        version = store.save_version(state(1.0), {}, {})
        assert not left.exists() and (live / "run").is_dir()
    store.promote(version)
    assert [p.name for p in area.iterdir()] == [LOCK_FILE]  # the version, the pointer and the live folder are gone too
