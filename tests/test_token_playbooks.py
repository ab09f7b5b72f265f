"""docs/token_models.md's playbooks run as written: every command, in order, in a fresh folder, on a small market
(small sizes appended to the commands that train)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from finfusion.cli import app
from tests.test_experiment import SMALL_MODELS

DOC = Path(__file__).resolve().parents[1] / "docs" / "token_models.md"
TOKENS_SMALL = [
    "data.synthetic.n_symbols=3", "data.synthetic.start=2017-01-01", "data.synthetic.end=2020-12-31",
    "data.batch_size=16", "+model.hidden_size=16", "+model.num_heads=2", "+model.num_layers=1",
    "+model.intermediate_size=32", "trainer.max_epochs=1", "trainer.enable_progress_bar=false",
]  # fmt: skip
SMALL = {
    "data synth": ["--symbols", "3", "--start", "2019-01-01"],
    "token_mlm_synthetic": TOKENS_SMALL,
    "token_direction_synthetic": [*TOKENS_SMALL, "data.window=8"],
    "token_fusion_synthetic": [
        *TOKENS_SMALL, "data.window=8", "data.prices.lookback=16", "data.texts.max_texts=2", "model.price_d_model=8",
        "evaluation.walk_forward.first_test=2020-07-01", "evaluation.walk_forward.validate=60",
        "evaluation.walk_forward.test=60", "evaluation.walk_forward.folds=1", "trainer.limit_train_batches=4",
        "trainer.limit_val_batches=2",
    ],
    "patchtst_synthetic": [
        *SMALL_MODELS["hf_tst"], "data.synthetic.n_symbols=2", "data.synthetic.start=2017-01-01",
        "data.lookback=32", "data.horizon=4", "trainer.max_epochs=1", "trainer.enable_progress_bar=false",
    ],
}  # fmt: skip


def commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)
    return [line for block in blocks for line in block.splitlines() if line.strip()]


def small(words: list[str]) -> list[str]:
    text = " ".join(words)
    return next((extra for key, extra in SMALL.items() if key in text), [])


def test_every_token_playbook_command_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    lake = ["--lake", str(tmp_path / "lake")]
    outputs = []
    for line in commands():
        words = shlex.split(line)[1:]
        result = CliRunner().invoke(app, [*words, *small(words), *lake], catch_exceptions=False)
        assert result.exit_code == 0, f"{line}\n{result.output}"
        outputs.append(result.output)
    tokenized = outputs[1]
    assert "H(next | current)" in tokenized and "mutual information" in tokenized and "entropy" in tokenized
    assert "majority_class" in outputs[3] and "previous_sign" in outputs[3]
    directions = pl.read_parquet(tmp_path / "directions.parquet")
    assert set(directions["label_set"]) == {"direction"} and directions["prob_positive"].is_between(0, 1).all()
    fused = (tmp_path / "token_fusion.md").read_text()
    assert all(f"| {pair} |" in fused for pair in ("fusion | token_bert", "fusion | patchtst", "fusion_news | fusion"))
    assert pl.read_parquet(tmp_path / "hf_tst.parquet").height > 0
    assert "val_loss" in outputs[-1]
