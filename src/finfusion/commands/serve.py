"""`finfusion serve ...`: the HTTP API (`serve api`) and the idempotent batch jobs (`serve job ...`)."""

from __future__ import annotations

import os
from contextlib import AbstractContextManager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from finfusion.commands.common import LakeOption, busy, err, out, reports_errors
from finfusion.errors import FinfusionError
from finfusion.serving.env import DEFAULT_MODEL, DEFAULT_STORE, ENV_API_KEY, ENV_MODEL, ENV_STORE

if TYPE_CHECKING:
    from finfusion.data.lake import Lake
    from finfusion.serving.jobs import JobResult, JobRunner, PipelineSpec
    from finfusion.serving.model_store import ModelStore
    from finfusion.serving.steps import ModelSteps

ENV_CONFIG = "FINFUSION_SERVE_CONFIG"
DEFAULT_CONFIG = "cga_daily"
#: The jobs' MLflow store lies under this folder (runs/mlflow/) unless MLFLOW_TRACKING_URI is set.
JOBS_RUNS = Path("runs")

app = typer.Typer(help="Serve models: the HTTP API and the batch jobs that feed it.", no_args_is_help=True)
job_app = typer.Typer(
    help="Idempotent batch jobs (safe to rerun after a crash; a rerun with nothing new does nothing).",
    no_args_is_help=True,
)
app.add_typer(job_app, name="job")

StoreOption = Annotated[
    Path, typer.Option("--store", envvar=ENV_STORE, help="Model store root folder.", show_default=True)
]
ModelOption = Annotated[
    str, typer.Option("--model", envvar=ENV_MODEL, help="Model name (also the WEIGHTS dataset it writes).")
]
DatasetArgument = Annotated[str, typer.Argument(help="Bars dataset in the lake.")]
FreqOption = Annotated[str, typer.Option(help="Bar frequency: 1d, 3m, 1h, ...")]
FeaturesOption = Annotated[
    str | None, typer.Option("--features", help="Features dataset (default: named like the bars).")
]
LatestOption = Annotated[
    float | None,
    typer.Option(help="Only the last HOURS of the input data (recomputed; unchanged rows are not rewritten)."),
]
ConfigOption = Annotated[
    str,
    typer.Option(
        "--config",
        "-c",
        envvar=ENV_CONFIG,
        help="Experiment config of the served model, any family (a name in configs/experiment/ or a YAML path).",
    ),
]
SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", help="A config override key=value (repeatable), e.g. --set model.use_news=false."),
]


class Normalize(StrEnum):
    zscore = "zscore"
    robust = "robust"


class BarLabel(StrEnum):
    start = "start"
    end = "end"


@app.command("api", epilog="Example:\n\n  FINFUSION_KEY=s3cret finfusion serve api --api-key-env FINFUSION_KEY")
@reports_errors
def api(
    lake: LakeOption = None,
    store: StoreOption = Path(DEFAULT_STORE),
    model: ModelOption = DEFAULT_MODEL,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port.")] = 8000,
    api_key_env: Annotated[
        str | None,
        typer.Option(help="Name of the environment variable holding the API key (never the key itself)."),
    ] = None,
    workers: Annotated[int, typer.Option(min=1, help="Server processes.")] = 1,
) -> None:
    """Serve weights, forecasts and model versions over HTTP (uvicorn). GET /docs shows the API."""
    import uvicorn

    from finfusion.data.lake import ENV_LAKE, Lake

    key = None
    if api_key_env is not None:
        key = os.environ.get(api_key_env)
        if not key:
            raise FinfusionError(f"--api-key-env {api_key_env}: that environment variable is not set or is empty")
    else:
        err.print(f"warning: no API key; /v1 is open to anyone who can reach {host}:{port}", highlight=False)
    os.environ[ENV_LAKE] = str(Lake(lake).root)
    os.environ[ENV_STORE] = str(store)
    os.environ[ENV_MODEL] = model
    os.environ.pop(ENV_API_KEY, None)
    if key is not None:
        os.environ[ENV_API_KEY] = key
    uvicorn.run("finfusion.serving.api:app_from_env", factory=True, host=host, port=port, workers=workers)


@job_app.command(
    "ingest", epilog="Example:\n\n  finfusion serve job ingest drop/bars --dataset live --texts drop/news --latest 4"
)
@reports_errors
def ingest(
    source: Annotated[Path, typer.Argument(help="CSV/Parquet file or folder of bars (symbol column or file names).")],
    dataset: Annotated[str, typer.Option(help="Dataset to write (bars, and texts when --texts is given).")],
    texts: Annotated[Path | None, typer.Option(help="CSV/Parquet file or folder of texts.")] = None,
    freq: FreqOption = "1d",
    calendar: Annotated[str, typer.Option(help="exchange_calendars code (XNYS, ...) or 24/7.")] = "XNYS",
    tz: Annotated[str | None, typer.Option(help="Time zone of naive bar timestamps (default: the calendar's).")] = None,
    bar_label: Annotated[BarLabel, typer.Option(help="Intraday timestamps label the bar's start or end.")] = (
        BarLabel.start
    ),
    latest: LatestOption = None,
    lake: LakeOption = None,
) -> None:
    """Ingest the rows of SOURCE the lake lacks (validated and cleaned like `data ingest csv`)."""
    from finfusion.data.ingest import BarOptions, TextOptions
    from finfusion.data.lake import Lake
    from finfusion.serving.data_jobs import FolderSource, run_ingest
    from finfusion.serving.jobs import JobRunner

    store = Lake(lake)
    bar_options = BarOptions(dataset=dataset, freq=freq, calendar=calendar, tz=tz, bar_label=bar_label.value)
    folder = FolderSource(source, bar_options, texts, TextOptions(dataset=dataset, source="csv"))
    with busy(f"ingesting {source}"), _tracked():
        result = run_ingest(JobRunner.for_lake(store), store, folder, latest_hours=latest)
    _print(result)


@job_app.command(
    "features",
    epilog="Example:\n\n  finfusion serve job features live --features live_z --normalize zscore "
    "--fit-start 2020-01-01 --fit-end 2023-01-01",
)
@reports_errors
def features(
    dataset: DatasetArgument,
    freq: FreqOption = "1d",
    features_name: FeaturesOption = None,
    normalize: Annotated[
        Normalize | None, typer.Option(help="First run only: fit this normaliser on [--fit-start, --fit-end).")
    ] = None,
    fit_start: Annotated[str | None, typer.Option(help="Start of the normaliser's training span (ISO date).")] = None,
    fit_end: Annotated[str | None, typer.Option(help="End of the training span, exclusive (ISO date).")] = None,
    latest: LatestOption = None,
    lake: LakeOption = None,
) -> None:
    """Write the features of the bars that have none yet, reusing the stored normaliser."""
    from finfusion.data.lake import Lake
    from finfusion.serving.data_jobs import FeatureJobOptions, run_features
    from finfusion.serving.jobs import JobRunner, PipelineSpec

    store = Lake(lake)
    spec = PipelineSpec(bars=dataset, freq=freq, features_name=features_name)
    options = FeatureJobOptions(normalize.value if normalize else None, fit_start, fit_end)
    with busy(f"computing features of {dataset}"), _tracked():
        result = run_features(JobRunner.for_lake(store), store, spec, options, latest_hours=latest)
    _print(result)


@job_app.command(
    "train", epilog="Example:\n\n  finfusion serve job train live --config cga_daily --set trainer.max_epochs=5"
)
@reports_errors
def train(
    dataset: DatasetArgument,
    config: ConfigOption = DEFAULT_CONFIG,
    settings: SetOption = None,
    freq: FreqOption = "1d",
    features_name: FeaturesOption = None,
    model: ModelOption = DEFAULT_MODEL,
    store: StoreOption = Path(DEFAULT_STORE),
    latest: LatestOption = None,
    lake: LakeOption = None,
) -> None:
    """Train a new version from scratch and serve it."""
    from finfusion.serving.model_jobs import run_train

    c = _ModelContext.build(lake, store, dataset, freq, features_name, model, config, settings)
    with busy(f"training {model}"), _tracked():
        result = run_train(c.runner, c.lake, c.store, c.spec, c.steps.train, latest_hours=latest)
    _print(result)


@job_app.command("finetune", epilog="Example:\n\n  finfusion serve job finetune live --config cga_daily --latest 24")
@reports_errors
def finetune(
    dataset: DatasetArgument,
    config: ConfigOption = DEFAULT_CONFIG,
    settings: SetOption = None,
    freq: FreqOption = "1d",
    features_name: FeaturesOption = None,
    model: ModelOption = DEFAULT_MODEL,
    store: StoreOption = Path(DEFAULT_STORE),
    latest: LatestOption = None,
    lake: LakeOption = None,
) -> None:
    """Finetune the served version on new data; serve the result only if its validation loss is lower."""
    from finfusion.serving.model_jobs import run_finetune

    c = _ModelContext.build(lake, store, dataset, freq, features_name, model, config, settings)
    with busy(f"finetuning {model}"), _tracked():
        result = run_finetune(
            c.runner, c.lake, c.store, c.spec, c.steps.finetune, c.steps.validate, latest_hours=latest
        )
    _print(result)


@job_app.command(
    "predict", epilog="Example:\n\n  finfusion serve job predict live --config patchtst_synthetic --model patchtst"
)
@reports_errors
def predict(
    dataset: DatasetArgument,
    config: ConfigOption = DEFAULT_CONFIG,
    settings: SetOption = None,
    freq: FreqOption = "1d",
    features_name: FeaturesOption = None,
    model: ModelOption = DEFAULT_MODEL,
    store: StoreOption = Path(DEFAULT_STORE),
    latest: LatestOption = None,
    lake: LakeOption = None,
) -> None:
    """Write the served version's predictions (the family's table: weights, forecasts) for the decisions that have
    none."""
    from finfusion.serving.model_jobs import run_predict

    c = _ModelContext.build(lake, store, dataset, freq, features_name, model, config, settings)
    with busy(f"predicting with {model}"), _tracked():
        result = run_predict(
            c.runner, c.lake, c.store, c.spec, c.steps.predict, table=c.steps.table, latest_hours=latest
        )
    _print(result)


@dataclass(frozen=True)
class _ModelContext:
    """What a model job needs, from the command-line options."""

    runner: JobRunner
    lake: Lake
    store: ModelStore
    spec: PipelineSpec
    steps: ModelSteps

    @classmethod
    def build(
        cls,
        lake: Path | None,
        store: Path,
        dataset: str,
        freq: str,
        features_name: str | None,
        model: str,
        config: str,
        settings: list[str] | None,
    ) -> _ModelContext:
        from finfusion.data.lake import Lake
        from finfusion.serving.family_steps import family_steps
        from finfusion.serving.jobs import JobRunner, PipelineSpec
        from finfusion.serving.model_store import ModelStore

        data = Lake(lake)
        spec = PipelineSpec(bars=dataset, freq=freq, features_name=features_name, model=model)
        steps = family_steps(config, settings or [], store_root=store)
        return cls(JobRunner.for_lake(data), data, ModelStore(store, model), spec, steps)


def _tracked() -> AbstractContextManager[object]:
    """MLflow tracking of a job's run, in the local store under ./runs unless MLFLOW_TRACKING_URI is set."""
    from finfusion.training.tracking import tracking

    return tracking(JOBS_RUNS)


def _print(result: JobResult) -> None:
    colour = {"done": "green", "up-to-date": "cyan", "rejected": "yellow"}[result.status]
    span = f" over ({result.span.start}, {result.span.end}]" if result.span else ""
    out.print(f"[bold]{result.job}[/bold] [{colour}]{result.status}[/{colour}]{span}: {result.message}")
