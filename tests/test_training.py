"""Training core: losses, schedule, tasks, trainer (checkpoints, resume, early stopping) and config composition."""

from __future__ import annotations

import math
import re
import warnings
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback, EarlyStopping
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from finfusion.config import ConfigError, load_config, save_config
from finfusion.errors import FinfusionError
from finfusion.evaluation.metrics import mcc
from finfusion.training.losses import (
    build_loss,
    cross_entropy_loss,
    focal_loss,
    huber_loss,
    mase_loss,
    mse_loss,
    naive_scale,
    quantile_loss,
)
from finfusion.training.schedule import configure_optimizer, param_groups, warmup_cosine_factor
from finfusion.training.tasks import ForecastTask, MovementTask, build_task
from finfusion.training.trainer import (
    CHECKPOINT_DIR,
    CONFIG_FILE,
    LAST_CHECKPOINT,
    fit,
    resolve_precision,
    spread_over_span,
)

L_, C, H, T = 8, 2, 3, 1
REPO_CONFIGS = Path(__file__).resolve().parents[1] / "configs"


class TinyForecaster(nn.Module):
    """`past` [B, L, C] flattened → `point` [B, H, T] (and `quantiles` [B, H, T, Q] when levels are given)."""

    def __init__(self, levels: tuple[float, ...] = ()) -> None:
        super().__init__()
        self.quantile_levels = list(levels) or None
        self.norm = nn.LayerNorm(L_ * C)
        self.linear = nn.Linear(L_ * C, H * T * max(1, len(levels)))

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        out = self.linear(self.norm(batch["past"].flatten(1)))
        if self.quantile_levels:
            return {"quantiles": out.view(-1, H, T, len(self.quantile_levels))}
        return {"point": out.view(-1, H, T), "aux_loss": out.new_zeros(())}


class TinyClassifier(nn.Module):
    """`past` [B, L, C] flattened → `logits` [B, 2]."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(L_ * C, 2)

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        return {"logits": self.linear(batch["past"].flatten(1))}


class ContractDataset(Dataset):
    """Samples following the contract; the next return is a fixed linear function of `past` plus a little noise."""

    def __init__(self, n: int, seed: int) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.past = torch.randn(n, L_, C, generator=gen)
        weights = torch.randn(L_ * C, H * T, generator=torch.Generator().manual_seed(123))
        self.future = (self.past.flatten(1) @ weights / 4 + 0.05 * torch.randn(n, H * T, generator=gen)).view(n, H, T)
        self.label = (self.future[:, 0, 0] > 0).long()
        self.label[::7] = -1

    def __len__(self) -> int:
        return len(self.past)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {
            "past": self.past[i],
            "past_mask": torch.ones(L_, dtype=torch.bool),
            "future": self.future[i],
            "future_mask": torch.ones(H, dtype=torch.bool),
            "label": self.label[i],
            "origin_us": torch.tensor(i, dtype=torch.int64),
        }


def loaders(batch_size: int = 16, n_train: int = 128) -> tuple[DataLoader, DataLoader]:
    return (
        DataLoader(ContractDataset(n_train, 0), batch_size=batch_size, shuffle=True),
        DataLoader(ContractDataset(48, 1), batch_size=batch_size),
    )


def experiment_cfg(**trainer: object) -> DictConfig:
    base = {
        "seed": 0,
        "deterministic": True,
        "max_epochs": 3,
        "accelerator": "cpu",
        "enable_progress_bar": False,
        "log_every_n_steps": 1,
        "checkpoint": {"monitor": "val_loss", "mode": "min", "save_top_k": 2, "every_n_train_steps": None},
        "early_stopping": {"enabled": False},
    }
    for key, value in trainer.items():
        base[key] = {**base[key], **value} if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return OmegaConf.create({"trainer": base, "task": {"name": "forecast", "loss": "mse"}})


def forecast_task(**kwargs: object) -> ForecastTask:
    torch.manual_seed(0)
    return ForecastTask(TinyForecaster(), lr=3e-2, warmup_fraction=0.1, **kwargs)


# ---------------------------------------------------------------- losses


def test_mse_and_huber_match_hand_values_and_honour_the_mask() -> None:
    pred = torch.tensor([[[1.0], [3.0]]])
    target = torch.tensor([[[0.0], [0.0]]])
    assert mse_loss(pred, target).item() == pytest.approx((1 + 9) / 2)
    assert mse_loss(pred, target, torch.tensor([[True, False]])).item() == pytest.approx(1.0)
    # Huber, delta 1: 0.5 * 1^2 and 1 * (3 - 0.5)
    assert huber_loss(pred, target).item() == pytest.approx((0.5 + 2.5) / 2)


def test_quantile_loss_at_the_median_is_half_the_mae_and_pinball_by_hand() -> None:
    gen = torch.Generator().manual_seed(0)
    pred, target = torch.randn(4, H, T, generator=gen), torch.randn(4, H, T, generator=gen)
    median = quantile_loss(pred.unsqueeze(-1), target, torch.tensor([0.5]))
    assert median.item() == pytest.approx(0.5 * (pred - target).abs().mean().item(), rel=1e-6)
    quantiles = torch.tensor([[[[1.0, 2.0]]]])  # [1, 1, 1, 2] at levels 0.1, 0.9; target 1.5
    value = quantile_loss(quantiles, torch.tensor([[[1.5]]]), torch.tensor([0.1, 0.9]))
    assert value.item() == pytest.approx((0.1 * 0.5 + 0.1 * 0.5) / 2)


def test_mase_scales_by_in_sample_naive_errors() -> None:
    past = torch.tensor([[[0.0], [1.0], [3.0]]])  # naive errors 1, 2 → scale 1.5
    scale = naive_scale(past, [0])
    assert scale.shape == (1, 1, 1)
    assert scale.item() == pytest.approx(1.5)
    loss = mase_loss(torch.tensor([[[3.0]]]), torch.tensor([[[0.0]]]), scale)
    assert loss.item() == pytest.approx(2.0)
    batch = {"past": past, "future": torch.tensor([[[0.0]]])}
    assert build_loss("mase")({"point": torch.tensor([[[3.0]]])}, batch).item() == pytest.approx(2.0)


def test_focal_with_gamma_zero_is_cross_entropy_and_gamma_down_weights_easy_samples() -> None:
    gen = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(10, 2, generator=gen), torch.randint(0, 2, (10,), generator=gen)
    ce = F.cross_entropy(logits, labels)
    assert focal_loss(logits, labels, gamma=0.0).item() == pytest.approx(ce.item(), rel=1e-6)
    assert focal_loss(logits, labels, gamma=2.0).item() < ce.item()
    p = torch.softmax(logits, -1)[torch.arange(10), labels]
    alpha = torch.where(labels == 1, 0.25, 0.75)
    expected = (-alpha * (1 - p) ** 2 * p.log()).mean()
    assert focal_loss(logits, labels, gamma=2.0, alpha=0.25).item() == pytest.approx(expected.item(), rel=1e-5)


def test_cross_entropy_label_smoothing_by_hand_and_zero_smoothing_is_plain_ce() -> None:
    logits, labels = torch.tensor([[2.0, 0.0]]), torch.tensor([0])
    assert cross_entropy_loss(logits, labels).item() == pytest.approx(F.cross_entropy(logits, labels).item())
    log_p = torch.log_softmax(logits, -1)[0]
    expected = -(0.95 * log_p[0] + 0.05 * log_p[1])  # smoothing 0.1 over K = 2 classes
    assert cross_entropy_loss(logits, labels, label_smoothing=0.1).item() == pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.parametrize("name", ["focal", "cross_entropy"])
def test_classification_losses_ignore_dead_band_labels(name: str) -> None:
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(6, 2, generator=gen)
    labels = torch.tensor([0, 1, -1, 1, -1, 0])
    keep = labels != -1
    loss = build_loss(name)
    full = loss({"logits": logits}, {"label": labels})
    kept = loss({"logits": logits[keep]}, {"label": labels[keep]})
    assert full.item() == pytest.approx(kept.item(), rel=1e-6)
    assert loss({"logits": logits}, {"label": torch.full((6,), -1)}).item() == 0.0


def test_build_loss_rejects_unknown_names() -> None:
    with pytest.raises(ValueError, match="unknown loss"):
        build_loss("nope")


def test_matthews_correlation_by_hand() -> None:
    pred, target = torch.tensor([1, 1, 0, 0, 1]), torch.tensor([1, 0, 0, 0, 1])
    tp, tn, fp, fn = 2, 2, 1, 0
    expected = (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    assert mcc(target.numpy(), pred.numpy()) == pytest.approx(expected)


# ---------------------------------------------------------------- schedule


def test_warmup_cosine_values_at_key_steps() -> None:
    total, fraction = 100, 0.1
    assert warmup_cosine_factor(0, total, fraction) == pytest.approx(0.1)
    assert warmup_cosine_factor(4, total, fraction) == pytest.approx(0.5)
    assert warmup_cosine_factor(10, total, fraction) == pytest.approx(1.0)
    assert warmup_cosine_factor(55, total, fraction) == pytest.approx(0.5)
    assert warmup_cosine_factor(100, total, fraction) == pytest.approx(0.0, abs=1e-12)
    assert warmup_cosine_factor(100, total, fraction, min_ratio=0.1) == pytest.approx(0.1)


def test_optimizer_groups_skip_decay_on_norms_and_biases_and_give_extra_groups_their_lr() -> None:
    model = TinyForecaster()
    groups = param_groups(model, lr=1e-3, weight_decay=0.1, extra_groups=[{"prefix": "norm", "lr": 1e-5}])
    by_param = {id(p): g for g in groups for p in g["params"]}
    assert by_param[id(model.linear.weight)]["weight_decay"] == 0.1
    assert by_param[id(model.linear.bias)]["weight_decay"] == 0.0
    assert by_param[id(model.norm.weight)]["weight_decay"] == 0.0
    assert by_param[id(model.norm.weight)]["lr"] == 1e-5
    assert by_param[id(model.linear.weight)]["lr"] == 1e-3
    config = configure_optimizer(model, lr=1.0, weight_decay=0.0, warmup_fraction=0.5, total_steps=4)
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    seen = []
    for _ in range(4):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert seen == pytest.approx([0.5, 1.0, 1.0, 0.5])


# ---------------------------------------------------------------- tasks and trainer


def test_precision_is_32_without_cuda() -> None:
    expected = "bf16-mixed" if torch.cuda.is_available() else "32-true"
    assert resolve_precision("auto") == expected
    assert resolve_precision("bf16-mixed") == expected


def test_training_reduces_the_loss_and_writes_config_and_best_k_checkpoints(tmp_path: Path) -> None:
    train, val = loaders()
    task = forecast_task()
    batch = next(iter(val))
    before = task.loss_fn(task(batch), batch).item()
    cfg = experiment_cfg(max_epochs=4)
    trainer = fit(task, (train, val), tmp_path, cfg)
    task.eval()
    with torch.no_grad():
        after = task.loss_fn(task(batch), batch).item()
    assert after < 0.5 * before
    metrics = trainer.callback_metrics
    assert {"val_loss", "val_mae", "val_directional_accuracy", "val_sharpe", "train_loss"} <= set(metrics)
    assert metrics["val_sharpe"].item() > 0
    ckpts = tmp_path / CHECKPOINT_DIR
    assert (ckpts / LAST_CHECKPOINT).is_file()
    assert len(list(ckpts.glob("best-*.ckpt"))) == 2
    assert list((tmp_path / "csv").rglob("metrics.csv"))
    assert list((tmp_path / "tensorboard").rglob("events.out.tfevents.*"))
    assert load_config(tmp_path / CONFIG_FILE) == cfg


def test_checkpoint_reloads_to_identical_predictions(tmp_path: Path) -> None:
    train, val = loaders()
    task = forecast_task()
    trainer = fit(task, (train, val), tmp_path, experiment_cfg(max_epochs=1))
    batch = next(iter(val))
    task.eval()
    best = trainer.checkpoint_callback.best_model_path
    trainer.save_checkpoint(tmp_path / "final.ckpt")
    reloaded = ForecastTask.load_from_checkpoint(tmp_path / "final.ckpt", model=TinyForecaster(), weights_only=True)
    reloaded.eval()
    with torch.no_grad():
        assert torch.equal(task(batch)["point"], reloaded(batch)["point"])
    assert reloaded.hparams.lr == task.hparams.lr
    assert Path(best).is_file()
    predictions = L.Trainer(logger=False, enable_progress_bar=False).predict(reloaded, val)
    assert predictions[0]["point"].shape == (16, H, T)
    assert torch.equal(predictions[0]["origin_us"], torch.arange(16))


class CrashAfter(Callback):
    """Raise after `steps` optimiser steps, simulating a crash mid-epoch."""

    def __init__(self, steps: int) -> None:
        self.steps = steps

    def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        if trainer.global_step >= self.steps:
            raise RuntimeError("simulated crash")


class RecordStart(Callback):
    def __init__(self) -> None:
        self.start_step = -1

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.start_step = trainer.global_step


def test_a_run_killed_mid_epoch_resumes_from_the_last_checkpoint(tmp_path: Path) -> None:
    train, val = loaders()  # 8 steps an epoch
    cfg = experiment_cfg(max_epochs=2, checkpoint={"every_n_train_steps": 2})
    with pytest.raises(RuntimeError, match="simulated crash"):
        fit(forecast_task(), (train, val), tmp_path, cfg, callbacks=[CrashAfter(5)])
    last = tmp_path / CHECKPOINT_DIR / LAST_CHECKPOINT
    saved_step = torch.load(last, weights_only=True, map_location="cpu")["global_step"]
    assert saved_step == 4
    start = RecordStart()
    trainer = fit(forecast_task(), (train, val), tmp_path, load_config(tmp_path / CONFIG_FILE), callbacks=[start])
    assert start.start_step == saved_step
    assert trainer.global_step == 16
    assert trainer.current_epoch == 2


def test_early_stopping_on_a_monitored_metric_stops_before_max_epochs(tmp_path: Path) -> None:
    train, val = loaders()
    cfg = experiment_cfg(
        max_epochs=20,
        checkpoint={"monitor": "val_sharpe", "mode": "max"},
        early_stopping={"enabled": True, "monitor": "val_sharpe", "mode": "max", "patience": 1, "min_delta": 1e9},
    )
    trainer = fit(forecast_task(), (train, val), tmp_path, cfg)
    stopper = next(cb for cb in trainer.callbacks if isinstance(cb, EarlyStopping))
    assert stopper.stopped_epoch > 0
    assert trainer.current_epoch < 20
    assert any("val_sharpe" in path.name for path in (tmp_path / CHECKPOINT_DIR).glob("best-*.ckpt"))


def test_quantile_forecast_task_takes_levels_from_the_model(tmp_path: Path) -> None:
    train, val = loaders()
    torch.manual_seed(0)
    task = ForecastTask(TinyForecaster(levels=(0.1, 0.5, 0.9)), loss="quantile", lr=3e-2)
    batch = next(iter(val))
    before = task.loss_fn(task(batch), batch).item()
    trainer = fit(task, (train, val), tmp_path, experiment_cfg(max_epochs=3))
    with torch.no_grad():
        assert task.loss_fn(task.eval()(batch), batch).item() < before
    assert "val_mae" in trainer.callback_metrics


def test_movement_task_learns_and_logs_accuracy_and_mcc(tmp_path: Path) -> None:
    train, val = loaders()
    torch.manual_seed(0)
    task = MovementTask(TinyClassifier(), loss="focal", loss_kwargs={"gamma": 1.0}, lr=5e-2)
    trainer = fit(task, (train, val), tmp_path, experiment_cfg(max_epochs=4))
    metrics = trainer.callback_metrics
    assert metrics["val_accuracy"].item() > 0.6
    assert metrics["val_mcc"].item() > 0.2


def test_swa_runs_when_enabled(tmp_path: Path) -> None:
    train, val = loaders()
    cfg = experiment_cfg(max_epochs=2, swa={"enabled": True, "swa_lrs": 1e-3, "swa_epoch_start": 1})
    trainer = fit(forecast_task(), (train, val), tmp_path, cfg)
    assert any(type(cb).__name__ == "StochasticWeightAveraging" for cb in trainer.callbacks)
    assert trainer.current_epoch == 2


# ---------------------------------------------------------------- configs


def test_experiment_composes_from_parts_and_takes_dotlist_overrides() -> None:
    cfg = load_config("dlinear_synthetic", ["model.kernel=5", "trainer.max_epochs=1"], config_dir=REPO_CONFIGS)
    assert set(cfg) >= {"data", "model", "trainer", "evaluation", "task", "optim"}
    assert "defaults" not in cfg
    assert cfg.model.kernel == 5
    assert cfg.trainer.max_epochs == 1
    assert cfg.model.context_length == cfg.data.lookback  # interpolation resolved
    swapped = load_config("dlinear_synthetic", ["model=patchtst", "model.d_model=64"], config_dir=REPO_CONFIGS)
    assert swapped.model.name == "patchtst"
    assert swapped.model.d_model == 64
    with pytest.raises(ConfigError):
        load_config("dlinear_synthetic", ["model.typo=1"], config_dir=REPO_CONFIGS)
    added = load_config("dlinear_synthetic", ["+model.extra=1"], config_dir=REPO_CONFIGS)
    assert added.model.extra == 1
    task = build_task(cfg.task, cfg.optim, TinyForecaster())
    assert isinstance(task, ForecastTask)
    assert task.hparams.periods_per_year == cfg.evaluation.periods_per_year
    assert task.hparams.lr == cfg.optim.lr


def test_saved_config_reloads_as_is_and_reproduces_the_run_config(tmp_path: Path) -> None:
    cfg = load_config("dlinear_synthetic", ["optim.lr=0.01"], config_dir=REPO_CONFIGS)
    path = save_config(cfg, tmp_path / "run" / CONFIG_FILE)
    reloaded = load_config(path)
    assert reloaded == cfg
    assert reloaded.optim.lr == 0.01
    assert load_config(path, ["optim.lr=0.5"]).optim.lr == 0.5
    assert not list(path.parent.glob(".*.tmp"))


def test_output_is_quiet_and_plain_when_stderr_is_not_a_terminal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    train, val = loaders()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit(forecast_task(), (train, val), tmp_path, experiment_cfg(max_epochs=2, enable_progress_bar=True))
    printed = capsys.readouterr()
    logged = caplog.text + printed.out + printed.err
    assert "litlogger" not in logged and "GPU available" not in logged
    assert not [w for w in caught if "LeafSpec" in str(w.message)]
    epochs = [line for line in printed.err.splitlines() if line.startswith("epoch ")]
    assert [line.split(":")[0] for line in epochs] == ["epoch 1", "epoch 2"] and "val_loss" in epochs[-1]


def test_an_unknown_logger_is_an_error(tmp_path: Path) -> None:
    train, val = loaders()
    with pytest.raises(FinfusionError, match="unknown logger"):
        fit(forecast_task(), (train, val), tmp_path, experiment_cfg(max_epochs=1, loggers=["csv", "wandb"]))


def test_exactly_one_place_in_src_constructs_a_lightning_trainer() -> None:
    source = Path(__file__).resolve().parents[1] / "src" / "finfusion"
    places = [
        f"{path.relative_to(source)}:{number}"
        for path in sorted(source.rglob("*.py"))
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if re.search(r"\bTrainer\(", line) and not line.lstrip().startswith(("#", '"', "`"))
    ]
    assert places == ["training/trainer.py:" + places[0].split(":")[1]] and len(places) == 1, places


def test_a_yaml_python_tag_is_a_config_error_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    path = tmp_path / "bad.yaml"
    path.write_text(f'name: x\ntask: !!python/object/apply:os.system ["touch {marker}"]\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad\.yaml: not a plain YAML config"):
        load_config(path)
    assert not marker.exists()


def test_limited_validation_batches_spread_over_the_whole_span() -> None:
    """`limit_val_batches` N picks N batches of windows evenly over the validation span, not its first N batches."""
    windows = TensorDataset(torch.arange(100))
    spread = spread_over_span(DataLoader(windows, batch_size=10), 2)
    seen = torch.cat([batch for (batch,) in spread])
    assert len(spread) == 2 and len(seen) == 20
    assert seen[0] == 0 and seen[-1] == 99 and torch.all(seen[1:] > seen[:-1])  # the whole span, in order
    assert seen.diff().max() <= 6  # evenly: no gap wider than the spacing (99 / 19) rounded up
    whole = DataLoader(windows, batch_size=10)
    assert spread_over_span(whole, None) is whole and spread_over_span(whole, 20) is whole
