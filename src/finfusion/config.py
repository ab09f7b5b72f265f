"""Experiment configs: YAML under `configs/`, composed from group parts and overridden from the command line.

An experiment file lists its parts and adds its own keys, which win over the parts:

    defaults:
      - data: synthetic        # configs/data/synthetic.yaml, placed under the key `data`
      - model: dlinear
      - trainer: cpu_fast
      - evaluation: default
    task: {name: forecast, loss: mse}

Overrides are Hydra-style strings: `model.d_model=64` sets an existing key, `+model.extra=1` adds a new one, and
`model=patchtst` swaps a part named in `defaults`. The composed config is resolved (no interpolations left), so a
run's saved `config.yaml` has no `defaults` and loads as-is: `load_config("RUN/config.yaml")` reproduces it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from finfusion.data.atomic import atomic_path

DEFAULTS_KEY = "defaults"
CONFIG_DIR_ENV = "FINFUSION_CONFIG_DIR"
EXPERIMENT_GROUP = "experiment"


class ConfigError(ValueError):
    """A config file or override that cannot be composed."""


def plain(cfg: Mapping[str, Any] | DictConfig | None) -> dict[str, Any]:
    """A plain dict of a config node, interpolations resolved (None: empty)."""
    if cfg is None:
        return {}
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)


def find_config_dir(start: Path | None = None) -> Path:
    """The `configs/` folder: $FINFUSION_CONFIG_DIR, else the nearest `configs/` at or above `start` (the cwd), else
    the one in the source checkout."""
    if os.environ.get(CONFIG_DIR_ENV):
        return Path(os.environ[CONFIG_DIR_ENV])
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "configs").is_dir():
            return folder / "configs"
    return Path(__file__).resolve().parents[2] / "configs"


def _resolve_file(path_or_name: str | Path, config_dir: Path) -> Path:
    path = Path(path_or_name)
    if path.suffix in {".yaml", ".yml"} and path.is_file():
        return path
    candidate = config_dir / EXPERIMENT_GROUP / f"{path_or_name}.yaml"
    if candidate.is_file():
        return candidate
    raise ConfigError(f"no config file {path_or_name!s} (nor {candidate})")


def _read_yaml(path: Path) -> DictConfig | ListConfig:
    """The YAML at `path` (safe loading: tags such as !!python/object are refused); ConfigError names the file and
    the problem."""
    try:
        return OmegaConf.load(path)
    except yaml.YAMLError as exc:
        problem = str(exc).splitlines()[0]
        raise ConfigError(f"{path}: not a plain YAML config ({problem})") from exc


def _parse_defaults(node: object, source: Path) -> dict[str, str]:
    """`defaults` [{group: name}, ...] as an ordered {group: name}."""
    if not isinstance(node, ListConfig):
        raise ConfigError(f"{source}: `defaults` must be a list of `group: name` entries")
    parts: dict[str, str] = {}
    for entry in node:
        if not isinstance(entry, DictConfig) or len(entry) != 1:
            raise ConfigError(f"{source}: each default must be one `group: name` entry, got {entry!r}")
        ((group, name),) = entry.items()
        parts[str(group)] = str(name)
    return parts


def _split_overrides(overrides: Sequence[str], parts: dict[str, str]) -> tuple[list[str], list[str]]:
    """Apply `group=name` overrides to `parts` in place; return the (set, add) dotlists that remain."""
    sets: list[str] = []
    adds: list[str] = []
    for override in overrides:
        key, sep, value = override.partition("=")
        if not sep:
            raise ConfigError(f"override {override!r} is not key=value")
        if key.startswith("+"):
            adds.append(f"{key[1:]}={value}")
        elif key in parts:
            parts[key] = value
        else:
            sets.append(override)
    return sets, adds


def load_config(
    path_or_name: str | Path, overrides: Sequence[str] = (), config_dir: str | Path | None = None
) -> DictConfig:
    """Compose the experiment at `path_or_name` (a YAML path, or a name in `configs/experiment/`), apply overrides,
    and resolve interpolations. A file without `defaults` (e.g. a run's saved config) loads as-is."""
    root = Path(config_dir) if config_dir is not None else None
    root = root or find_config_dir(Path(path_or_name).resolve().parent if Path(path_or_name).is_file() else None)
    source = _resolve_file(path_or_name, root)
    own = _read_yaml(source)
    if not isinstance(own, DictConfig):
        raise ConfigError(f"{source}: a config must be a mapping")
    parts = _parse_defaults(own.pop(DEFAULTS_KEY), source) if DEFAULTS_KEY in own else {}
    sets, adds = _split_overrides(overrides, parts)
    cfg = OmegaConf.create()
    for group, name in parts.items():
        part_file = root / group / f"{name}.yaml"
        if not part_file.is_file():
            raise ConfigError(f"{source}: no part {group}={name} ({part_file})")
        cfg = OmegaConf.merge(cfg, {group: _read_yaml(part_file)})
    cfg = OmegaConf.merge(cfg, own)
    OmegaConf.set_struct(cfg, True)
    try:
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(sets))
    except Exception as error:
        raise ConfigError(f"override of an unknown key (use +key=value to add one): {error}") from error
    with open_dict(cfg):
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(adds))
    OmegaConf.set_struct(cfg, False)
    OmegaConf.resolve(cfg)
    return cfg


def save_config(cfg: DictConfig, path: str | Path) -> Path:
    """Write `cfg`, resolved, to `path` atomically (temporary file, then rename)."""
    target = Path(path)
    with atomic_path(target) as tmp:
        tmp.write_text(OmegaConf.to_yaml(cfg, resolve=True), encoding="utf-8")
    return target
