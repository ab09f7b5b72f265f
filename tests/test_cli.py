"""The command line: help texts with examples, quickstart, synth, show, resample."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from typer.main import get_command
from typer.testing import CliRunner, Result

from finfusion.cli import app
from finfusion.data.lake import Lake
from tests.conftest import write_text


def all_commands() -> list[list[str]]:
    """Every leaf command as its path of names, e.g. ['data', 'ingest']."""
    paths: list[list[str]] = []

    def walk(command: object, path: list[str]) -> None:
        if hasattr(command, "commands"):
            for name, sub in command.commands.items():
                walk(sub, [*path, name])
        else:
            paths.append(path)

    walk(get_command(app), [])
    return paths


@pytest.mark.parametrize("path", all_commands(), ids=lambda p: " ".join(p))
def test_every_command_has_help_with_an_example(path: list[str]) -> None:
    result = CliRunner().invoke(app, [*path, "--help"])
    assert result.exit_code == 0
    assert "Example" in result.output and "finfusion" in result.output


def test_quickstart_runs_the_whole_pipeline(cli: Callable[..., Result], lake_root: Path, tmp_path: Path) -> None:
    small = [
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1",
        "trainer.enable_progress_bar=false",
        "model.sampling.num_samples=4",
        "model.sampling.steps=2",
        "model.task.val_num_samples=2",
        "model.task.val_steps=2",
        "evaluation.walk_forward.train=300",
        "evaluation.walk_forward.validate=40",
        "evaluation.walk_forward.test=60",
        "data.synthetic.end=2018-06-30",
    ]
    runs = tmp_path / "runs"
    settings = [arg for key in small for arg in ("--set", key)]
    result = cli("quickstart", "--symbols", "2", "--folds", "1", "--runs", str(runs), *settings)
    assert result.exit_code == 0, result.output
    market = "synthetic_strong_news"  # its own name: `finfusion data synth` keeps "synthetic" for the default market
    assert {("bars", market), ("text", market), ("events", market), ("features", market)} <= {
        (k, d) for k, d, _ in Lake(lake_root).datasets()
    }
    assert ("forecasts", "multimodal") in {(k, d) for k, d, _ in Lake(lake_root).datasets()}
    arrays = np.load(runs / "multimodal" / "test_forecasts.npz")
    assert arrays["predictions"].shape[1:] == (4, 30, 1) and len(arrays["texts"]) == len(arrays["targets"])
    metrics = json.loads((runs / "evaluation" / "metrics.json").read_text())
    signs = ["majority_class", "previous_sign", "drift_sign", "logistic_direction"]
    assert list(metrics["models"]) == ["multimodal", "price_only", "random_walk", *signs]
    models = metrics["models"]
    best = {  # the best sign baseline of all windows and of the planted-news steps
        max(signs, key=lambda name: models[name][f"directional_accuracy{suffix}"]) for suffix in ("", "_planted_news")
    }
    losses = {(t["model"], t["baseline"], t["loss"]) for t in metrics["significance"]}
    assert ("random_walk", "price_only", "direction error") not in losses  # a signless forecast has no direction
    assert {(b, loss) for _, b, loss in losses} == {
        ("price_only", "CRPS"),
        ("price_only", "direction error"),
        ("random_walk", "CRPS"),
    } | {(name, "direction error") for name in best}  # every direction call also against the best sign forecast
    assert {"crps_planted_news", "directional_accuracy_planted_news"} <= metrics["models"]["multimodal"].keys()
    assert (runs / "evaluation" / "report" / "report.html").is_file()
    assert "7/7" in result.output and "report:" in result.output


def test_synth_show_and_list(cli: Callable[..., Result]) -> None:
    assert (
        cli(
            "data", "synth", "--symbols", "2", "--start", "2019-01-01", "--end", "2019-03-31", "--dataset", "s"
        ).exit_code
        == 0
    )
    show = cli("data", "show", "s")
    assert show.exit_code == 0 and "2019-01-02" in show.output and "calendar: XNYS" in show.output
    text = cli("data", "show", "s", "--kind", "text")
    assert text.exit_code == 0 and "rows" in text.output
    missing = cli("data", "show", "nope")
    assert missing.exit_code != 0 and "no bars dataset 'nope'" in missing.output


def test_resample_minute_bars_to_five_minutes(tmp_path: Path, cli: Callable[..., Result], lake_root: Path) -> None:
    rows = ["Datetime,Open,High,Low,Close,Volume"] + [
        f"2014-11-26 09:{30 + m:02d}:00,{10 + m},{11 + m},{9 + m},{10.5 + m},{100 + m}" for m in range(10)
    ]
    write_text(tmp_path / "AAA.csv", "\n".join(rows) + "\n")
    assert cli("data", "ingest", "csv", str(tmp_path / "AAA.csv"), "--dataset", "m", "--freq", "1m").exit_code == 0
    result = cli("data", "resample", "m", "--from", "1m", "--to", "5m")
    assert result.exit_code == 0, result.output
    five = Lake(lake_root).read("bars", "m", freq="5m")
    assert five["ts"].to_list() == [
        datetime(2014, 11, 26, 14, 35, tzinfo=UTC),
        datetime(2014, 11, 26, 14, 40, tzinfo=UTC),
    ]
    assert five["open"].to_list() == [10.0, 15.0] and five["close"].to_list() == [14.5, 19.5]
    assert five["volume"].to_list() == [510.0, 535.0]


def test_invalid_choice_is_refused(tmp_path: Path, cli: Callable[..., Result]) -> None:
    path = write_text(tmp_path / "AAA.csv", "Date,Close\n2014-11-26,1\n")
    result = cli("data", "ingest", "csv", str(path), "--missing-bars", "sometimes")
    assert result.exit_code != 0 and "sometimes" in result.output


def test_version() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.startswith("finfusion ")
