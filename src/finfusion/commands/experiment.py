"""`finfusion train / predict / validate / evaluate`: any family's experiment from a config (families/pipeline.py)."""

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

    from finfusion.families.base import EvaluationResult

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
SPANS_HELP = "Span to predict: test, val, train (every family); all, latest (forecast); all (portfolio)."


def load_experiment(config: str, overrides: list[str] | None, lake: Path | None) -> DictConfig:
    """The composed config; `--lake` (or $FINFUSION_LAKE) sets `data.lake` when given."""
    from omegaconf import open_dict

    from finfusion.config import ConfigError, load_config

    try:
        cfg = load_config(config, overrides or [])
    except ConfigError as exc:
        raise FinfusionError(str(exc)) from exc
    if lake is not None:
        with open_dict(cfg):
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
    """Train the experiment's model (any family); the run folder holds everything predict needs (config.yaml,
    weights, state.json with the fitted normalisers and split instants, metrics.json), so
    `finfusion train --config RUN/config.yaml` repeats the run.

    Example: finfusion train --config patchtst_synthetic model.d_model=32 --run runs/p32
    """
    from finfusion.families.pipeline import train_run
    from finfusion.training.tracking import tracking

    cfg = load_experiment(config, overrides, lake)
    run_dir = run or _default_run(str(cfg.get("name", Path(config).stem)))
    out.print(f"training [bold]{cfg.model.name}[/bold] ({cfg.task.name}) into {run_dir}")
    with tracking(run_dir.resolve().parent):
        trained = train_run(cfg, run_dir, resume=None if resume == "never" else resume)
    data = trained.data
    out.print(f"samples: {len(data.train):,} train, {len(data.val):,} val, {len(data.test):,} test")
    if trained.best_checkpoint is not None:
        out.print(f"best checkpoint: {trained.best_checkpoint} (score {trained.best_score:.6g})")
    out.print(f"run: {run_dir} (config.yaml, weights, state.json, metrics.json)")


@reports_errors
def predict(
    run: Annotated[Path, typer.Argument(help="A run folder written by `finfusion train`.", show_default=False)],
    span: Annotated[str, typer.Option("--span", help=SPANS_HELP)] = "test",
    out_file: Annotated[
        Path | None,
        typer.Option("--out", help="Also export to FILE.parquet (forecasts: also FILE.npz).", show_default=False),
    ] = None,
    store: Annotated[bool, typer.Option("--store/--no-store", help="Store the predictions in the lake.")] = True,
    num_samples: Annotated[
        int | None, typer.Option("--num-samples", help="Sampled paths per window (models that sample).")
    ] = None,
    lake: LakeOption = None,
) -> None:
    """Predict with a trained run, from its stored weights, normalisers and split instants (nothing is refitted),
    and store the predictions in the lake (forecasts, weights or movements table; dataset = run name; the run's own
    lake unless --lake is given).

    Example: finfusion predict runs/patchtst_synthetic --span latest --out latest.npz
    """
    from finfusion.config import ConfigError
    from finfusion.data.lake import Lake
    from finfusion.families.pipeline import predict_run

    overrides = [] if num_samples is None else [f"model.sampling.num_samples={num_samples}"]
    with busy("predicting"):
        try:
            predictions = predict_run(run, span, overrides)
        except ConfigError as exc:
            raise FinfusionError(f"--num-samples: the run's model does not sample ({exc})") from exc
    table = Table("what", "predicted", title=f"{len(predictions):,} predictions ({span})")
    for label, value in predictions.summary():
        table.add_row(label, value)
    out.print(table)
    if store:
        from finfusion.families.run_folder import read_config

        target = Lake(lake if lake is not None else read_config(run).data.get("lake"))
        result = predictions.write(target, run.resolve().name, run)
        out.print(f"lake: {result.rows:,} rows in dataset {run.resolve().name} under {target.root}")
    if out_file is not None:
        out.print(f"exported: {predictions.export(out_file)}")


@reports_errors
def validate(
    run: Annotated[Path, typer.Argument(help="A run folder written by `finfusion train`.", show_default=False)],
    checkpoint: Annotated[
        Path | None, typer.Option("--checkpoint", help="A Lightning checkpoint (default: the run's best weights).")
    ] = None,
    lake: LakeOption = None,
) -> None:
    """Validation only: score the run's model on its validation samples without training (the task's val_*
    metrics), from its best weights or a given checkpoint, with the run's stored state.

    Example: finfusion validate runs/multimodal_tiny --checkpoint runs/multimodal_tiny/checkpoints/last.ckpt
    """
    from finfusion.families.pipeline import validate_run

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
    """The family's honest evaluation: forecasts walk forward with refit against the baselines (Diebold-Mariano,
    the sign strategy's backtest, the HTML report); movement models are selected on dev and scored once on test
    against the majority class; portfolio weights are backtested with costs on the test span against equal weights.

    Example: finfusion evaluate --config patchtst_synthetic --run runs/eval01 --markdown docs/results/synthetic.md
    """
    from finfusion.families.pipeline import evaluate_experiment
    from finfusion.training.tracking import tracked_run, tracking

    cfg = load_experiment(config, overrides, lake)
    run_dir = run or _default_run(f"{cfg.get('name', Path(config).stem)}-eval")
    with tracking(run_dir.resolve().parent), tracked_run("evaluate", run_dir.name, cfg) as tracked:
        evaluation = evaluate_experiment(cfg, run_dir, progress=out.print)
        page = _report(evaluation, cfg, config, overrides, run_dir, markdown, lake)
        if tracked is not None:
            for model, values in evaluation.models.items():
                tracked.log_metrics({f"test_{name}.{model}": value for name, value in values.items()})
            tracked.log_text(_summary(evaluation), "evaluation.json")
            tracked.log_artifact(run_dir / "report")
            if page is not None:
                tracked.log_artifact(page)


def _summary(evaluation: EvaluationResult) -> str:
    """The test metrics per model, which are baselines, and the printed notes, as JSON text."""
    import json

    fields = {"models": evaluation.models, "baselines": list(evaluation.baselines), "notes": list(evaluation.notes)}
    return json.dumps(fields, indent=2, default=str)


def _report(
    evaluation: EvaluationResult,
    cfg: DictConfig,
    config: str,
    overrides: list[str] | None,
    run_dir: Path,
    markdown: Path | None,
    lake: Path | None,
) -> Path | None:
    """Print the test metrics table and the notes; write the results page when `markdown` is given."""
    names = list(dict.fromkeys(name for values in evaluation.models.values() for name in values))
    labels = [f"{model} (baseline)" if model in evaluation.baselines else model for model in evaluation.models]
    table = Table("metric", *labels, title="test metrics")
    for name in names:
        cells = (f"{values[name]:.4f}" if name in values else "" for values in evaluation.models.values())
        table.add_row(name, *cells)
    out.print(table)
    for note in evaluation.notes:
        out.print(note)
    if markdown is None:
        return None
    if evaluation.write_page is None:
        raise FinfusionError(f"the {cfg.task.name} family writes no results page (--markdown)")
    words = ["finfusion", "evaluate", "--config", config, *(overrides or []), "--run", str(run_dir)]
    words += ["--markdown", str(markdown), *(["--lake", str(lake)] if lake is not None else [])]
    command = " ".join(shlex.quote(word) for word in words)
    title = f"Results: {cfg.get('name', Path(config).stem)}"
    page = evaluation.write_page(markdown, command, title)
    out.print(f"results: {page}")
    return page
