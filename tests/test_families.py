"""One pipeline for every family: each experiment config trains, predicts, validates and evaluates through the same
commands; predict reuses the stored normaliser and split instants; configs and model inputs are checked."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import exchange_calendars
import numpy as np
import polars as pl
import pytest
from omegaconf import OmegaConf
from typer.testing import CliRunner, Result

from finfusion.cli import app
from finfusion.config import find_config_dir, load_config
from finfusion.data.lake import Lake
from finfusion.data.schema import BARS
from finfusion.data.sources.stocknet import ingest_stocknet
from finfusion.data.sources.synthetic import SyntheticConfig
from finfusion.data.sources.synthetic_ingest import make_and_ingest
from finfusion.errors import FinfusionError
from finfusion.families import family_of
from finfusion.families.pipeline import predict_run, train_run
from finfusion.features.text import embed_texts, load_encoder

TRAINER = [
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.enable_progress_bar=false",
]
FORECAST_DATA = [
    "data.source=lake",
    "data.lookback=32",
    "data.horizon=4",
    "data.batch_size=32",
    "data.texts.max_texts=2",
]
WALK_FORWARD = ["evaluation.walk_forward.train=300", "evaluation.walk_forward.validate=60"]
WALK_FORWARD += ["evaluation.walk_forward.test=60", "evaluation.walk_forward.max_folds=1"]
MULTIMODAL = ["model.sampling.num_samples=4", "model.sampling.steps=2", "model.task.val_num_samples=2"]
MULTIMODAL += ["model.task.val_steps=2"]
#: Tiny overrides per experiment config (every config in configs/experiment/ must be listed).
TINY: dict[str, list[str]] = {
    "dlinear_synthetic": [*FORECAST_DATA, *WALK_FORWARD],
    "patchtst_synthetic": [
        "data.dataset=synthetic", *FORECAST_DATA, *WALK_FORWARD, "model.d_model=16", "model.n_layers=1",
    ],
    "kdd17_walk_forward": [
        "data.dataset=synthetic", "data.features=[]", "data.inputs=[log_return]", "data.split.train_end=2019-06-03",
        "data.split.val_end=2019-12-02", "evaluation.walk_forward.first_test=2019-12-02",
        *FORECAST_DATA, *WALK_FORWARD, "model.d_model=16", "model.n_layers=1",
    ],
    "multimodal_tiny": [
        "data.dataset=synthetic", *FORECAST_DATA, *WALK_FORWARD, *MULTIMODAL, "evaluation.walk_forward.max_folds=1",
    ],
    "moirai_synthetic": [
        "data.dataset=synthetic", *FORECAST_DATA, *WALK_FORWARD, "model.num_samples=8", "model.task.val_num_samples=4",
    ],
    "moirai_pretrain_synthetic": [
        "data.dataset=synthetic", "data.source=lake", "data.symbols=3", "data.lookback=32", "data.horizon=4",
        "data.stride=4", "data.split.train_end=2019-06-01", "data.split.val_end=2020-01-01", "model.num_samples=4",
        "task.val_num_samples=2", "evaluation.finetune_epochs=0",
        "evaluation.baselines=[{label: random_walk, part: random_walk, set: {quantile_levels: [0.1, 0.5, 0.9]}}]",
    ],
    "moirai_pretrain_kdd17": [
        "data.dataset=synthetic", "data.symbols=3", "data.lookback=32", "data.horizon=4", "data.stride=4",
        "data.split.train_end=2019-06-01", "data.split.val_end=2020-01-01", "model.num_samples=4",
        "task.val_num_samples=2", "evaluation.finetune_epochs=1",
        "evaluation.baselines=[{label: random_walk, part: random_walk, set: {quantile_levels: [0.1, 0.5, 0.9]}}]",
    ],
    "cga_daily": ["task.k=2", "data.batch_size=16"],
    "cga_3min": ["task.k=2", "data.bars=synthetic_3m", "data.texts=synthetic_3m", "data.train_end=2020-01-09",
                 "data.val_end=2020-01-13", "data.lookback=20", "data.horizon=10", "data.stride=5", "task.hold=10"],
}  # fmt: skip
#: The full flagship with MiniLM + LoRA in the loop (token ids of the news), every other part shrunk.
FULL_SHRUNK = [
    "+model.ts_encoder={d_model: 16, n_heads: 2, n_layers: 1, d_ff: 32}",
    "+model.qformer={d_model: 32, n_heads: 2, n_layers: 1, d_ff: 64, n_queries: 2}",
    "+model.decoder={d_model: 32, n_heads: 2, n_layers: 1, expert_hidden: 32, n_experts: 2, recon_layers: 1}",
    "+model.sampling={num_samples: 2, steps: 2}",
    "+task.val_num_samples=2",
    "+task.val_steps=2",
    "data.texts.max_tokens=16",
]
TINY["multimodal_full"] = ["data.dataset=synthetic", *FORECAST_DATA, *WALK_FORWARD, *FULL_SHRUNK]
#: Configs the generated-data test leaves out, with the reason.
TINY["dual_tower_synthetic"] = [
    "data.dataset=synthetic_context", "data.synthetic.n_symbols=4", "data.synthetic.end=2015-12-31",
    "data.split.train_end=2014-01-01", "data.split.val_end=2015-01-01", "data.batch_size=16",
    "data.texts.components=2", "evaluation.importance.repeats=1", "evaluation.importance.integrated_gradients_steps=4",
    "evaluation.importance.max_samples=100",
]  # fmt: skip
TINY["dual_tower_stocknet"] = [
    "data.start=2014-01-01", "data.end=2016-01-01", "data.split.train_end=2015-04-01",
    "data.split.val_end=2015-07-01", "data.batch_size=16", "data.texts.components=2",
    "evaluation.importance.repeats=1", "evaluation.importance.integrated_gradients_steps=4",
    "evaluation.importance.max_samples=100",
]  # fmt: skip
TINY["token_mlm_synthetic"] = [
    "data.bars=synthetic", "data.dataset=synthetic_brooks_tiny", "data.source=synthetic",
    "data.synthetic.n_symbols=4", "data.synthetic.start=2018-01-01", "data.synthetic.end=2020-12-31",
    "data.synthetic.seed=0", "data.synthetic.return_autocorrelation=0.0", "data.batch_size=8",
    "+model.hidden_size=16", "+model.num_heads=2", "+model.num_layers=1", "+model.intermediate_size=32",
]  # fmt: skip
TINY["token_direction_synthetic"] = [
    "data.bars=synthetic", "data.dataset=synthetic_brooks_tiny", "data.source=synthetic",
    "data.synthetic.n_symbols=4", "data.synthetic.start=2018-01-01", "data.synthetic.end=2020-12-31",
    "data.synthetic.seed=0", "data.synthetic.return_autocorrelation=0.0", "data.batch_size=16", "data.window=8",
    "+model.hidden_size=16", "+model.num_heads=2", "+model.num_layers=1", "+model.intermediate_size=32",
]  # fmt: skip
TINY["translob_synthetic"] = [
    "data.dataset=lob_tiny", "data.synthetic.days=3", "data.synthetic.events=1500", "data.levels=3",
    "data.window=20", "data.horizon=5", "data.stride=5", "data.batch_size=32", "model.d_model=8",
    "evaluation.bootstrap.resamples=50",
]  # fmt: skip
TINY["token_pivots_synthetic"] = TINY["token_direction_synthetic"]
#: The market fixture's synthetic settings, for configs that read a lake dataset (kdd17) or another market.
TOKEN_MARKET = [
    "data.source=synthetic", "data.bars=synthetic", "data.dataset=synthetic_brooks_tiny",
    "+data.synthetic={n_symbols: 4, start: 2018-01-01, end: 2020-12-31, seed: 0, return_autocorrelation: 0.0}",
]  # fmt: skip
#: One walk-forward fold at the end of 2020, the windows and both towers shrunk.
TOKEN_FUSION = [
    *TOKEN_MARKET, "data.batch_size=16", "data.window=8", "data.prices.lookback=16", "model.hidden_size=16",
    "model.num_heads=2", "model.num_layers=1", "model.intermediate_size=32", "model.price_d_model=8",
    "evaluation.walk_forward.first_test=2020-07-01", "evaluation.walk_forward.validate=60",
    "evaluation.walk_forward.test=60", "evaluation.walk_forward.folds=1",
]  # fmt: skip
TINY["token_fusion_synthetic"] = [*TOKEN_FUSION, "data.texts.max_texts=2"]
TINY["token_fusion_kdd17"] = [*TOKEN_FUSION, "data.split.train_end=2019-06-03", "data.split.val_end=2019-12-02"]
TINY["token_mlm_kdd17"] = [
    *TOKEN_MARKET, "data.batch_size=8", "data.split.train_end=2019-06-03", "data.split.val_end=2019-12-02",
    "+model.hidden_size=16", "+model.num_heads=2", "+model.num_layers=1", "+model.intermediate_size=32",
]  # fmt: skip
NOT_HERE: dict[str, str] = {}
MOVEMENT = [
    "model.d_model=8", "trainer.max_epochs=1", "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=2",
    "evaluation.seeds=[0]",
]  # fmt: skip
TINY |= {name: MOVEMENT for name in ("stocknet_price", "stocknet_text", "stocknet_fusion")}
TINY["movement_kdd17"] = [
    *MOVEMENT, "data.dataset=synthetic", "data.lag_days=5",
    "data.splits={train: [2018-01-01, 2019-07-01], dev: [2019-07-01, 2020-01-01], test: [2020-01-01, 2020-07-01]}",
]  # fmt: skip
TINY["movement_daily"] = [
    *MOVEMENT, "data.max_tweets=2", "evaluation.folds=2",
    "data.splits={train: [2018-01-01, 2019-07-01], dev: [2019-07-01, 2020-01-01], test: [2020-01-01, 2020-07-01]}",
]  # fmt: skip


def cli(*args: str) -> Result:
    """`finfusion ARGS` in-process (stderr apart)."""
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def experiment_names() -> list[str]:
    return sorted(path.stem for path in (find_config_dir() / "experiment").glob("*.yaml"))


def test_every_experiment_config_is_covered() -> None:
    assert set(experiment_names()) == set(TINY) | set(NOT_HERE)


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A lake with the daily synthetic market (4 symbols, 2018-2020) and a 3-minute one (3 symbols, 2 weeks)."""
    root = tmp_path_factory.mktemp("families-lake")
    lake = Lake(root)
    make_and_ingest(lake, SyntheticConfig(n_symbols=4, start="2018-01-01", end="2020-12-31"), "synthetic")
    intraday = SyntheticConfig(n_symbols=3, start="2020-01-02", end="2020-01-17", freq="3m")
    make_and_ingest(lake, intraday, "synthetic_3m")
    copy = write_stocknet_copy(tmp_path_factory.mktemp("stocknet-copy"))
    ingest_stocknet(lake, copy, "stocknet")
    embed_texts(lake, lake.read("text", "stocknet"), load_encoder())
    return root


def write_stocknet_copy(root: Path, symbols: tuple[str, ...] = ("AAA", "BBB", "CCC")) -> Path:
    """A small copy in the StockNet layout: Yahoo daily bars 2013-10 .. 2016-01 and a tweet file every third day."""
    rng = np.random.default_rng(0)
    sessions = exchange_calendars.get_calendar("XNYS").sessions_in_range("2013-10-01", "2016-01-08")
    days = pl.Series([session.date() for session in sessions])
    words = ["up", "down", "beat", "miss", "buy", "sell", "guidance", "earnings", "$", "rt", "AT_USER", "URL"]
    for symbol in symbols:
        close = 50 * np.exp(np.cumsum(rng.normal(0, 0.015, len(days))))
        open_ = close * np.exp(rng.normal(0, 0.005, len(days)))
        bars = pl.DataFrame(
            {
                "Date": days.dt.to_string("%Y-%m-%d"),
                "Open": open_,
                "High": np.maximum(open_, close) * 1.01,
                "Low": np.minimum(open_, close) * 0.99,
                "Close": close,
                "Adj Close": close,
                "Volume": rng.integers(10_000, 100_000, len(days)),
            }
        )
        (root / "price" / "raw").mkdir(parents=True, exist_ok=True)
        bars.write_csv(root / "price" / "raw" / f"{symbol}.csv")
        folder = root / "tweet" / "preprocessed" / symbol
        folder.mkdir(parents=True)
        for day in days.to_list()[::3]:
            stamp = datetime(day.year, day.month, day.day, 15, 30, tzinfo=UTC).strftime("%a %b %d %H:%M:%S %z %Y")
            text = [symbol.lower(), *rng.choice(words, 6).tolist()]
            line = json.dumps({"text": text, "created_at": stamp, "user_id_str": "1"})
            (folder / day.isoformat()).write_text(line + "\n", encoding="utf-8")
    return root


@pytest.mark.parametrize("name", sorted(TINY))
def test_each_config_trains_predicts_validates_and_evaluates_through_the_same_commands(
    name: str, market: Path, tmp_path: Path
) -> None:
    overrides = [*TINY[name], *([] if name.startswith(("stocknet", "movement")) else TRAINER)]
    lake = ["--lake", str(market)]
    run = tmp_path / name
    trained = cli("train", "--config", name, *overrides, "--run", str(run), *lake)
    assert trained.exit_code == 0, trained.output
    assert {"config.yaml", "state.json", "metrics.json", "model.safetensors"} <= {p.name for p in run.iterdir()}
    predicted = cli("predict", str(run), "--span", "test", *lake)
    assert predicted.exit_code == 0, predicted.output
    assert "predictions" in predicted.output and f"dataset {name}" in predicted.output
    validated = cli("validate", str(run), *lake)
    assert validated.exit_code == 0, validated.output
    assert "val_loss" in validated.output
    evaluated = cli("evaluate", "--config", name, *overrides, "--run", str(tmp_path / "eval"), *lake)
    assert evaluated.exit_code == 0, evaluated.output
    assert "test metrics" in evaluated.output and "baseline" in evaluated.output
    if name == "multimodal_tiny":  # explanations of a text model on the synthetic market with planted news
        check_explain(run, name, market)


def check_explain(run: Path, name: str, market: Path) -> None:
    first = Lake(market).read("forecasts", name).sort("origin_ts").row(0, named=True)
    at = f"{first['symbol']}:{first['origin_ts'].date().isoformat()}"
    explained = cli("explain", str(run), "--at", at, "--steps", "8", "--planted", "--lake", str(market))
    assert explained.exit_code == 0, explained.output
    assert "texts (largest |IG| first)" in explained.output and "planted news: first by |IG|" in explained.output
    (stored,) = (run / "explanations").glob(f"{first['symbol']}_*.json")
    decision = json.loads(stored.read_text())
    assert len(decision["heat"][0]) == len(decision["channels"]) and decision["texts"]
    assert {"register", "price tokens"} <= set(decision["attention"])
    assert abs(decision["completeness_gap"]) < 0.1 * max(1e-3, abs(decision["output"] - decision["baseline_output"]))
    planted = json.loads((run / "explanations" / "planted_rate.json").read_text())
    assert planted["windows"] >= planted["first_by_integrated_gradients"] >= 0
    assert 'id="explanations"' in (run / "report" / "explanations.html").read_text()
    refused = cli("explain", str(run), "--at", f"{first['symbol']}:1999-01-04", "--lake", str(market))
    assert refused.exit_code != 0 and "has no decision on 1999-01-04" in refused.output


def test_predict_reuses_the_stored_normaliser_and_split_after_the_lake_grows(tmp_path: Path) -> None:
    """Train, append a year of bars, predict: the old test windows are bit-for-bit the same; new windows use the
    stored statistics (a refit on the grown lake would move the split and the normaliser)."""
    lake = Lake(tmp_path / "lake")
    make_and_ingest(Lake(tmp_path / "full"), SyntheticConfig(n_symbols=2, end="2019-12-31"), "synthetic")
    bars = Lake(tmp_path / "full").read("bars", "synthetic", freq="1d")
    cut = pl.datetime(2019, 1, 1, time_zone="UTC")
    lake.write(BARS, "synthetic", bars.filter(pl.col("ts") < cut), freq="1d")
    overrides = [
        f"data.lake={lake.root}",
        "data.source=lake",
        "data.texts.enabled=false",
        "data.lookback=32",
        "data.horizon=4",
        *TRAINER,
    ]
    cfg = load_config("dlinear_synthetic", overrides)
    run = tmp_path / "run"
    trained = train_run(cfg, run, resume="never")
    before = predict_run(run, "test").forecasts
    lake.write(BARS, "synthetic", bars.filter(pl.col("ts") >= cut), freq="1d")
    after = predict_run(run, "test").forecasts
    assert len(after) > len(before)
    old = np.isin(after.origin_us, before.origin_us)
    assert old.sum() == len(before)
    np.testing.assert_array_equal(after.point[old], before.point)
    np.testing.assert_array_equal(after.realised[old], before.realised)
    stored = trained.data.state["normalizer"]
    from finfusion.families.pipeline import load_run

    assert load_run(run).data.state["normalizer"] == stored
    refitted = family_of(cfg).data(cfg)
    assert refitted.state["train_end_us"] != trained.data.state["train_end_us"]  # what a refit would have done


def test_a_misspelled_key_is_an_error_naming_it_and_the_allowed_keys(market: Path) -> None:
    result = cli("train", "--config", "dlinear_synthetic", "+data.lookbak=16", "--lake", str(market))
    assert result.exit_code != 0
    assert "data.lookbak" in result.stderr and "lookback" in result.stderr
    trainer = cli("train", "--config", "cga_daily", "+trainer.max_epoch=1", "--lake", str(market))
    assert trainer.exit_code != 0 and "trainer.max_epoch" in trainer.stderr and "max_epochs" in trainer.stderr
    model = cli("train", "--config", "cga_daily", "+model.d_modl=8", "--lake", str(market))
    assert model.exit_code != 0 and "model.d_modl" in model.stderr and "d_model" in model.stderr


def test_a_model_that_reads_a_key_the_samples_lack_is_refused_when_built(market: Path, tmp_path: Path) -> None:
    cfg = load_config(
        "multimodal_tiny",
        [f"data.lake={market}", "data.dataset=synthetic", "data.texts.enabled=false", *FORECAST_DATA, *TRAINER],
    )
    with pytest.raises(FinfusionError, match="model 'multimodal_diffusion' reads 'text_emb'"):
        train_run(cfg, tmp_path / "run")
    twin = load_config("multimodal_tiny", [f"data.lake={market}", "data.texts.enabled=false", "model.use_text=false"])
    assert family_of(twin).name == "forecast"


def test_an_unknown_task_names_the_known_ones() -> None:
    cfg = load_config("dlinear_synthetic", ["task.name=forecsat"])
    known = (
        "forecast, generative, lob_movement, masked_lm, movement, portfolio, pretrain, relevance, token_classification"
    )
    with pytest.raises(FinfusionError, match=rf"forecsat.*known tasks: {known}"):
        family_of(cfg)


def test_a_model_part_whose_own_task_another_family_runs_is_refused() -> None:
    cfg = OmegaConf.create(
        {
            "name": "x",
            "task": {"name": "movement"},
            "model": {"name": "multimodal_diffusion", "task": {"name": "generative"}},
        }
    )
    with pytest.raises(FinfusionError, match="trains with its own task 'generative', which the movement family"):
        family_of(cfg).check(cfg)
