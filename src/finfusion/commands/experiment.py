"""`finfusion train`, `finfusion predict` and `finfusion evaluate`: experiments from configs."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from finfusion.commands.common import LakeOption, busy, out, reports_errors
from finfusion.errors import FinfusionError

if TYPE_CHECKING:
    from omegaconf import DictConfig

ConfigOption = Annotated[
    str,
    typer.Option(
        "--config", "-c", help="Experiment YAML (a path, or a name in configs/experiment/).", show_default=False
    ),
]
Overrides = Annotated[
    list[str] | None,
    typer.Argument(help="Overrides: key=value sets, +key=value adds, group=name swaps a part (e.g. model=dlinear)."),
]


def _load(config: str, overrides: list[str] | None, lake: Path | None) -> DictConfig:
    """The composed config; `--lake` (or $FINFUSION_LAKE) sets `data.lake` when given."""
    from finfusion.config import ConfigError, load_config

    try:
        cfg = load_config(config, overrides or [])
    except ConfigError as exc:
        raise FinfusionError(str(exc)) from exc
    if lake is not None:
        cfg.data.lake = str(lake)
    return cfg


def _default_run(cfg_name: str) -> Path:
    return Path("runs") / cfg_name


@reports_errors
def train(
    config: ConfigOption,
    overrides: Overrides = None,
    run: Annotated[Path | None, typer.Option("--run", help="Run folder (default runs/<config name>).")] = None,
    resume: Annotated[
        str, typer.Option("--resume", help="auto (RUN/checkpoints/last.ckpt when present), never, or a checkpoint.")
    ] = "auto",
    lake: LakeOption = None,
) -> None:
    """Train the experiment's model; the resolved config is saved as RUN/config.yaml, so
    `finfusion train --config RUN/config.yaml` repeats the run.

    Example: finfusion train --config patchtst_synthetic model.d_model=32 --run runs/p32
    """
    from finfusion.experiment.train import train_experiment

    cfg = _load(config, overrides, lake)
    run_dir = run or _default_run(str(cfg.get("name", Path(config).stem)))
    out.print(f"training [bold]{cfg.model.name}[/bold] into {run_dir}")
    trained = train_experiment(cfg, run_dir, resume=None if resume == "never" else resume)
    data = trained.data
    out.print(f"windows: {len(data.train):,} train, {len(data.val):,} val, {len(data.test):,} test")
    if trained.best_checkpoint is not None:
        out.print(f"best checkpoint: {trained.best_checkpoint} (score {trained.best_score:.6g})")
    out.print(f"run: {run_dir} (config.yaml, weights, train.json)")


@reports_errors
def predict(
    run: Annotated[Path, typer.Argument(help="A run folder written by `finfusion train`.", show_default=False)],
    span: Annotated[str, typer.Option("--span", help="Windows to forecast: test, val, train, all, latest.")] = "test",
    out_file: Annotated[
        Path | None, typer.Option("--out", help="Also export to FILE.npz or FILE.parquet.", show_default=False)
    ] = None,
    store: Annotated[bool, typer.Option("--store/--no-store", help="Store the forecasts in the lake.")] = True,
    num_samples: Annotated[
        int | None, typer.Option("--num-samples", help="Sampled paths per window (models that sample).")
    ] = None,
    lake: LakeOption = None,
) -> None:
    """Forecast with a trained run and store the forecasts in the lake (forecasts table, dataset = run name; the
    run's own lake unless --lake is given).

    Example: finfusion predict runs/patchtst_synthetic --span latest --out latest.npz
    """
    from finfusion.config import ConfigError
    from finfusion.data.lake import Lake
    from finfusion.experiment.predict import export, forecast_summary, lake_of_run, predict_run, write_forecasts_to_lake

    with busy("forecasting"):
        overrides = [] if num_samples is None else [f"model.sampling.num_samples={num_samples}"]
        try:
            forecasts, texts = predict_run(run, span, overrides)
        except ConfigError as exc:
            raise FinfusionError(f"--num-samples: the run's model does not sample ({exc})") from exc
    table = Table("symbol", "windows", "first decision", "last decision", title=f"{len(forecasts):,} forecasts")
    for row in forecast_summary(forecasts).sort("symbol").iter_rows():
        table.add_row(row[0], f"{row[1]:,}", str(row[2]), str(row[3]))
    out.print(table)
    if store:
        target = Lake(lake) if lake is not None else lake_of_run(run)
        result = write_forecasts_to_lake(forecasts, run, target)
        out.print(f"lake: {result.rows:,} rows in kind=forecasts/dataset={run.resolve().name} under {target.root}")
    if out_file is not None:
        out.print(f"exported: {export(forecasts, out_file, texts)}")


@reports_errors
def validate(
    run: Annotated[Path, typer.Argument(help="A run folder written by `finfusion train`.", show_default=False)],
    checkpoint: Annotated[
        Path | None, typer.Option("--checkpoint", help="A Lightning checkpoint (default: the run's best weights).")
    ] = None,
    lake: LakeOption = None,
) -> None:
    """Validation only: score the run's model on its validation windows without training (the task's val_*
    metrics), from its best weights or a given checkpoint.

    Example: finfusion validate runs/multimodal_tiny --checkpoint runs/multimodal_tiny/checkpoints/last.ckpt
    """
    from finfusion.experiment.train import validate_run

    with busy("validating"):
        metrics = validate_run(run, checkpoint, [] if lake is None else [f"data.lake={lake}"])
    table = Table("metric", "value", title=f"validation of {run}")
    for name, value in sorted(metrics.items()):
        table.add_row(name, f"{value:.6g}")
    out.print(table)


@reports_errors
def evaluate(
    config: ConfigOption,
    overrides: Overrides = None,
    run: Annotated[Path | None, typer.Option("--run", help="Output folder (default runs/<config name>-eval).")] = None,
    markdown: Annotated[
        Path | None, typer.Option("--markdown", help="Also write the results page here (e.g. docs/results/x.md).")
    ] = None,
    lake: LakeOption = None,
) -> None:
    """Walk-forward evaluation with refit of the experiment's model and the baselines: metrics, Diebold-Mariano
    against the random walk, the sign strategy's backtest and the HTML report.

    Example: finfusion evaluate --config patchtst_synthetic --run runs/eval01 --markdown docs/results/synthetic.md
    """
    from finfusion.evaluation.run_layout import missing_parts
    from finfusion.experiment.results import write_results
    from finfusion.experiment.walk_forward import evaluate_experiment

    cfg = _load(config, overrides, lake)
    run_dir = run or _default_run(f"{cfg.get('name', Path(config).stem)}-eval")
    evaluation = evaluate_experiment(cfg, run_dir, progress=out.print)
    models = evaluation.metrics.models
    names = list(dict.fromkeys(name for values in models.values() for name in values))
    table = Table("model", *names, title="walk-forward test metrics")
    for model, values in models.items():
        label = f"{model} (baseline)" if model in evaluation.metrics.baselines else model
        table.add_row(label, *(f"{values[n]:.4f}" if n in values else "" for n in names))
    out.print(table)
    for test in evaluation.metrics.significance:
        out.print(f"Diebold-Mariano {test['model']} vs {test['baseline']}: p = {test['p_value']:.4f}")
    out.print(f"report: {run_dir / 'report' / 'report.html'}")
    for part in missing_parts(run_dir):
        out.print(f"  missing: {part}")
    if markdown is not None:
        words = ["finfusion", "evaluate", "--config", config, *(overrides or []), "--run", str(run_dir)]
        words += ["--markdown", str(markdown), *(["--lake", str(lake)] if lake is not None else [])]
        command = " ".join(shlex.quote(word) for word in words)
        title = f"Walk-forward results: {cfg.get('name', Path(config).stem)}"
        out.print(f"results: {write_results(markdown, evaluation, cfg, command, title)}")
