"""Experiments end to end on a small synthetic lake: splits, every model trains / reloads / resumes, the commands."""

from __future__ import annotations

import dataclasses
import json
import pickle
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import polars as pl
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig
from safetensors.torch import load_file
from typer.testing import Result

from finfusion.config import load_config
from finfusion.data.calendar import from_us, to_us
from finfusion.data.lake import Lake
from finfusion.data.schema import BARS
from finfusion.data.sources.synthetic import SyntheticConfig
from finfusion.data.sources.synthetic_ingest import check_stored_market
from finfusion.errors import FinfusionError
from finfusion.families.forecast import family_data
from finfusion.families.pipeline import train_run
from finfusion.features.text import document_text
from finfusion.forecasting.data import build_experiment_data, data_options, load_bars
from finfusion.forecasting.forecast import Forecasts, run_forecasts
from finfusion.forecasting.scoring import DIRECTION_BASELINES, collapse_warnings, has_direction, window_losses
from finfusion.forecasting.walk_forward import (
    evaluate_experiment,
    evaluation_options,
    planted_news_steps,
    splitter,
)
from finfusion.models.build import build_model, load_model_state
from finfusion.models.multimodal.text_encoder import load_tokenizer
from finfusion.samples.windows import collate
from finfusion.training.fitting import fit_model, task_settings
from finfusion.training.losses import build_loss
from finfusion.training.trainer import CHECKPOINT_DIR, CONFIG_FILE, LAST_CHECKPOINT

REPO = Path(__file__).resolve().parents[1]
EXPERIMENT = REPO / "configs" / "experiment" / "patchtst_synthetic.yaml"

SMALL_MODELS: dict[str, list[str]] = {
    "patchtst": [
        "model.d_model=16",
        "model.n_heads=2",
        "model.n_layers=1",
        "model.d_ff=32",
        "model.patch_len=8",
        "model.stride=8",
    ],
    "dlinear": ["model.kernel=9"],
    "hf_tst": ["model.d_model=8", "model.n_layers=1", "model.d_ff=16", "model.num_samples=8"],
}


def tiny_overrides(lake: Path) -> list[str]:
    return [
        f"data.lake={lake}",
        "data.synthetic.n_symbols=2",
        "data.synthetic.start=2016-01-01",
        "data.synthetic.end=2018-12-31",
        "data.lookback=32",
        "data.horizon=4",
        "data.batch_size=32",
        "trainer.max_epochs=2",
        "trainer.limit_train_batches=6",
        "trainer.limit_val_batches=2",
        "trainer.enable_progress_bar=false",
        "trainer.loggers=[csv]",
        "trainer.checkpoint.every_n_train_steps=2",
    ]


@pytest.fixture(scope="module")
def lake_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("experiment-lake")


def config_for(lake: Path, model: str = "patchtst", *extra: str) -> DictConfig:
    swap = [] if model == "patchtst" else [f"model={model}"]  # the experiment uses model=patchtst_cpu
    return load_config(EXPERIMENT, [*swap, *tiny_overrides(lake), *SMALL_MODELS.get(model, []), *extra])


class CrashAfter(Callback):
    """Raise once `steps` optimiser steps are done: a crash in the middle of an epoch."""

    def __init__(self, steps: int) -> None:
        self.steps = steps

    def on_train_batch_end(self, trainer: object, *args: object) -> None:
        if trainer.global_step >= self.steps:  # type: ignore[attr-defined]
            raise RuntimeError("simulated crash")


class RecordStart(Callback):
    def __init__(self) -> None:
        self.start_step = -1

    def on_train_start(self, trainer: object, *args: object) -> None:
        self.start_step = trainer.global_step  # type: ignore[attr-defined]


def test_splits_are_point_in_time_and_ordered(lake_dir: Path) -> None:
    data = build_experiment_data(config_for(lake_dir).data)
    assert len(data.train) > 0 and len(data.val) > 0 and len(data.test) > 0
    assert data.train.future_end_us.max() < data.train_end_us
    assert data.val.origins_us.min() >= data.train_end_us
    assert data.val.future_end_us.max() < data.val_end_us
    assert data.test.origins_us.min() >= data.val_end_us
    assert data.val.normalizer is data.train.normalizer is data.test.normalizer


def test_perturbing_bars_after_train_end_leaves_training_and_earlier_samples_unchanged(
    lake_dir: Path, tmp_path: Path
) -> None:
    cfg = config_for(lake_dir)
    data = build_experiment_data(cfg.data)
    bars = Lake(lake_dir).read("bars", "synthetic_structured", freq="1d")
    later = to_us(bars["ts"]) >= data.train_end_us
    factor = pl.Series(np.where(later, np.linspace(0.5, 3.0, bars.height), 1.0))
    prices = ("open", "high", "low", "close", "adj_close")
    moved = bars.with_columns([(pl.col(c) * factor).alias(c) for c in prices])
    Lake(tmp_path).write(BARS, "synthetic_structured", moved, freq="1d")
    perturbed = build_experiment_data(load_config(EXPERIMENT, [*tiny_overrides(tmp_path)]).data)
    assert len(perturbed.train) == len(data.train)
    for i in range(0, len(data.train), 97):
        a, b = data.train[i], perturbed.train[i]
        assert all(torch.equal(a[k], b[k]) for k in a)
    val_past = [perturbed.val[i]["past"] for i in range(3)]
    assert not all(torch.equal(v, data.val[i]["past"]) for i, v in enumerate(val_past))


def batch_loss(model: torch.nn.Module, cfg: DictConfig, batch: dict[str, torch.Tensor]) -> float:
    task = task_settings(cfg)
    kwargs = {"levels": model.quantile_levels.tolist()} if task["loss"] == "mse_quantile" else {}
    model.train()
    torch.manual_seed(0)
    with torch.no_grad():
        outputs = model(batch)
    return float(build_loss(task["loss"], **kwargs)(outputs, batch))


@pytest.mark.parametrize("name", list(SMALL_MODELS))
def test_each_model_trains_reloads_identically_and_resumes_after_a_crash(
    name: str, lake_dir: Path, tmp_path: Path
) -> None:
    cfg = config_for(lake_dir, name)
    run = tmp_path / "run"
    data = build_experiment_data(cfg.data)
    batch = collate([data.train[i] for i in range(0, len(data.train), max(1, len(data.train) // 64))])
    torch.manual_seed(0)
    before = batch_loss(build_model(cfg.model, data.model_arguments), cfg, batch)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_run(cfg, run, data=family_data(data), callbacks=[CrashAfter(3)])
    saved = torch.load(run / CHECKPOINT_DIR / LAST_CHECKPOINT, weights_only=True, map_location="cpu")
    assert saved["global_step"] == 2
    start = RecordStart()
    trained = train_run(load_config(run / CONFIG_FILE), run, data=family_data(data), callbacks=[start])
    assert start.start_step == 2
    final = torch.load(run / CHECKPOINT_DIR / LAST_CHECKPOINT, weights_only=True, map_location="cpu")
    assert final["global_step"] == 12
    after = batch_loss(trained.model, cfg, batch)
    assert after < before
    fresh = load_model_state(build_model(cfg.model, data.model_arguments), run)
    torch.manual_seed(1)
    expected = run_forecasts(trained.model, data.test.subset(np.arange(40)))
    torch.manual_seed(1)
    again = run_forecasts(fresh, data.test.subset(np.arange(40)))
    np.testing.assert_array_equal(expected.point, again.point)
    assert set(load_file(run / "model.safetensors")) == set(trained.model.state_dict())


@pytest.mark.parametrize("name", ["lightgbm", "random_walk", "drift"])
def test_closed_form_models_fit_save_and_reload(name: str, lake_dir: Path, tmp_path: Path) -> None:
    cfg = config_for(lake_dir, name, *(["model.n_estimators=20"] if name == "lightgbm" else []))
    trained = train_run(cfg, tmp_path)
    data = trained.data
    subset = data.test.subset(np.arange(50))
    expected = run_forecasts(trained.model, subset)
    again = run_forecasts(load_model_state(build_model(cfg.model, data.model_arguments), tmp_path), subset)
    np.testing.assert_allclose(again.point, expected.point, rtol=0, atol=1e-12)
    if name == "random_walk":
        np.testing.assert_allclose(expected.point, 0.0, atol=1e-8)  # a raw return of 0, up to float32 rounding
    assert np.isfinite(expected.realised).all()
    np.testing.assert_allclose(
        expected.realised[:, 0, 0],
        [subset.panel.values[s][i + 1, 0] for s, i in subset.index],
        rtol=1e-6,
    )
    assert json.loads((tmp_path / "metrics.json").read_text())["model"] == name


def test_train_predict_commands_store_and_export_forecasts(
    lake_dir: Path, lake_root: Path, tmp_path: Path, cli: Callable[..., Result]
) -> None:
    run = tmp_path / "run_a"
    args = ["train", "--config", str(EXPERIMENT), *tiny_overrides(lake_dir), *SMALL_MODELS["patchtst"]]
    result = cli(*args, "--run", str(run))
    assert result.exit_code == 0, result.output
    assert "best checkpoint" in result.output
    rerun = cli("train", "--config", str(run / CONFIG_FILE), "--run", str(tmp_path / "run_b"))
    assert rerun.exit_code == 0, rerun.output
    first, second = load_file(run / "model.safetensors"), load_file(tmp_path / "run_b" / "model.safetensors")
    assert all(torch.equal(first[k], second[k]) for k in first)
    npz, parquet = tmp_path / "latest.npz", tmp_path / "test.parquet"
    assert cli("predict", str(run), "--span", "latest", "--out", str(npz)).exit_code == 0
    predicted = cli("predict", str(run), "--out", str(parquet))
    assert predicted.exit_code == 0, predicted.output
    arrays = np.load(npz)
    assert arrays["predictions"].shape == (2, 1, 4, 1)
    assert np.isnan(arrays["targets"]).all()
    assert arrays["quantiles"].shape == (2, 4, 1, 3)
    stored = Lake(lake_root).read("forecasts", "run_a")
    exported = pl.read_parquet(parquet)
    assert {"q0.1", "q0.5", "q0.9", "point", "realised"} <= set(stored.columns)
    assert exported.height > 0 and exported["realised"].null_count() == 0
    assert stored.height == exported.height + 2 * 4


def test_predict_rejects_a_folder_that_is_not_a_run(tmp_path: Path, cli: Callable[..., Result]) -> None:
    result = cli("predict", str(tmp_path))
    assert result.exit_code != 0
    assert "not a run folder" in result.output


def test_train_rejects_an_unknown_override(lake_dir: Path, cli: Callable[..., Result]) -> None:
    result = cli("train", "--config", str(EXPERIMENT), f"data.lake={lake_dir}", "model.no_such_key=1")
    assert result.exit_code != 0
    assert "no_such_key" in result.output


def test_evaluate_command_writes_metrics_significance_report_and_results_page(
    lake_dir: Path, tmp_path: Path, cli: Callable[..., Result], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FINFUSION_TRACKING", "on")  # the evaluation and its folds' trainings are tracked
    run, page = tmp_path / "eval", tmp_path / "results.md"
    overrides = [
        *tiny_overrides(lake_dir),
        *SMALL_MODELS["patchtst"],
        "evaluation.walk_forward.train=300",
        "evaluation.walk_forward.validate=60",
        "evaluation.walk_forward.test=60",
        "evaluation.walk_forward.max_folds=2",
        "evaluation.baselines=[random_walk,drift,dlinear]",
    ]
    result = cli("evaluate", "--config", str(EXPERIMENT), *overrides, "--run", str(run), "--markdown", str(page))
    assert result.exit_code == 0, result.output
    metrics = json.loads((run / "metrics.json").read_text())
    assert list(metrics["models"]) == ["patchtst", "random_walk", "drift", "dlinear", *DIRECTION_BASELINES]
    assert metrics["baselines"] == ["random_walk", "drift", "dlinear", *DIRECTION_BASELINES]
    assert {"mase", "directional_accuracy", "crps", "coverage", "sharpe"} <= set(metrics["models"]["patchtst"])
    tests = {(t["model"], t["baseline"]): t for t in metrics["significance"]}
    best = max(DIRECTION_BASELINES, key=lambda name: metrics["models"][name]["directional_accuracy"])
    models = ("patchtst", "drift", "dlinear")
    assert set(tests) == {(m, "random_walk") for m in models} | {(m, best) for m in models}
    assert {t["loss"] for (_, baseline), t in tests.items() if baseline == best} == {"direction error"}
    assert all(0 <= t["p_value"] <= 1 and t["subset"] == "all" for t in tests.values())
    assert (run / "report" / "report.html").is_file()
    assert sorted(p.name for p in (run / "folds" / "patchtst").iterdir()) == ["fold_0", "fold_1"]
    text = page.read_text()
    assert "| **patchtst** |" in text and "random_walk (baseline)" in text and "finfusion evaluate" in text
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(str(load_config(EXPERIMENT).name))
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    parent = runs.pop("evaluate eval")
    assert {"patchtst/fold_0", "patchtst/fold_1"} <= {name.removeprefix("train ") for name in runs}
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in runs.values())
    assert parent.data.metrics["test_mase.patchtst"] == pytest.approx(metrics["models"]["patchtst"]["mase"])
    artifacts = {item.path for item in client.list_artifacts(parent.info.run_id)}
    assert {"config.yaml", "evaluation.json", "report", "results.md"} <= artifacts


def walk_forward_mase(data_part: str, lake: Path, run: Path) -> tuple[float, float, float]:
    """(PatchTST MASE, random walk MASE, Diebold-Mariano p-value) of one walk-forward fold on `data_part`."""
    cfg = load_config(
        EXPERIMENT,
        [
            f"data={data_part}",
            f"data.lake={lake}",
            "data.synthetic.n_symbols=3",
            "data.horizon=1",
            *SMALL_MODELS["patchtst"],
            "trainer.max_epochs=3",
            "trainer.limit_train_batches=30",
            "trainer.enable_progress_bar=false",
            "trainer.loggers=[csv]",
            "evaluation.walk_forward.train=1500",
            "evaluation.walk_forward.validate=200",
            "evaluation.walk_forward.test=300",
            "evaluation.walk_forward.max_folds=1",
            "evaluation.baselines=[random_walk]",
            "evaluation.direction_baselines=[]",
        ],
    )
    evaluation = evaluate_experiment(cfg, run, progress=lambda _: None)
    models = evaluation.metrics.models
    (test,) = evaluation.metrics.significance  # patchtst vs random_walk
    return models["patchtst"]["mase"], models["random_walk"]["mase"], test["p_value"]


def test_patchtst_beats_the_random_walk_only_where_there_is_structure(tmp_path: Path) -> None:
    lake = tmp_path / "lake"  # its own lake: the full 2012-2020 markets, not the module's short ones
    structured = walk_forward_mase("synthetic_structured", lake, tmp_path / "structured")
    pure = walk_forward_mase("synthetic_random_walk", lake, tmp_path / "random_walk")
    assert structured[0] < 0.99 * structured[1], structured
    assert pure[0] >= 0.995 * pure[1] and pure[2] > 0.05, pure


def test_validate_command_scores_a_run_without_training(
    lake_dir: Path, tmp_path: Path, cli: Callable[..., Result]
) -> None:
    run = tmp_path / "run"
    args = ["train", "--config", str(EXPERIMENT), *tiny_overrides(lake_dir), *SMALL_MODELS["patchtst"], "--run"]
    assert cli(*args, str(run)).exit_code == 0
    before = sorted(p.name for p in (run / CHECKPOINT_DIR).iterdir())
    best = cli("validate", str(run))
    assert best.exit_code == 0, best.output
    assert "val_loss" in best.output and "val_sharpe" in best.output
    last = cli("validate", str(run), "--checkpoint", str(run / CHECKPOINT_DIR / LAST_CHECKPOINT))
    assert last.exit_code == 0, last.output
    assert sorted(p.name for p in (run / CHECKPOINT_DIR).iterdir()) == before
    assert cli("predict", str(run), "--num-samples", "8").exit_code != 0
    crafted = tmp_path / "crafted.ckpt"
    crafted.write_bytes(pickle.dumps({"state_dict": {}}))  # not a torch checkpoint: never unpickled
    for command in (["validate", str(run), "--checkpoint"], [*args, str(run), "--resume"]):
        refused = cli(*command, str(crafted))
        assert refused.exit_code == 2 and "Traceback" not in refused.output
        assert refused.output.splitlines()[-1].startswith(f"error: {crafted}: not a torch checkpoint")


def test_forecasts_at_steps_are_one_step_windows_of_the_picked_pairs() -> None:
    n, s, h = 3, 4, 5
    rng = np.random.default_rng(0)
    forecasts = Forecasts(
        symbols=("A", "B"),
        targets=("log_return",),
        symbol_index=np.array([0, 1, 0]),
        origin_us=np.array([10, 20, 30]),
        target_us=np.arange(n * h).reshape(n, h),
        point=rng.normal(size=(n, h, 1)),
        realised=rng.normal(size=(n, h, 1)),
        past=rng.normal(size=(n, 6, 1)),
        samples=rng.normal(size=(n, s, h, 1)),
    )
    steps = np.zeros((n, h), dtype=bool)
    steps[0, 1] = steps[2, 3] = steps[2, 4] = True
    picked = forecasts.at_steps(steps)
    assert len(picked) == 3 and picked.point.shape == (3, 1, 1) and picked.samples.shape == (3, s, 1, 1)
    assert picked.origin_us.tolist() == [10, 30, 30] and picked.target_us[:, 0].tolist() == [1, 13, 14]
    assert picked.samples[1, :, 0, 0].tolist() == forecasts.samples[2, :, 3, 0].tolist()
    assert picked.realised[2, 0, 0] == forecasts.realised[2, 4, 0]
    assert np.array_equal(picked.past[1], forecasts.past[2])


class _SeenTexts:
    """The parts of a TextWindowDataset that `planted_news_steps` reads: 2 symbols, 10 daily bars each."""

    def __init__(self, seen: list[list[str]]) -> None:
        closes = np.arange(10) * 86_400_000_000 + 72_000_000_000  # 20:00 every day
        self.panel = SimpleNamespace(symbols=("A", "B"), ts=[closes, closes[1:]])
        self.index = np.array([[0, 2], [1, 2], [0, 5]])
        self.seen = seen

    def text_ids(self, k: int) -> list[str]:
        return self.seen[k]


def test_planted_news_steps_mark_the_sessions_the_news_moves_for_the_window_that_saw_it() -> None:
    day, open_ = 86_400_000_000, 48_600_000_000  # 13:30
    events = pl.DataFrame(
        {
            "text_id": ["n1", "n2", "noise"],
            "symbol": ["A", "A", "B"],
            "first_session_ts": from_us(np.array([3 * day + open_, 7 * day + open_, 3 * day + open_]), "x"),
            "horizon": [3, 2, 3],
        }
    )
    target_us = np.array([[3, 4, 5, 6], [3, 4, 5, 6], [6, 7, 8, 9]]) * day + 72_000_000_000
    test = _SeenTexts([["n1", "other"], ["n1"], ["n2"]])
    mask = planted_news_steps(events, test, target_us)  # type: ignore[arg-type]
    assert mask.tolist() == [
        [True, True, True, False],  # A saw n1: sessions 3, 4, 5
        [False, False, False, False],  # B saw A's item: nothing planted for B
        [False, True, True, False],  # A saw n2: sessions 7, 8
    ]


def test_direction_loss_counts_sign_errors_and_the_random_walk_is_always_wrong() -> None:
    realised = np.array([[[0.01], [-0.02], [0.03], [-0.01]]])
    point = np.array([[[0.02], [0.01], [0.01], [-0.05]]])
    forecasts = Forecasts(
        symbols=("A",),
        targets=("log_return",),
        symbol_index=np.array([0]),
        origin_us=np.array([0]),
        target_us=np.arange(4)[None],
        point=point,
        realised=realised,
        past=np.zeros((1, 3, 1)),
    )
    assert window_losses(forecasts, np.array([True]), "direction").tolist() == [0.25]
    flat = dataclasses.replace(forecasts, point=np.zeros_like(point))
    assert window_losses(flat, np.array([True]), "direction").tolist() == [1.0]
    assert has_direction(forecasts, np.array([True])) and not has_direction(flat, np.array([True]))
    with pytest.raises(ValueError, match="unknown loss"):
        window_losses(forecasts, np.array([True]), "hinge")


def test_evaluation_options_take_one_or_several_known_dm_losses() -> None:
    assert evaluation_options({"dm_loss": "crps"})["dm_loss"] == ["crps"]
    assert evaluation_options({"dm_loss": ["crps", "direction"]})["dm_loss"] == ["crps", "direction"]
    with pytest.raises(FinfusionError, match="unknown \\['hinge'\\]"):
        evaluation_options({"dm_loss": ["crps", "hinge"]})


def test_data_start_drops_the_bars_before_it(lake_dir: Path) -> None:
    data = build_experiment_data(load_config(EXPERIMENT, [*tiny_overrides(lake_dir), "+data.start=2017-01-01"]).data)
    first = min(int(ts[0]) for ts in data.panel.ts)
    assert first >= int(to_us(pl.Series([datetime(2017, 1, 1, tzinfo=UTC)]))[0])
    with pytest.raises(FinfusionError, match=r"data\.start: 'soon' is not a date"):
        build_experiment_data(load_config(EXPERIMENT, [*tiny_overrides(lake_dir), "+data.start=soon"]).data)


def test_first_test_keeps_a_rolling_train_block_at_its_length_and_refuses_too_little_history() -> None:
    day = 86_400_000_000
    origins = to_us(pl.Series([datetime(2020, 1, 1, 21, tzinfo=UTC)]))[0] + day * np.arange(100)
    first_test = (datetime(2020, 1, 1, tzinfo=UTC) + timedelta(days=60)).date().isoformat()
    options = {**evaluation_options({})["walk_forward"], "first_test": first_test, "validate": 5, "test": 10}
    rolling = splitter({**options, "mode": "rolling", "train": 20}, origins, horizon=2)
    (first, *_) = rolling.split(origins)
    assert first.train.size == 20 and first.test[0] == 60  # not everything back to the first bar
    expanding = splitter({**options, "mode": "expanding", "train": 20}, origins, horizon=2)
    assert next(iter(expanding.split(origins))).train[0] == 0
    with pytest.raises(FinfusionError, match="leaves 51 periods before it for a rolling train block of"):
        splitter({**options, "mode": "rolling", "train": 80}, origins, horizon=2)


def test_token_ids_of_the_seen_texts_feed_minilm_with_lora_in_the_loop(tmp_path: Path) -> None:
    lake_dir = tmp_path / "lake"
    cfg = config_for(
        lake_dir,
        "multimodal_tiny",
        "data=synthetic",
        "+data.texts.tokens=all-MiniLM-L6-v2",
        "+data.texts.max_tokens=16",
        "data.texts.max_texts=2",
        "+model.text_encoder.backbone=all-MiniLM-L6-v2",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1",
        "model.task.val_num_samples=2",
        "model.task.val_steps=2",
    )
    data = build_experiment_data(cfg.data)
    tokenizer = load_tokenizer("all-MiniLM-L6-v2")
    texts = Lake(lake_dir).read("text", cfg.data.dataset)
    bodies = [document_text(t, b) for t, b in zip(texts["title"], texts["body"], strict=True)]
    documents = dict(zip(texts["id"], bodies, strict=True))
    with_news = next(k for k in range(len(data.train)) if data.train[k]["text_mask"].any())
    sample = data.train[with_news]
    assert sample["text_ids"].shape == (2, 16) and sample["text_ids_mask"].shape == (2, 16)
    assert torch.equal(sample["text_ids_mask"].any(dim=1), sample["text_mask"])
    first = data.train.text_ids(with_news)[0]
    slot = int(np.flatnonzero(sample["text_mask"].numpy())[0])
    expected = tokenizer(documents[first], truncation=True, max_length=16)["input_ids"]
    assert sample["text_ids"][slot, : len(expected)].tolist() == expected
    model = build_model(cfg.model, data.model_arguments)
    base = {name: p.detach().clone() for name, p in model.text_encoder.named_parameters() if "lora_" not in name}
    lora = {name: p.detach().clone() for name, p in model.text_encoder.named_parameters() if "lora_B" in name}
    trained = build_model(cfg.model, data.model_arguments)
    fit_model(cfg, trained, data.train, data.val, data.batches, tmp_path / "run", resume="never")
    after = dict(trained.text_encoder.named_parameters())
    assert all(torch.equal(after[name], value) for name, value in base.items())  # stage 1: MiniLM frozen
    assert any(not torch.equal(after[name], value) for name, value in lora.items())  # the adapters learned


def test_a_stored_synthetic_market_must_have_been_made_with_the_settings_asked_for(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake")
    settings = {"n_symbols": 2, "start": "2019-01-01", "end": "2019-03-31", "seed": 3}
    options = data_options({"source": "synthetic", "lake": str(lake.root), "synthetic": settings})
    first = load_bars(options)
    assert load_bars(options).equals(first)  # the same settings reuse the stored market
    changed = data_options({**options, "synthetic": {**settings, "effect_large": 0.08}})
    with pytest.raises(FinfusionError, match="made with other settings"):
        load_bars(changed)
    check_stored_market(lake, SyntheticConfig(**settings))


def test_a_collapsed_direction_forecast_or_zero_width_intervals_are_flagged() -> None:
    base = {
        "symbols": ("A",), "targets": ("log_return",), "symbol_index": np.zeros(3, dtype=int),
        "origin_us": np.arange(3), "target_us": np.zeros((3, 2), dtype=int), "realised": np.zeros((3, 2, 1)),
        "past": np.zeros((3, 4, 1)),
    }  # fmt: skip
    always_up = Forecasts(point=np.full((3, 2, 1), 0.01), **base)
    mixed = Forecasts(point=np.array([0.01, -0.01, 0.02, 0.0, 0.01, 0.03]).reshape(3, 2, 1), **base)
    random_walk = Forecasts(point=np.zeros((3, 2, 1)), **base)
    squeezed = Forecasts(
        point=mixed.point, quantiles=np.repeat(mixed.point[..., None], 3, axis=-1), levels=(0.1, 0.5, 0.9), **base
    )
    found = collapse_warnings({"up": always_up, "mixed": mixed, "rw": random_walk, "squeezed": squeezed})
    assert found == [
        "warning: up forecasts up on every test step (a collapsed direction forecast)",
        "warning: squeezed's forecast intervals have zero width everywhere (degenerate)",
    ]
