"""MLflow tracking: a tiny train through the command creates a run with its params, per-epoch metrics, final metrics
and config artifact; runs nest; MLFLOW_TRACKING_URI is respected; tracking can be switched off."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import Result

from finfusion.errors import FinfusionError
from finfusion.training.tracking import STORE_DIR, STORE_FILE, flat_params, tracked_run, tracking
from tests.conftest import GOOD_BARS, write_text
from tests.test_experiment import EXPERIMENT, SMALL_MODELS, tiny_overrides


def client_for(uri: str) -> Any:
    import mlflow

    return mlflow.MlflowClient(tracking_uri=uri)


def all_runs(uri: str) -> list[Any]:
    client = client_for(uri)
    experiments = client.search_experiments()
    return client.search_runs([experiment.experiment_id for experiment in experiments])


def test_a_tiny_train_creates_an_mlflow_run_with_params_metrics_and_config(
    tmp_path: Path, cli: Callable[..., Result], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FINFUSION_TRACKING", "on")
    run = tmp_path / "runs" / "tiny"
    overrides = [*tiny_overrides(tmp_path / "lake"), *SMALL_MODELS["patchtst"]]
    result = cli("train", "--config", str(EXPERIMENT), *overrides, "--run", str(run))
    assert result.exit_code == 0, result.output
    uri = f"sqlite:///{tmp_path / 'runs' / STORE_DIR / STORE_FILE}"
    (tracked,) = all_runs(uri)
    assert tracked.info.run_name == "train tiny" and tracked.info.status == "FINISHED"
    assert tracked.data.params["model.d_model"] == "16" and tracked.data.params["data.horizon"] == "4"
    assert tracked.data.tags["finfusion.kind"] == "train"
    history = client_for(uri).get_metric_history(tracked.info.run_id, "val_loss")
    assert [point.step for point in history] == [0, 1]  # one value per epoch
    assert "best_score" in tracked.data.metrics and tracked.data.metrics["windows_test"] > 0
    client = client_for(uri)
    artifacts = {item.path for item in client.list_artifacts(tracked.info.run_id)}
    assert {"config.yaml", "metrics.json"} <= artifacts
    config = client.download_artifacts(tracked.info.run_id, "config.yaml", str(tmp_path))
    stored = yaml.safe_load(Path(config).read_text())
    assert stored["model"]["d_model"] == 16 and stored["data"]["lake"] == str(tmp_path / "lake")


def test_runs_opened_inside_another_nest_under_it_and_a_failed_run_is_marked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FINFUSION_TRACKING", "on")
    with tracking(tmp_path) as store, tracked_run("evaluate", "e", {"name": "nesting"}) as parent:
        assert store is not None and parent is not None
        with tracked_run("train", "fold-1", {"name": "nesting", "model": {"name": "x"}}) as child:
            assert child is not None
            child.log_metrics({"val loss (fold)": 0.5, "skipped": "text"})  # type: ignore[dict-item]
        with pytest.raises(RuntimeError), tracked_run("train", "fold-2"):
            raise RuntimeError("a fold fails")
    runs = {run.info.run_name: run for run in all_runs(store.uri)}
    assert set(runs) == {"evaluate e", "train fold-1", "train fold-2"}
    parent_id = runs["evaluate e"].info.run_id
    assert runs["train fold-1"].data.tags["mlflow.parentRunId"] == parent_id
    assert runs["train fold-2"].info.status == "FAILED"
    assert runs["train fold-1"].data.metrics == {"val loss _fold_": 0.5}


def test_mlflow_tracking_uri_is_respected_and_tracking_can_be_switched_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # MLflow puts a bare URI's artifacts in ./mlruns
    elsewhere = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    monkeypatch.setenv("FINFUSION_TRACKING", "on")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", elsewhere)
    with tracking(tmp_path / "runs"), tracked_run("train", "a", {"name": "uri"}):
        pass
    assert [run.info.run_name for run in all_runs(elsewhere)] == ["train a"]
    assert (tmp_path / "mlruns").is_dir()  # the artifacts of a store the user named: MLflow's default place
    assert not (tmp_path / "runs" / STORE_DIR).exists()
    monkeypatch.setenv("FINFUSION_TRACKING", "off")
    with tracking(tmp_path / "runs") as store, tracked_run("train", "b", {"name": "uri"}) as run:
        assert store is None and run is None
    monkeypatch.setenv("FINFUSION_TRACKING", "sometimes")
    with pytest.raises(FinfusionError, match="FINFUSION_TRACKING: 'sometimes'"), tracking(tmp_path):
        pass


def test_a_config_becomes_dotted_params() -> None:
    params = flat_params({"model": {"name": "patchtst", "sizes": [1, 2]}, "data": {"lake": None, "empty": {}}})
    assert params == {"model.name": "patchtst", "model.sizes": "[1, 2]", "data.lake": "None", "data.empty": "{}"}


def test_a_serve_job_is_tracked_with_its_result(
    tmp_path: Path, cli: Callable[..., Result], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FINFUSION_TRACKING", "on")
    monkeypatch.chdir(tmp_path)
    write_text(tmp_path / "bars" / "AAA.csv", GOOD_BARS)
    result = cli("serve", "job", "ingest", str(tmp_path / "bars"), "--dataset", "live")
    assert result.exit_code == 0, result.output
    uri = f"sqlite:///{tmp_path / 'runs' / STORE_DIR / STORE_FILE}"
    (tracked,) = all_runs(uri)
    assert tracked.info.run_name.startswith("job ingest") and tracked.data.tags["finfusion.kind"] == "job"
    client = client_for(uri)
    summary = json.loads(Path(client.download_artifacts(tracked.info.run_id, "job.json", str(tmp_path))).read_text())
    assert summary["status"] == "done" and summary["job"].startswith("ingest")
