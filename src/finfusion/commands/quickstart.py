"""`finfusion quickstart`: the whole pipeline on data it makes itself, offline, on a CPU.

Synthetic market with planted news -> lake -> bar features -> MiniLM embeddings -> the tiny multimodal diffusion
forecaster and its price-only twin -> forecasts (lake + .npz) -> walk-forward evaluation with refit, Diebold-Mariano
tests, the sign strategy's backtest -> the HTML report.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from finfusion.commands.common import LakeOption, out, print_report, reports_errors

if TYPE_CHECKING:
    from omegaconf import DictConfig

    from finfusion.forecasting.walk_forward import Evaluation

EXPERIMENT = "multimodal_tiny"
STEPS = 7
SHOWN = ("crps", "crps_planted_news", "directional_accuracy", "directional_accuracy_planted_news", "coverage", "sharpe")


def _step(number: int, what: str) -> None:
    out.rule(f"[bold]{number}/{STEPS}[/bold] {what}", align="left")


def _summary(evaluation: Evaluation) -> None:
    table = Table("model", *SHOWN, title="walk-forward test metrics (next 30 days of log returns)")
    for model, values in evaluation.metrics.models.items():
        table.add_row(model, *(f"{values[name]:.4f}" if name in values else "" for name in SHOWN))
    out.print(table)
    first = next(iter(evaluation.metrics.models))
    for test in (t for t in evaluation.metrics.significance if t["model"] == first):
        out.print(
            f"Diebold-Mariano ({test['loss']}, {test['subset']}): {test['model']} vs {test['baseline']}: "
            f"p = {test['p_value']:.4f} (mean loss difference {test['mean_difference']:.3g}, n = {test['n']})"
        )


@reports_errors
def quickstart(
    symbols: Annotated[int, typer.Option(help="Symbols in the synthetic market.")] = 8,
    seed: Annotated[int, typer.Option(help="Random seed of the synthetic market.")] = 0,
    runs: Annotated[Path, typer.Option("--runs", help="Folder for the runs and the report.")] = Path("runs/quickstart"),
    folds: Annotated[int, typer.Option(help="Walk-forward folds (each refits both models).")] = 2,
    settings: Annotated[
        list[str] | None,
        typer.Option("--set", help=f"Override a key of configs/experiment/{EXPERIMENT}.yaml (repeatable)."),
    ] = None,
    lake: LakeOption = None,
) -> None:
    """Run the whole pipeline offline on the synthetic market: ingest, features, embeddings, train the tiny
    multimodal model and its price-only twin, forecast, walk-forward evaluate, backtest and write the report.

    Example: finfusion quickstart --lake ./finfusion-data --runs runs/quickstart
    """
    from finfusion.config import load_config
    from finfusion.data.lake import Lake
    from finfusion.data.schema import FEATURES
    from finfusion.data.sources.synthetic_ingest import check_stored_market, make_and_ingest
    from finfusion.families.pipeline import predict_run, train_run
    from finfusion.features.bars import build_features
    from finfusion.features.text import embed_texts, load_encoder
    from finfusion.forecasting.data import synthetic_config
    from finfusion.forecasting.walk_forward import evaluate_experiment

    store = Lake(lake)
    overrides = [
        f"data.lake={store.root.resolve()}",
        f"data.synthetic.n_symbols={symbols}",
        f"data.synthetic.seed={seed}",
        f"evaluation.walk_forward.max_folds={folds}",
        *(settings or []),
    ]
    cfg: DictConfig = load_config(EXPERIMENT, overrides)
    dataset = str(cfg.data.dataset)
    out.rule("[bold]finfusion quickstart")
    out.print(f"lake: {store.root.resolve()}   runs: {runs.resolve()}   config: configs/experiment/{EXPERIMENT}.yaml")

    _step(1, f"synthetic market: {symbols} symbols, seed {seed} (prices and news with planted effects)")
    if store.files("bars", dataset, str(cfg.data.freq)):
        check_stored_market(store, synthetic_config(cfg.data.synthetic), dataset)
        out.print(f"already in the lake: bars/{dataset} (made with the same settings)")
    else:
        for report in make_and_ingest(store, synthetic_config(cfg.data.synthetic), dataset=dataset):
            print_report(report)

    _step(2, "bar features (point-in-time)")
    bars = store.read("bars", dataset, freq=str(cfg.data.freq))
    features = build_features(bars)
    written = store.write(FEATURES, dataset, features, freq=str(cfg.data.freq))
    out.print(f"{features.width - 2} features x {features.height:,} bars ({written.files_written} files written)")

    _step(3, "text embeddings (MiniLM, offline, cached by content)")
    embedded = embed_texts(store, store.read("text", dataset), load_encoder())
    out.print(f"{embedded.texts:,} texts, {embedded.unique:,} distinct, {embedded.embedded:,} newly embedded")

    _step(4, "train the multimodal model and its price-only twin")
    trained = train_run(cfg, runs / "multimodal", resume="never")
    twin_cfg = cfg.copy()
    twin_cfg.model.use_text = False
    train_run(twin_cfg, runs / "price_only", resume="never")
    out.print(f"windows: {len(trained.data.train):,} train, {len(trained.data.val):,} val, {len(trained.data.test):,}")

    _step(5, "forecast the test span: sampled paths into the lake and an .npz")
    predictions = predict_run(runs / "multimodal", "test")
    result = predictions.write(store, "multimodal", runs / "multimodal")
    npz = predictions.export(runs / "multimodal" / "test_forecasts.npz")
    out.print(f"{len(predictions):,} windows, {result.rows:,} lake rows, {npz}")

    _step(6, f"walk-forward evaluation with refit ({folds} folds), Diebold-Mariano, backtest, report")
    evaluation = evaluate_experiment(cfg, runs / "evaluation", progress=out.print)

    _step(7, "results")
    _summary(evaluation)
    out.print(f"report: {(runs / 'evaluation' / 'report' / 'report.html').resolve()}")
