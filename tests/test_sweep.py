"""Sweeps: a 4-trial Optuna sweep on generated data runs in two processes sharing one storage and writes the best
trial as a runnable config; the sweep section is checked; the pruning callback stops a trial the pruner rejects."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
import torch
from omegaconf import OmegaConf

from finfusion.config import load_config, save_config
from finfusion.errors import FinfusionError
from finfusion.families.pipeline import checked_family
from finfusion.families.sweep import BEST_CONFIG, TRIALS_FILE, _pruning_callback, sweep_options, with_values
from tests.test_experiment import EXPERIMENT, SMALL_MODELS, tiny_overrides

SPACE = {
    "seed": 3,
    "params": {"optim.lr": {"low": 1.0e-4, "high": 1.0e-2, "log": True}, "model.d_model": {"choices": [8, 16]}},
}


def test_a_sweep_in_two_processes_shares_one_study_and_writes_the_best_config(tmp_path: Path) -> None:
    cfg = load_config(EXPERIMENT, [*tiny_overrides(tmp_path / "lake"), *SMALL_MODELS["patchtst"]])
    cfg.sweep = SPACE
    checked_family(with_values(cfg, {})).data(with_values(cfg, {}))  # the synthetic lake, made once
    config = save_config(cfg, tmp_path / "sweep.yaml")
    sweep_dir = tmp_path / "sweep"
    command = [sys.executable, "-m", "finfusion", "sweep", "--config", str(config), "--trials", "4"]
    env = {**os.environ, "FINFUSION_TRACKING": "off"}
    workers = [
        subprocess.Popen([*command, "--run", str(sweep_dir)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for _ in range(2)
    ]
    outputs = [worker.communicate(timeout=600)[0].decode() for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0], "\n".join(outputs)
    assert all("trial " in output for output in outputs)  # both workers ran trials of the one study
    study = optuna.load_study(study_name=str(cfg.name), storage=f"sqlite:///{sweep_dir / 'optuna.db'}")
    finished = [t for t in study.trials if t.state.is_finished()]
    assert 4 <= len(finished) <= 5  # two workers may both start a trial as the fourth one ends
    trials = json.loads((sweep_dir / TRIALS_FILE).read_text())
    assert {row["number"] for row in trials} == {t.number for t in study.trials}
    best = load_config(sweep_dir / BEST_CONFIG)
    assert "sweep" not in best
    assert best.optim.lr == pytest.approx(study.best_params["optim.lr"])
    assert best.model.d_model == study.best_params["model.d_model"]
    complete = [t.value for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert study.best_value == min(complete)
    checked_family(best)  # runnable: a valid experiment config


@pytest.mark.parametrize(
    ("section", "message"),
    [
        (None, "no 'sweep' section"),
        ({"params": {}}, "nothing to search"),
        ({"sampler": "grid", "params": {"optim.lr": {"choices": [1]}}}, "sweep.sampler: 'grid'"),
        ({"trials": 3, "params": {"optim.lr": {"choices": [1]}}}, "unknown key 'sweep.trials'"),
        ({"params": {"optim.lr": {"low": 0.1, "high": 0.01}}}, "low 0.1 is not below high 0.01"),
        ({"params": {"optim.lr": {"low": 0, "high": 0.01, "log": True}}}, "log range needs low > 0"),
        ({"params": {"optim.lr": {"low": 0.1}}}, "a range has low and high"),
        ({"params": {"optim.lr": {"choices": []}}}, "'choices' is a non-empty list"),
        ({"params": {"optim.lr": 0.1}}, "sweep.params.optim.lr: give"),
    ],
)
def test_a_bad_sweep_section_is_one_clear_error(section: dict | None, message: str) -> None:
    cfg = OmegaConf.create({"name": "x"} if section is None else {"name": "x", "sweep": section})
    with pytest.raises(FinfusionError, match=message.replace("(", r"\(")):
        sweep_options(cfg)


def test_integer_ranges_suggest_integers_and_values_land_on_dotted_keys() -> None:
    cfg = OmegaConf.create(
        {"name": "x", "model": {"n_layers": 1}, "sweep": {"params": {"model.n_layers": {"low": 1, "high": 3}}}}
    )
    (param,) = sweep_options(cfg).params
    trial = optuna.create_study().ask()
    value = param.suggest(trial)
    assert isinstance(value, int) and 1 <= value <= 3
    assert with_values(cfg, {"model.n_layers": 2, "optim.lr": 0.5}) == {
        "name": "x",
        "model": {"n_layers": 2},
        "optim": {"lr": 0.5},
    }


def test_the_pruning_callback_reports_each_validation_and_stops_a_rejected_trial() -> None:
    reported: list[tuple[float, int]] = []
    trial = SimpleNamespace(
        report=lambda value, step: reported.append((value, step)), should_prune=lambda: step[0] >= 1
    )
    step = [0]
    callback = _pruning_callback(trial, "val_loss")
    trainer = SimpleNamespace(
        sanity_checking=False, callback_metrics={"val_loss": torch.tensor(0.5)}, current_epoch=0, should_stop=False
    )
    callback.on_validation_end(trainer, None)
    assert reported == [(0.5, 0)] and not trainer.should_stop and not callback.pruned
    step[0], trainer.current_epoch = 1, 1
    callback.on_validation_end(trainer, None)
    assert trainer.should_stop and callback.pruned
