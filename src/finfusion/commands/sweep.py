"""`finfusion sweep`: an Optuna search over the config's `sweep:` section, scored on validation only
(families/sweep.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from finfusion.commands.common import LakeOption, out, reports_errors
from finfusion.commands.experiment import ConfigOption, Overrides, load_experiment

EPILOG = """Example:

  finfusion sweep --config patchtst_synthetic --trials 20 --run runs/sweep01

  (several workers: start the same command in several processes; on several machines give them one --storage URL)
"""


@reports_errors
def sweep(
    config: ConfigOption,
    overrides: Overrides = None,
    trials: Annotated[int, typer.Option("--trials", help="Trials in the whole study (all workers together).")] = 20,
    run: Annotated[Path | None, typer.Option("--run", help="Sweep folder (default runs/<config name>-sweep).")] = None,
    storage: Annotated[
        str | None,
        typer.Option("--storage", help="Optuna storage URL shared by the workers (default sqlite in the folder)."),
    ] = None,
    study: Annotated[str | None, typer.Option("--study", help="Study name (default: the config's name).")] = None,
    lake: LakeOption = None,
) -> None:
    """Search the hyper-parameters of the config's `sweep:` section with Optuna: each trial trains through the one
    pipeline and is scored on its validation span (bad trials pruned from their validation metric); the best trial
    is written as SWEEP/best.yaml, which `finfusion evaluate --config SWEEP/best.yaml` scores on test once."""
    from finfusion.families.sweep import run_sweep
    from finfusion.training.tracking import tracking

    cfg = load_experiment(config, overrides, lake)
    sweep_dir = run or Path("runs") / f"{cfg.get('name', Path(config).stem)}-sweep"
    with tracking(sweep_dir.resolve().parent):
        result = run_sweep(cfg, sweep_dir, trials, storage, study, progress=out.print)
    table = Table("best trial", f"best {result.monitor} (validation)", *result.best_values, title="sweep")
    values = (str(value) for value in result.best_values.values())
    table.add_row(str(result.best_number), f"{result.best_value:.6g}", *values)
    out.print(table)
    out.print(f"trials in the study: {result.trials}; best config: {result.best_config}")
    out.print(f"score the test span once: finfusion evaluate --config {result.best_config}")
