"""Model registry: config names -> model classes, imported lazily so that listing models imports no backend.

Built-in models are named below by "module:Class"; `@register(name)` adds any other class.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from finfusion.models.base import Capabilities

_BUILTIN: dict[str, str] = {
    "patchtst": "finfusion.models.patchtst:PatchTST",
    "dlinear": "finfusion.models.dlinear:DLinear",
    "random_walk": "finfusion.models.baselines:RandomWalk",
    "drift": "finfusion.models.baselines:Drift",
    "lightgbm": "finfusion.models.lightgbm_baseline:LightGBMForecaster",
    "hf_tst": "finfusion.models.hf_time_series:HFTimeSeriesTransformer",
    "multimodal_diffusion": "finfusion.models.multimodal.forecaster:MultimodalDiffusionForecaster",
    "cga": "finfusion.models.cga:CGAPortfolio",
}
_REGISTERED: dict[str, type[Capabilities]] = {}


def register(name: str) -> Callable[[type[Capabilities]], type[Capabilities]]:
    """Class decorator: make the class buildable as `name`. Raises ValueError if the name is taken."""

    def decorate(cls: type[Capabilities]) -> type[Capabilities]:
        if name in _BUILTIN or name in _REGISTERED:
            raise ValueError(f"model name {name!r} is already registered")
        _REGISTERED[name] = cls
        return cls

    return decorate


def model_names() -> list[str]:
    """All registered names, sorted."""
    return sorted({*_BUILTIN, *_REGISTERED})


def model_class(name: str) -> type[Capabilities]:
    """The class registered as `name`; raises KeyError listing the known names."""
    if name in _REGISTERED:
        return _REGISTERED[name]
    if name not in _BUILTIN:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(model_names())}")
    module, cls = _BUILTIN[name].split(":")
    return getattr(importlib.import_module(module), cls)


def build_model(name: str, **kwargs: Any) -> Capabilities:
    """Instantiate the model registered as `name` with `kwargs`."""
    return model_class(name)(**kwargs)


def capabilities(name: str) -> dict[str, Any]:
    """{"inputs": frozenset, "outputs": frozenset, "trainable": bool} declared by the class registered as `name`."""
    cls = model_class(name)
    return {"inputs": cls.inputs, "outputs": cls.outputs, "trainable": cls.trainable}
