"""What a trained portfolio model leaves in its run folder, and loading it back (tensors and JSON only, never pickle).

RUN/config.yaml        the resolved experiment config, completed with what the data determined: `data.symbols`
                       (the universe, in the model's asset order) and `model.text_dim`
RUN/model.safetensors  the model's weights (those of the best validation checkpoint)
RUN/normalizer.json    the market-input normaliser fitted on the training span (reused by fine-tuning and
                       prediction, never refitted)
RUN/metrics.json       validation metrics of these weights (val_loss, val_sharpe, ...)
RUN/checkpoints/       Lightning checkpoints of the training run
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from safetensors.torch import load_file, save_file
from torch import Tensor

from finfusion.config import save_config
from finfusion.data.atomic import atomic_path, write_json_atomic
from finfusion.errors import FinfusionError
from finfusion.features.normalize import FittedNormalizer
from finfusion.models.portfolio.cga import CGAPortfolio
from finfusion.training.trainer import CONFIG_FILE

MODEL_FILE = "model.safetensors"
NORMALIZER_FILE = "normalizer.json"
METRICS_FILE = "metrics.json"
NORMALIZER_KEY = "normalizer"


def build_model(cfg: DictConfig) -> CGAPortfolio:
    """The `model` part of a completed config (its `name` must be cga) for `data.symbols` and `data.inputs`."""
    options: dict[str, Any] = OmegaConf.to_container(cfg.model, resolve=True)  # type: ignore[assignment]
    name = options.pop("name", "cga")
    if name != "cga":
        raise FinfusionError(f"portfolio runs build the cga model, not '{name}'")
    if cfg.data.get("symbols") is None:
        raise FinfusionError("the config's data.symbols is not filled in: build the data first")
    return CGAPortfolio(n_features=len(cfg.data.inputs), n_assets=len(cfg.data.symbols), **options)


@dataclass
class PortfolioModel:
    """A trained model with its completed config, normaliser and validation metrics."""

    cfg: DictConfig
    model: CGAPortfolio
    normalizer: FittedNormalizer
    metrics: dict[str, float]

    @property
    def symbols(self) -> list[str]:
        return [str(s) for s in self.cfg.data.symbols]


def save_run(run_dir: Path, trained: PortfolioModel) -> Path:
    """Write config, weights, normaliser and metrics into `run_dir` (each file atomically); returns `run_dir`."""
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(trained.cfg, run_dir / CONFIG_FILE)
    with atomic_path(run_dir / MODEL_FILE) as tmp:
        state = {key: value.detach().contiguous() for key, value in trained.model.state_dict().items()}
        save_file(state, str(tmp))
    write_json_atomic(run_dir / NORMALIZER_FILE, trained.normalizer.to_dict())
    write_json_atomic(run_dir / METRICS_FILE, trained.metrics)
    return run_dir


def load_run(run_dir: str | Path) -> PortfolioModel:
    """The model saved in `run_dir` by `save_run`, in eval mode."""
    run = Path(run_dir)
    missing = [name for name in (CONFIG_FILE, MODEL_FILE, NORMALIZER_FILE) if not (run / name).is_file()]
    if missing:
        raise FinfusionError(f"{run} is not a trained portfolio run: missing {', '.join(missing)}")
    cfg = OmegaConf.load(run / CONFIG_FILE)
    if not isinstance(cfg, DictConfig):
        raise FinfusionError(f"{run / CONFIG_FILE}: a config must be a mapping")
    model = build_model(cfg)
    model.load_state_dict(load_file(str(run / MODEL_FILE)))
    normalizer = FittedNormalizer.from_dict(json.loads((run / NORMALIZER_FILE).read_text(encoding="utf-8")))
    metrics_path = run / METRICS_FILE
    metrics: Mapping[str, float] = (
        json.loads(metrics_path.read_text(encoding="utf-8")) if metrics_path.is_file() else {}
    )
    return PortfolioModel(cfg, model.eval(), normalizer, dict(metrics))


def to_parts(trained: PortfolioModel) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """(state dict, plain config dict with the normaliser under `normalizer`) of a trained model."""
    config: dict[str, Any] = OmegaConf.to_container(trained.cfg, resolve=True)  # type: ignore[assignment]
    config[NORMALIZER_KEY] = trained.normalizer.to_dict()
    state = {key: value.detach().clone() for key, value in trained.model.state_dict().items()}
    return state, config


def from_parts(
    state_dict: Mapping[str, Tensor], config: Mapping[str, Any], metrics: Mapping[str, float] | None = None
) -> PortfolioModel:
    """The model of `to_parts`' output, in eval mode."""
    options = dict(config)
    if NORMALIZER_KEY not in options:
        raise FinfusionError(f"the model config has no `{NORMALIZER_KEY}`: it was not made by to_parts")
    normalizer = FittedNormalizer.from_dict(options.pop(NORMALIZER_KEY))
    cfg = OmegaConf.create(options)
    model = build_model(cfg)
    model.load_state_dict(dict(state_dict))
    return PortfolioModel(cfg, model.eval(), normalizer, dict(metrics or {}))
