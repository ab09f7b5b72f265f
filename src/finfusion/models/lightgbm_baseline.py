"""Gradient-boosting baseline: LightGBM on flattened past windows (+ optional feature-table columns).

Shapes: N samples, B batch, L lookback, K lags used (the last `lags` bars), C input channels, T target channels,
H horizon, F extra feature columns.

One regressor per target channel of `future` (T of them), with the horizon step as a feature: each training
window contributes H rows [window (K * C values, unobserved bars as NaN), extra features (F), step h] -> future
value at step h. LightGBM handles the NaNs natively. Deterministic for a fixed `seed` and `num_threads`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import lightgbm as lgb
import numpy as np
import torch
from torch import Tensor

from finfusion.data.atomic import atomic_path
from finfusion.models.base import Capabilities
from finfusion.samples.contract import FUTURE, FUTURE_MASK, PAST, PAST_MASK

Batch = Mapping[str, Any]


def _booster(model: lgb.LGBMRegressor | lgb.Booster) -> lgb.Booster:
    return model if isinstance(model, lgb.Booster) else model.booster_


def _numpy(value: Any) -> np.ndarray:
    return value.detach().cpu().numpy() if isinstance(value, Tensor) else np.asarray(value)


def _collect(data: Batch | Iterable[Batch], keys: Sequence[str]) -> dict[str, np.ndarray]:
    """A batch dict, or an iterable of batch dicts / single samples (a DataLoader or Dataset) -> stacked arrays."""
    if isinstance(data, Mapping):
        return {k: _numpy(data[k]) for k in keys if k in data}
    parts: dict[str, list[np.ndarray]] = {}
    for item in data:
        single = np.ndim(_numpy(item[PAST])) == 2
        for key in keys:
            if key in item:
                array = _numpy(item[key])
                parts.setdefault(key, []).append(array[None] if single else array)
    return {k: np.concatenate(v) for k, v in parts.items()}


class LightGBMForecaster(Capabilities):
    """LightGBM direct forecaster: `fit(data)` on windows with `future`, then `predict(batch)` -> `point` [B, H, T]."""

    inputs: ClassVar[frozenset[str]] = frozenset({PAST, PAST_MASK})
    outputs: ClassVar[frozenset[str]] = frozenset({"point"})
    trainable: ClassVar[bool] = False

    def __init__(
        self,
        horizon: int,
        lags: int = 16,
        feature_keys: Sequence[str] = (),
        n_estimators: int = 200,
        learning_rate: float = 0.05,
        num_leaves: int = 15,
        min_child_samples: int = 20,
        seed: int = 0,
        num_threads: int = 1,
    ) -> None:
        self.horizon = horizon
        self.lags = lags
        self.feature_keys = tuple(feature_keys)
        self.params: dict[str, Any] = {
            "objective": "regression",
            "n_estimators": n_estimators,
            "learning_rate": learning_rate,
            "num_leaves": num_leaves,
            "min_child_samples": min_child_samples,
            "random_state": seed,
            "n_jobs": num_threads,
            "deterministic": True,
            "force_row_wise": True,
            "verbose": -1,
        }
        self.models: list[lgb.LGBMRegressor | lgb.Booster] = []

    def _window(self, arrays: Mapping[str, np.ndarray]) -> np.ndarray:
        """-> design rows per sample [N, K * C + F] (unobserved bars NaN)."""
        past = arrays[PAST][:, -self.lags :].astype(np.float64)
        if PAST_MASK in arrays:
            past = np.where(arrays[PAST_MASK][:, -self.lags :, None], past, np.nan)
        columns = [past.reshape(len(past), -1)]
        columns += [arrays[k].reshape(len(past), -1).astype(np.float64) for k in self.feature_keys]
        return np.concatenate(columns, axis=1)

    def _rows(self, window: np.ndarray) -> np.ndarray:
        """window [N, W] -> rows [N * H, W + 1], sample-major, the step h = 0..H-1 last."""
        repeated = np.repeat(window, self.horizon, axis=0)
        steps = np.tile(np.arange(self.horizon, dtype=np.float64), len(window))[:, None]
        return np.concatenate([repeated, steps], axis=1)

    def fit(self, data: Batch | Iterable[Batch]) -> LightGBMForecaster:
        """data: arrays `past` [N, L, C], `future` [N, H, T] (+ masks, feature keys [N, F]) or an iterable of them."""
        arrays = _collect(data, (PAST, PAST_MASK, FUTURE, FUTURE_MASK, *self.feature_keys))
        future = arrays[FUTURE].astype(np.float64)
        if future.shape[1] != self.horizon:
            raise ValueError(f"future has horizon {future.shape[1]}, the model was built for {self.horizon}")
        rows = self._rows(self._window(arrays))
        keep = np.ones(future.shape[:2], dtype=bool) if FUTURE_MASK not in arrays else arrays[FUTURE_MASK].astype(bool)
        self.models = []
        for target in range(future.shape[2]):
            y = future[:, :, target].reshape(-1)
            ok = keep.reshape(-1) & np.isfinite(y)
            model = lgb.LGBMRegressor(**self.params)
            model.fit(rows[ok], y[ok])
            self.models.append(model)
        return self

    def save(self, path: Path) -> Path:
        """Write the fitted boosters as LightGBM's text model format (no pickle), one block per target channel."""
        if not self.models:
            raise RuntimeError("LightGBMForecaster.save called before fit")
        texts = [_booster(model).model_to_string() for model in self.models]
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps({"horizon": self.horizon, "lags": self.lags, "boosters": texts}), "utf-8")
        return path

    def load(self, path: Path) -> LightGBMForecaster:
        """Read boosters written by `save` (text, never unpickled); checks horizon and lags match this model."""
        payload = json.loads(Path(path).read_text("utf-8"))
        if payload["horizon"] != self.horizon or payload["lags"] != self.lags:
            raise ValueError(f"{path}: saved for horizon {payload['horizon']} / lags {payload['lags']}")
        self.models = [lgb.Booster(model_str=text) for text in payload["boosters"]]
        return self

    def predict(self, batch: Batch) -> dict[str, Tensor]:
        """batch `past` [B, L, C] (+ `past_mask`, feature keys) -> `point` [B, H, T] float32."""
        if not self.models:
            raise RuntimeError("LightGBMForecaster.predict called before fit")
        arrays = _collect(batch, (PAST, PAST_MASK, *self.feature_keys))
        rows = self._rows(self._window(arrays))
        size = len(arrays[PAST])
        preds = [model.predict(rows).reshape(size, self.horizon) for model in self.models]
        return {"point": torch.from_numpy(np.stack(preds, axis=-1).astype(np.float32))}
