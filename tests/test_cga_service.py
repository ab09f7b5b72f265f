"""The CGA portfolio model in the serving jobs, end to end on a 3-symbol synthetic market with fake text embeddings.

`serve job train` and `serve job predict` run through the command line with the default config (`cga_daily`, made
tiny with `--set`), the weights come back over real HTTP, a finetune that validates worse leaves the served version
unchanged, and the weights of past decisions do not move when later bars and texts arrive.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import httpx
import polars as pl
import pytest
import torch
from typer.testing import CliRunner

from finfusion.commands.serve import ENV_CONFIG
from finfusion.commands.serve import app as serve_app
from finfusion.config import load_config
from finfusion.data.lake import Lake
from finfusion.data.sources.synthetic import SyntheticConfig, SyntheticMarket, generate_market
from finfusion.data.sources.synthetic_ingest import ingest_market
from finfusion.errors import FinfusionError
from finfusion.families.base import Sources
from finfusion.families.pipeline import train_run
from finfusion.families.portfolio import FAMILY as PORTFOLIO
from finfusion.serving import family_steps
from finfusion.serving.api import create_app
from finfusion.serving.family_steps import FamilySteps, validation_cut
from finfusion.serving.jobs import JobRunner, PipelineSpec, Span
from finfusion.serving.model_jobs import run_finetune
from finfusion.serving.model_store import LOCK_FILE, STAGING_DIR, ModelStore
from finfusion.serving.steps import ModelArtifact, ModelSteps
from tests.portfolio_helpers import OVERRIDES, TEXT_DIM, fake_embeddings
from tests.serving_helpers import serving


def steps(store_root: Path) -> ModelSteps:
    """The default config's steps, made tiny, training in the store at `store_root`."""
    return FamilySteps("cga_daily", tuple(OVERRIDES), store_root=store_root).steps()


DATASET = "synthetic"
SPEC = PipelineSpec(bars=DATASET)
MODEL = SPEC.model
LOOKBACK, K = 8, 2  # data.lookback and task.k of OVERRIDES
CUT = datetime(2019, 10, 15, tzinfo=UTC)  # the first lake holds the market before CUT
KEY = "k3y"


@dataclass(frozen=True)
class Served:
    """A lake with the market before CUT, a trained and promoted CGA version, and its weights."""

    root: Path
    market: SyntheticMarket
    version: str
    outputs: list[str]

    @property
    def lake(self) -> Lake:
        return Lake(self.root / "lake")

    @property
    def store(self) -> ModelStore:
        return ModelStore(self.root / "store", MODEL)


def before(market: SyntheticMarket, cut: datetime) -> SyntheticMarket:
    """The market as known before `cut`: its bars, texts and events."""
    return replace(
        market,
        bars=market.bars.filter(pl.col("ts") < cut),
        texts=market.texts.filter(pl.col("published_at") < cut),
        events=market.events.filter(pl.col("published_at") < cut),
    )


def add_data(root: Path, market: SyntheticMarket) -> None:
    """Ingest `market` (rows the lake has stay), embed its texts and extend the features with `serve job features`."""
    lake = Lake(root / "lake")
    ingest_market(lake, market, DATASET)
    fake_embeddings(lake)
    serve_job(root, "features", DATASET)


def serve_job(root: Path, command: str, *args: str) -> str:
    """Output of `finfusion serve job COMMAND DATASET ...` on the lake and store under `root` (the default config,
    made tiny with --set)."""
    options = ["--lake", str(root / "lake")]
    if command != "features":
        options += ["--store", str(root / "store"), *(word for o in OVERRIDES for word in ("--set", o))]
    result = CliRunner().invoke(serve_app, ["job", command, *args, *options], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def _default_config(monkeypatch: pytest.MonkeyPatch) -> None:
    """The command line's default config (no $FINFUSION_SERVE_CONFIG)."""
    monkeypatch.delenv(ENV_CONFIG, raising=False)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("cga_service")
    market = generate_market(SyntheticConfig(n_symbols=3, start="2019-01-01", end="2019-12-31", seed=2))
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv(ENV_CONFIG, raising=False)
        add_data(root, before(market, CUT))
        outputs = [serve_job(root, command, DATASET) for command in ("train", "predict", "predict", "finetune")]
    version = ModelStore(root / "store", MODEL).current_version()
    assert version is not None
    yield Served(root, market, version, outputs)


def copy_of(served: Served, root: Path) -> Path:
    """A copy of the served lake and store under `root`, for a test that changes them."""
    shutil.copytree(served.root, root, dirs_exist_ok=True)
    return root


def test_train_and_predict_through_the_cli_write_the_served_versions_weights(served: Served) -> None:
    train, predict, again, finetune = served.outputs
    assert f"train.{MODEL} done" in train and f"predict.{MODEL} done" in predict
    assert f"predict.{MODEL} up-to-date" in again and f"finetune.{MODEL} up-to-date" in finetune  # nothing new
    info = served.store.version(served.version)
    sessions = served.lake.read("features", DATASET, freq="1d")["ts"].unique().sort()
    assert info.current and info.info["status"] == "promoted" and math.isfinite(info.metrics["val_loss"] or math.nan)
    assert [p.name for p in (served.store.root / STAGING_DIR).iterdir()] == [LOCK_FILE]  # the training run is gone
    assert info.info["data"]["end"] == sessions[-1].isoformat()
    config = served.store.load_config(served.version)
    experiment, state = config["experiment"], config["state"]
    assert experiment["data"]["bars"] == DATASET and experiment["data"]["texts"] == DATASET and "normalizer" in state
    assert experiment["model"]["use_news"] and state["text_dim"] == TEXT_DIM and len(state["symbols"]) == 3

    weights = served.lake.read("weights", MODEL)
    assert weights["model_version"].unique().to_list() == [served.version]
    assert weights["ts"].unique().sort().equals(sessions[LOOKBACK - 1 :])  # every bar with a full lookback
    per_ts = weights.group_by("ts").agg(
        gross=pl.col("weight").abs().sum(), held=(pl.col("weight") != 0).sum(), n=pl.len()
    )
    assert ((per_ts["gross"] - 1.0).abs() < 1e-5).all() and (per_ts["held"] <= K).all() and (per_ts["n"] == 3).all()


def test_the_api_serves_the_latest_weights(served: Served) -> None:
    weights = served.lake.read("weights", MODEL)
    last = weights.filter(pl.col("ts") == pl.col("ts").max()).sort("symbol")
    with serving(create_app(served.lake.root, served.store.root, KEY, MODEL)) as url:
        health = httpx.get(f"{url}/health", timeout=10).json()
        body = httpx.get(f"{url}/v1/weights/latest", headers={"X-API-Key": KEY}, timeout=10).json()
    assert health["current_version"] == served.version
    assert datetime.fromisoformat(body["ts"]) == last["ts"][0] and body["model"] == MODEL
    assert [(w["symbol"], w["model_version"]) for w in body["weights"]] == [(s, served.version) for s in last["symbol"]]
    assert [w["weight"] for w in body["weights"]] == pytest.approx(last["weight"].to_list())


def test_a_finetune_that_validates_worse_leaves_the_served_version(served: Served, tmp_path: Path) -> None:
    root = copy_of(served, tmp_path)
    add_data(root, served.market)
    candidates: list[ModelArtifact] = []
    tiny = steps(root / "store")
    runs: list[Path] = []

    def finetune(lake: Lake, spec: PipelineSpec, span: Span, base: ModelArtifact) -> ModelArtifact:
        candidates.append(tiny.finetune(lake, spec, span, base))
        return candidates[-1]

    def validate(lake: Lake, spec: PipelineSpec, span: Span, model: ModelArtifact) -> float:
        """The real validation loss, plus 1 for a finetuned candidate: every finetune validates worse."""
        return tiny.validate(lake, spec, span, model) + (1.0 if any(model is c for c in candidates) else 0.0)

    def record_run(cfg: object, run_dir: Path, **kwargs: object) -> object:
        runs.append(Path(run_dir))
        return train_run(cfg, run_dir, **kwargs)

    killed = root / "store" / STAGING_DIR / "left-by-a-killed-finetune"  # its lock file is free: the process died
    (killed / "run").mkdir(parents=True)
    (killed / LOCK_FILE).touch()
    before = set(Path(tempfile.gettempdir()).glob("finfusion-*"))
    lake, store = Lake(root / "lake"), ModelStore(root / "store", MODEL)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(family_steps, "train_run", record_run)
        result = run_finetune(JobRunner.for_lake(lake), lake, store, SPEC, finetune, validate)
    assert [run.parent.parent for run in runs] == [root / "store" / STAGING_DIR]  # trained in the store's staging
    assert [p.name for p in (root / "store" / STAGING_DIR).iterdir()] == [LOCK_FILE]  # its run and the dead one gone
    assert set(Path(tempfile.gettempdir()).glob("finfusion-*")) <= before
    assert result.status == "rejected" and len(candidates) == 1
    assert store.current_version() == served.version
    (candidate,) = [v for v in store.list_versions() if v.version != served.version]
    assert candidate.info["status"] == "rejected" and candidate.info["parent"] == served.version
    val_loss, base_val_loss = candidate.metrics["val_loss"], candidate.metrics["base_val_loss"]
    assert val_loss is not None and base_val_loss is not None and math.isfinite(val_loss + base_val_loss)
    assert val_loss > base_val_loss
    base = store.load_state_dict(served.version)
    assert candidates[0].state_dict.keys() == base.keys()
    assert any(not torch.equal(candidates[0].state_dict[k], base[k]) for k in base)  # it did train further

    assert f"predict.{MODEL} done" in serve_job(root, "predict", DATASET)
    weights = Lake(root / "lake").read("weights", MODEL)
    assert weights["model_version"].unique().to_list() == [served.version]
    assert weights["ts"].max() == served.market.bars["ts"].max() > CUT
    with serving(create_app(root / "lake", root / "store", None, MODEL)) as url:
        body = httpx.get(f"{url}/v1/weights/latest", timeout=10).json()
    assert datetime.fromisoformat(body["ts"]) == weights["ts"].max()
    assert {w["model_version"] for w in body["weights"]} == {served.version}


def test_weights_of_past_decisions_do_not_move_when_later_data_arrives(served: Served, tmp_path: Path) -> None:
    root = copy_of(served, tmp_path)
    known = served.lake.read("weights", MODEL).select("ts", "symbol", "weight").sort("ts", "symbol")
    perturbed = served.market.bars.with_columns(
        close=pl.when(pl.col("ts") >= CUT).then(pl.col("close") * 1.5).otherwise("close"),
        high=pl.when(pl.col("ts") >= CUT).then(pl.col("high") * 1.5).otherwise("high"),
    )
    add_data(root, replace(served.market, bars=perturbed))
    lake, store = Lake(root / "lake"), ModelStore(root / "store", MODEL)
    model = store.load()
    artifact = ModelArtifact(model.state_dict, model.config, model.metrics)
    end = known["ts"].max()
    predict = steps(store.root).predict
    recomputed = predict(lake, SPEC, Span(None, end), artifact).sort("ts", "symbol")
    assert recomputed.equals(known)
    later = predict(lake, SPEC, Span(end, lake.read("bars", DATASET, freq="1d")["ts"].max()), artifact)
    assert later["ts"].min() > end and later["ts"].n_unique() > 10  # the later decisions see the new bars


def test_missing_texts_short_spans_and_bad_shares_are_named(served: Served) -> None:
    cfg = load_config("cga_daily", OVERRIDES)
    bounds = (CUT, CUT)
    with pytest.raises(FinfusionError, match="no text dataset 'absent'"):
        PORTFOLIO.serving_config(cfg, served.lake, Sources(DATASET, "1d", DATASET, "absent"), *bounds)
    twin = load_config("cga_daily", [*OVERRIDES, "model.use_news=false"])
    assert (
        PORTFOLIO.serving_config(twin, served.lake, Sources("absent", "1d", "absent", None), *bounds).data.texts is None
    )
    sessions = served.lake.read("features", DATASET, freq="1d")["ts"].unique().sort()
    with pytest.raises(FinfusionError, match="holds 3 session"):
        validation_cut(served.lake, SPEC, Span(sessions[-4], sessions[-1]), 0.3, horizon=5)
    assert validation_cut(served.lake, SPEC, Span(sessions[-7], sessions[-1]), 0.3, horizon=5) == sessions[-6]
    with pytest.raises(FinfusionError, match="validation_share"):
        FamilySteps("cga_daily", validation_share=1.0, store_root=served.store.root)


def test_a_stored_config_with_an_interpolation_is_refused(served: Served) -> None:
    model = served.store.load()
    config = {**model.config, "experiment": {**model.config["experiment"], "name": "${oc.env:FINFUSION_API_KEY}"}}
    crafted = ModelArtifact(model.state_dict, config, model.metrics)
    with pytest.raises(FinfusionError, match=r"interpolation at experiment\.name"):
        steps(served.store.root).predict(served.lake, SPEC, Span(None, CUT), crafted)
