"""The `finfusion` command line."""

from __future__ import annotations

import typer

from finfusion import __version__
from finfusion.commands import benchmark, data, features, models, orderbook, serve, tokenize, vq
from finfusion.commands.backtest import backtest
from finfusion.commands.embed import EPILOG as EMBED_EPILOG
from finfusion.commands.embed import embed
from finfusion.commands.experiment import evaluate, predict, train, validate
from finfusion.commands.explain import EPILOG as EXPLAIN_EPILOG
from finfusion.commands.explain import explain
from finfusion.commands.quickstart import quickstart
from finfusion.commands.report import report
from finfusion.commands.sweep import EPILOG as SWEEP_EPILOG
from finfusion.commands.sweep import sweep

app = typer.Typer(
    name="finfusion",
    help="Forecast markets from prices and text: data lake, features, models, walk-forward evaluation, serving.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(data.app, name="data")
app.add_typer(features.app, name="features", help="Continuous bar features: build them into the lake.")
app.add_typer(tokenize.app, name="tokenize", help="Rule-based Brooks price-action tokens and their vocabulary.")
app.add_typer(orderbook.app, name="orderbook", help="Limit-order books: ingest LOBSTER files, make the synthetic book.")
app.add_typer(vq.app, name="vq", help="Learned VQ-VAE tokenizer of candle patches: fit and encode.")
app.add_typer(benchmark.app, name="benchmark", help="Public benchmarks, built exactly as published (StockNet).")
app.add_typer(models.app, name="models", help="Published model weights (Moirai): list, download when asked.")
app.add_typer(serve.app, name="serve", help="HTTP API and batch jobs (ingest, features, train, finetune, predict).")
app.command(epilog="Example:\n\n  finfusion quickstart --lake ./finfusion-data")(quickstart)
app.command(epilog="Example:\n\n  finfusion report runs/exp01")(report)
app.command("embed", epilog=EMBED_EPILOG)(embed)
app.command(epilog="Example:\n\n  finfusion backtest signals.parquet --dataset synthetic --run runs/bt01")(backtest)
app.command(epilog="Example:\n\n  finfusion train --config patchtst_synthetic model.d_model=32")(train)
app.command(epilog="Example:\n\n  finfusion predict runs/patchtst_synthetic --span latest --out latest.npz")(predict)
app.command(epilog="Example:\n\n  finfusion validate runs/patchtst_synthetic")(validate)
app.command(epilog="Example:\n\n  finfusion evaluate --config patchtst_synthetic --run runs/eval01")(evaluate)
app.command("sweep", epilog=SWEEP_EPILOG)(sweep)
app.command("explain", epilog=EXPLAIN_EPILOG)(explain)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"finfusion {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """finfusion: prices + text -> honest forecasts."""
