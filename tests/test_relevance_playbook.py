"""docs/relevance.md's playbook runs as written: every command of its Playbook section, in order, in a fresh folder,
on a small generated market (the tiny overrides of test_families.py appended to train and evaluate)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from finfusion.cli import app
from finfusion.data.lake import Lake
from tests.test_families import TINY, TRAINER

DOC = Path(__file__).resolve().parents[1] / "docs" / "relevance.md"


def playbook_blocks() -> list[tuple[str, str]]:
    """(language, code) of each fenced block of the Playbook section."""
    section = DOC.read_text(encoding="utf-8").split("## Playbook", 1)[1]
    return re.findall(r"```(bash|python)\n(.*?)```", section, flags=re.S)


def test_the_playbook_has_the_seeds_five_examples() -> None:
    commands = [line.split()[1] for lang, code in playbook_blocks() if lang == "bash" for line in code.splitlines()]
    assert commands == ["train", "predict", "evaluate", "validate"]
    assert [lang for lang, _ in playbook_blocks()].count("python") == 1


def test_every_playbook_command_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    lake = tmp_path / "lake"
    outputs = {}
    for lang, code in playbook_blocks():
        if lang == "python":
            exec(compile(code, str(DOC), "exec"), {})
            outputs["python"] = capsys.readouterr().out
            continue
        for line in code.splitlines():
            words = shlex.split(line)[1:]
            if words[0] in ("train", "evaluate"):
                words += [*TINY["dual_tower_synthetic"], *TRAINER]
            result = CliRunner().invoke(app, [*words, "--lake", str(lake)], catch_exceptions=False)
            assert result.exit_code == 0, f"{line}\n{result.output}"
            outputs[words[0]] = result.output
    scores = pl.read_parquet(tmp_path / "scores.parquet")
    assert set(scores["horizon_days"]) == {7, 30} and scores["score"].abs().max() <= 1.0
    assert Lake(lake).read("relevance", "relevance").height == scores.height  # stored in the lake too
    assert "prob_up" in outputs["python"] and "symbol" in outputs["python"]
    assert "context group ranked first" in outputs["evaluate"]
    assert (tmp_path / "runs" / "relevance-eval" / "report" / "relevance.html").is_file()
    assert "val_corr_7d" in outputs["validate"] and "val_accuracy_30d" in outputs["validate"]
