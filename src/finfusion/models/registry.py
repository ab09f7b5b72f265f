"""Model registry: config names -> model classes, imported lazily so that listing models imports no backend.

Every model is one line of `_BUILTIN`, its name and "module:Class"; a model is one file plus that line.
"""

from __future__ import annotations

import importlib
from typing import Any

from finfusion.models.base import Capabilities

_BUILTIN: dict[str, str] = {
    "patchtst": "finfusion.models.patchtst:PatchTST",
    "dlinear": "finfusion.models.dlinear:DLinear",
    "random_walk": "finfusion.models.baselines:RandomWalk",
    "drift": "finfusion.models.baselines:Drift",
    "seasonal_naive": "finfusion.models.baselines:SeasonalNaive",
    "lightgbm": "finfusion.models.lightgbm_baseline:LightGBMForecaster",
    "majority_class": "finfusion.models.direction_baselines:MajorityClass",
    "previous_sign": "finfusion.models.direction_baselines:PreviousSign",
    "drift_sign": "finfusion.models.direction_baselines:DriftSign",
    "logistic_direction": "finfusion.models.direction_baselines:LogisticDirection",
    "hf_tst": "finfusion.models.hf_time_series:HFTimeSeriesTransformer",
    "multimodal_diffusion": "finfusion.models.multimodal.forecaster:MultimodalDiffusionForecaster",
    "cga": "finfusion.models.portfolio.cga:CGAPortfolio",
    "movement_price": "finfusion.models.movement.price:MovementPrice",
    "movement_text": "finfusion.models.movement.text:MovementText",
    "movement_fusion": "finfusion.models.movement.fusion:MovementFusion",
    "moirai": "finfusion.models.moirai.forecaster:Moirai",
    "dual_tower": "finfusion.models.relevance.module:DualTowerRelevance",
    "token_bert": "finfusion.models.token_bert:TokenBert",
    "token_bert_classifier": "finfusion.models.token_bert_classifier:TokenBertClassifier",
    "token_bert_tagger": "finfusion.models.token_bert_tagger:TokenBertTagger",
    "token_fusion": "finfusion.models.token_fusion:TokenFusion",
    "patchtst_classifier": "finfusion.models.patchtst_classifier:PatchTSTClassifier",
    "translob": "finfusion.models.orderbook.translob:TransLOB",
    "lob_lstm": "finfusion.models.orderbook.lstm:LobLSTM",
    "lob_logistic": "finfusion.models.orderbook.logistic:LobLogistic",
}


def model_names() -> list[str]:
    """All registered names, sorted."""
    return sorted(_BUILTIN)


def model_class(name: str) -> type[Capabilities]:
    """The class registered as `name`; raises KeyError listing the known names."""
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
