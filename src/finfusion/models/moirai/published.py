"""The published Moirai 1.x checkpoints, read from a local folder (`config.json` + `model.safetensors`, as the hub
holds them), or a finfusion run of a Moirai model (a pre-training run: `config.yaml` + `model.safetensors`). Nothing
here downloads: `finfusion models download NAME` fetches a folder when asked.

The config is read as plain JSON. Its distribution is described by uni2ts class paths (`_target_`); they are
matched by name against the components finfusion implements and never imported or instantiated, so a crafted
config cannot run code. Weights are read with safetensors and loaded strictly: a missing, extra or misshapen tensor
is an error naming it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finfusion.errors import FinfusionError
from finfusion.models.moirai.distribution import FIXED_SCALE

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
#: A finfusion run folder of a Moirai model: its config and the prefix of the module's weights in its state dict.
RUN_CONFIG = "config.yaml"
RUN_PREFIX = "module."
#: uni2ts distribution class names -> finfusion mixture components.
COMPONENT_CLASSES = {
    "StudentTOutput": "student_t",
    "NormalFixedScaleOutput": "normal_fixed_scale",
    "NegativeBinomialOutput": "negative_binomial",
    "LogNormalOutput": "log_normal",
    "NormalOutput": "normal",
}
#: Where published checkpoints are fetched from (a mirror: `--endpoint` or HF_ENDPOINT).
HUB = "https://huggingface.co"
#: Published checkpoints `finfusion models download` knows: name -> hub repository.
PUBLISHED = {
    "moirai-1.0-R-small": "Salesforce/moirai-1.0-R-small",
    "moirai-1.0-R-base": "Salesforce/moirai-1.0-R-base",
    "moirai-1.0-R-large": "Salesforce/moirai-1.0-R-large",
    "moirai-1.1-R-small": "Salesforce/moirai-1.1-R-small",
    "moirai-1.1-R-base": "Salesforce/moirai-1.1-R-base",
    "moirai-1.1-R-large": "Salesforce/moirai-1.1-R-large",
}


@dataclass(frozen=True)
class PublishedConfig:
    """`MoiraiModule` arguments read from a published config.json."""

    d_model: int
    num_layers: int
    patch_sizes: tuple[int, ...]
    max_seq_len: int
    attn_dropout_p: float
    dropout_p: float
    scaling: bool
    components: tuple[str, ...]
    fixed_scale: float

    def module_arguments(self) -> dict[str, Any]:
        return {
            "d_model": self.d_model,
            "num_layers": self.num_layers,
            "patch_sizes": self.patch_sizes,
            "max_seq_len": self.max_seq_len,
            "attn_dropout_p": self.attn_dropout_p,
            "dropout_p": self.dropout_p,
            "scaling": self.scaling,
            "components": self.components,
            "fixed_scale": self.fixed_scale,
        }


def _field(raw: dict[str, Any], key: str, kind: type, path: Path) -> Any:
    if key not in raw:
        raise FinfusionError(f"{path}: field '{key}' is missing")
    value = raw[key]
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise FinfusionError(f"{path}: field '{key}' is {value!r}, expected an integer")
    if kind is float and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise FinfusionError(f"{path}: field '{key}' is {value!r}, expected a number")
    if kind is bool and not isinstance(value, bool):
        raise FinfusionError(f"{path}: field '{key}' is {value!r}, expected true or false")
    return value


def _components(raw: Any, path: Path) -> tuple[tuple[str, ...], float]:
    """The mixture's component names and the fixed normal's scale, from `distr_output` (class paths matched by
    their last name only)."""
    if not isinstance(raw, dict) or not str(raw.get("_target_", "")).endswith(".MixtureOutput"):
        raise FinfusionError(f"{path}: field 'distr_output' is not a MixtureOutput ({raw!r})")
    parts = raw.get("components")
    if not isinstance(parts, list) or not parts:
        raise FinfusionError(f"{path}: field 'distr_output.components' is not a list of components")
    names, fixed_scale = [], FIXED_SCALE
    for index, part in enumerate(parts):
        target = str(part.get("_target_", "")) if isinstance(part, dict) else ""
        name = COMPONENT_CLASSES.get(target.rsplit(".", 1)[-1])
        if name is None:
            raise FinfusionError(
                f"{path}: field 'distr_output.components[{index}]' is {target or part!r}; "
                f"known: {', '.join(COMPONENT_CLASSES)}"
            )
        if name == "normal_fixed_scale":
            fixed_scale = float(_field(part, "scale", float, path)) if "scale" in part else FIXED_SCALE
        names.append(name)
    return tuple(names), fixed_scale


def _run_config(folder: Path) -> PublishedConfig:
    """The architecture a finfusion run of a Moirai model stored (`model.architecture` of its config.yaml)."""
    from finfusion.config import load_config

    path = folder / RUN_CONFIG
    model = load_config(path).get("model") or {}
    architecture = model.get("architecture")
    if model.get("name") != "moirai" or architecture is None:
        raise FinfusionError(f"{path}: not a run of a Moirai model (no model.architecture)")
    try:
        return PublishedConfig(
            d_model=int(architecture["d_model"]),
            num_layers=int(architecture["num_layers"]),
            patch_sizes=tuple(int(p) for p in architecture["patch_sizes"]),
            max_seq_len=int(architecture["max_seq_len"]),
            attn_dropout_p=float(model.get("attn_dropout", 0.0)),
            dropout_p=float(model.get("dropout", 0.0)),
            scaling=bool(architecture["scaling"]),
            components=tuple(str(c) for c in architecture["components"]),
            fixed_scale=float(architecture["fixed_scale"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise FinfusionError(f"{path}: field 'model.architecture' is incomplete or malformed ({exc})") from exc


def read_config(folder: Path) -> PublishedConfig:
    """The checkpoint folder's config.json (or, for a finfusion run folder, its config.yaml) as `PublishedConfig`;
    one FinfusionError line naming the file and field for anything missing or malformed."""
    path = folder / CONFIG_FILE
    if not path.is_file() and (folder / RUN_CONFIG).is_file():
        return _run_config(folder)
    if not path.is_file():
        raise FinfusionError(
            f"{folder}: no {CONFIG_FILE} (a Moirai checkpoint folder holds config.json and "
            f"{WEIGHTS_FILE}; `finfusion models download moirai-1.1-R-small` fetches one)"
        )
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FinfusionError(f"{path}: not JSON ({exc})") from exc
    if not isinstance(raw, dict):
        raise FinfusionError(f"{path}: expected a JSON object")
    sizes = raw.get("patch_sizes")
    if not isinstance(sizes, list) or not sizes or not all(isinstance(p, int) and p > 0 for p in sizes):
        raise FinfusionError(f"{path}: field 'patch_sizes' is {sizes!r}, expected a list of positive integers")
    components, fixed_scale = _components(raw.get("distr_output"), path)
    return PublishedConfig(
        d_model=_field(raw, "d_model", int, path),
        num_layers=_field(raw, "num_layers", int, path),
        patch_sizes=tuple(sizes),
        max_seq_len=_field(raw, "max_seq_len", int, path),
        attn_dropout_p=float(_field(raw, "attn_dropout_p", float, path)),
        dropout_p=float(_field(raw, "dropout_p", float, path)),
        scaling=_field(raw, "scaling", bool, path) if "scaling" in raw else True,
        components=components,
        fixed_scale=fixed_scale,
    )


def load_published(folder: str | Path) -> Any:
    """A `MoiraiModule` with the architecture and weights of the checkpoint in `folder`."""
    from finfusion.models.moirai.module import MoiraiModule

    folder = Path(folder)
    module = MoiraiModule(**read_config(folder).module_arguments())
    load_weights(folder, module)
    return module


def load_weights(folder: Path, module: Any) -> None:
    """Load the weights of the checkpoint in `folder` into `module` (a `MoiraiModule` of its architecture), strictly:
    a missing, extra or misshapen tensor is one FinfusionError naming it."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = folder / WEIGHTS_FILE
    if not path.is_file():
        raise FinfusionError(f"{folder}: no {WEIGHTS_FILE}")
    try:
        state = load_file(path)
    except (SafetensorError, OSError) as exc:
        raise FinfusionError(f"{path}: not a safetensors file ({exc})") from exc
    if not (folder / CONFIG_FILE).is_file():  # a finfusion run: the forecaster's weights, the module under "module."
        state = {key.removeprefix(RUN_PREFIX): value for key, value in state.items() if key.startswith(RUN_PREFIX)}
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if missing or extra:
        what = f"missing tensor '{missing[0]}'" if missing else f"unexpected tensor '{extra[0]}'"
        raise FinfusionError(f"{path}: {what} for the architecture of {folder / CONFIG_FILE}")
    for name, tensor in state.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise FinfusionError(
                f"{path}: tensor '{name}' has shape {tuple(tensor.shape)}, expected {tuple(expected[name].shape)}"
            )
    module.load_state_dict(state, strict=True)


def download_published(name: str, folder: Path, endpoint: str = HUB) -> Path:
    """Fetch the published checkpoint `name` (PUBLISHED) into `folder` (config.json + model.safetensors from
    `endpoint`/<repository>/resolve/main/), then load it strictly; a download that does not load is removed.
    Runs only when a user asks (`finfusion models download`)."""
    from finfusion.data.download import fetch

    if name not in PUBLISHED:
        raise FinfusionError(f"unknown checkpoint '{name}'; known: {', '.join(PUBLISHED)}")
    base = f"{endpoint.rstrip('/')}/{PUBLISHED[name]}/resolve/main"
    staging = folder.with_name(f".{folder.name}.partial")
    staging.mkdir(parents=True, exist_ok=True)
    try:
        for file in (CONFIG_FILE, WEIGHTS_FILE):
            fetch(f"{base}/{file}", staging / file)
        load_published(staging)
    except FinfusionError:
        import shutil

        shutil.rmtree(staging, ignore_errors=True)
        raise
    if folder.exists():
        raise FinfusionError(f"{folder} already exists: remove it or download to another folder (--to)")
    staging.rename(folder)
    return folder
