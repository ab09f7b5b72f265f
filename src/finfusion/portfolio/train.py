"""Train a portfolio model from the lake, fine-tune a trained one, and score a model on validation windows.

An experiment config (configs/experiment/cga_*.yaml) has the parts `data` (see `portfolio.inputs`), `model`
(`models.cga.CGAPortfolio` arguments), `task` (`training.portfolio_task.PortfolioTask` arguments: k, loss weights,
hold, periods_per_year), `optim` (lr, weight_decay, warmup_fraction), `trainer` (`training.trainer`) and `evaluation`
(`portfolio.evaluate`). A run folder holds what `portfolio.artifacts` describes.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
from omegaconf import DictConfig, OmegaConf, open_dict

from finfusion.data.lake import Lake
from finfusion.errors import FinfusionError
from finfusion.features.normalize import FittedNormalizer
from finfusion.models.portfolio.cga import CGAPortfolio
from finfusion.portfolio.artifacts import PortfolioModel, build_model, load_run, save_run
from finfusion.portfolio.inputs import Splits, build_data, load_inputs, loader, split_windows, window_config
from finfusion.samples.portfolio import PortfolioDataset
from finfusion.samples.windows import Instant
from finfusion.training.portfolio_task import PortfolioTask
from finfusion.training.trainer import fit_task, trainer_options, validate_task

#: Validation metrics a run reports.
METRICS = ("val_loss", "val_sharpe")


@dataclass
class PortfolioRun:
    """A trained (or fine-tuned) model, where it was saved, and its windows."""

    run_dir: Path
    trained: PortfolioModel
    splits: Splits

    @property
    def val_loss(self) -> float:
        return self.trained.metrics["val_loss"]


def task_options(cfg: DictConfig) -> dict[str, Any]:
    """`PortfolioTask` keyword arguments from the `task` and `optim` parts."""
    options = {**OmegaConf.to_container(cfg.get("task", {})), **OmegaConf.to_container(cfg.get("optim", {}))}
    options.pop("name", None)
    return options


def validation_metrics(model: CGAPortfolio, dataset: PortfolioDataset, cfg: DictConfig) -> dict[str, float]:
    """`val_loss` and `val_sharpe` of `model` on `dataset` (batches of `data.batch_size` consecutive decisions)."""
    task = PortfolioTask(model, **task_options(cfg))
    scores = validate_task(task, loader(dataset, int(cfg.data.batch_size)), cfg.get("trainer", {}))
    return {name: scores[name] for name in METRICS}


def _fit(
    cfg: DictConfig,
    model: CGAPortfolio,
    normalizer: FittedNormalizer,
    splits: Splits,
    run_dir: Path,
    resume: str | Path | None,
) -> PortfolioRun:
    """Train `model` on the training windows, keep the best validation checkpoint's weights, save the run."""
    task = PortfolioTask(model, **task_options(cfg))
    batch_size, seed = int(cfg.data.batch_size), int(trainer_options(cfg.get("trainer", {}))["seed"])
    loaders = (loader(splits.train, batch_size, shuffle=True, seed=seed), loader(splits.val, batch_size))
    fit_task(task, loaders, run_dir, cfg, resume=resume)
    trained = PortfolioModel(cfg, model, normalizer, validation_metrics(model, splits.val, cfg))
    save_run(run_dir, trained)
    return PortfolioRun(run_dir, trained, splits)


def train_portfolio(
    cfg: DictConfig, lake: Lake, run_dir: str | Path, *, resume: str | Path | None = "auto"
) -> PortfolioRun:
    """Train the experiment `cfg` on the lake's data into `run_dir` (resuming from its last checkpoint by default)."""
    cfg = copy.deepcopy(cfg)
    inputs = load_inputs(lake, cfg.data, news=bool(cfg.model.use_news))
    data = build_data(inputs, window_config(cfg.data))
    with open_dict(cfg):
        cfg.data.symbols = list(data.symbols)
        if data.news is not None:
            cfg.model.text_dim = data.news.dim
    splits = split_windows(PortfolioDataset(data, window_config(cfg.data)), cfg.data)
    L.seed_everything(int(trainer_options(cfg.get("trainer", {}))["seed"]), verbose=False)
    return _fit(cfg, build_model(cfg), data.normalizer, splits, Path(run_dir), resume)


def finetune_portfolio(cfg: DictConfig, lake: Lake, run_dir: str | Path, base_run: str | Path) -> PortfolioRun:
    """Continue training the model saved in `base_run` on the spans of `cfg.data` into `run_dir`.

    The model (architecture and universe) and its normaliser come from `base_run`; `cfg` gives the data spans, task,
    optimiser and trainer. The returned run's metrics also hold `base_val_loss` and `base_val_sharpe`: the base model
    on the same validation windows, so a caller promotes the new weights only if `val_loss` < `base_val_loss`.
    """
    base = load_run(base_run)
    cfg = copy.deepcopy(cfg)
    with open_dict(cfg):
        cfg.model = base.cfg.model
        cfg.data.symbols = base.symbols
        cfg.data.inputs = base.cfg.data.inputs
    config = window_config(cfg.data)
    inputs = load_inputs(lake, cfg.data, news=bool(cfg.model.use_news))
    data = build_data(inputs, config, normalizer=base.normalizer, symbols=base.symbols)
    splits = split_windows(PortfolioDataset(data, config), cfg.data)
    before = validation_metrics(base.model, splits.val, cfg)
    run = _fit(cfg, base.model.train(), base.normalizer, splits, Path(run_dir), resume="never")
    run.trained.metrics.update({f"base_{name}": value for name, value in before.items()})
    save_run(run.run_dir, run.trained)
    return run


def validate_portfolio(lake: Lake, trained: PortfolioModel, start: Instant, end: Instant) -> dict[str, float]:
    """`val_loss` and `val_sharpe` of a trained model on the windows with origin >= `start` that end (future
    included) before `end`, from the data its config names, with its own universe and normaliser."""
    config = window_config(trained.cfg.data)
    inputs = load_inputs(lake, trained.cfg.data, news=bool(trained.cfg.model.use_news))
    data = build_data(inputs, config, normalizer=trained.normalizer, symbols=trained.symbols)
    windows = PortfolioDataset(data, config).split(start, end)
    if len(windows) == 0:
        raise FinfusionError(f"no validation window between {start} and {end}")
    return validation_metrics(trained.model, windows, trained.cfg)
