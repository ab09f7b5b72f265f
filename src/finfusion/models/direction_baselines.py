"""Direction baselines: forecasts that are a sign, the references a model's direction calls are judged against.

A direction metric compared with a forecast that has no sign says nothing (the random walk's zero return is wrong on
every step). These are the signs a careful reader tries first, each fitted on the training windows only:

- `majority_class`: at each step h, the sign most frequent in the training span (ties: up);
- `previous_sign`: the sign of the return over the window's last H bars (momentum over the horizon);
- `drift_sign`: the sign of the window's mean return (the drift forecast's sign);
- `logistic_direction`: a logistic regression per step h (scikit-learn) on the window's last `lags` bars of every
  input channel, as the LightGBM baseline reads them: up where P(up) > 1/2.

Shapes: B batch, L lookback, C input channels, T target channels, H horizon, W = lags x C.

Each forecasts `point` [B, H, T] = sign x the training span's mean absolute return at step h (so that point metrics
stay on the scale of the data), in the batch's normalised units (`scale_loc`, `scale_scale` [B, 1, T] turn them
into returns and back). What is fitted lives in buffers, saved with the run as safetensors: predict never refits.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from finfusion.models.base import Capabilities
from finfusion.samples.contract import FUTURE, FUTURE_MASK, PAST, PAST_MASK, SCALE_LOC, SCALE_SCALE


def to_returns(values: Tensor, batch: Mapping[str, Tensor]) -> Tensor:
    """Normalised target values [B, K, T] -> returns (the batch's `scale_loc` / `scale_scale` [B, 1, T] undone)."""
    if SCALE_LOC in batch and SCALE_SCALE in batch:
        return values * batch[SCALE_SCALE].to(values.dtype) + batch[SCALE_LOC].to(values.dtype)
    return values


def from_returns(values: Tensor, batch: Mapping[str, Tensor]) -> Tensor:
    """Returns [B, K, T] -> the batch's normalised units (the inverse of `to_returns`)."""
    if SCALE_LOC in batch and SCALE_SCALE in batch:
        return (values - batch[SCALE_LOC].to(values.dtype)) / batch[SCALE_SCALE].to(values.dtype)
    return values


class DirectionBaseline(nn.Module, Capabilities):
    """The shared part: target channels, the fitted step magnitudes [H, T], `fit` over training batches and the
    point forecast from a sign. A subclass says how the sign [B, H, T] comes from a batch (`signs`) and may fit more
    (`fit_signs`)."""

    inputs: ClassVar[frozenset[str]] = frozenset({PAST, PAST_MASK})
    outputs: ClassVar[frozenset[str]] = frozenset({"point"})
    trainable: ClassVar[bool] = False

    def __init__(self, horizon: int, target_index: Sequence[int] = (0,)) -> None:
        super().__init__()
        self.horizon = horizon
        self.target_index = list(target_index)
        self.register_buffer("magnitude", torch.zeros(horizon, len(self.target_index)))

    def fit(self, data: Iterable[Mapping[str, Tensor]]) -> DirectionBaseline:
        """data: training batches with `past` [B, L, C], `future` [B, H, T] (+ masks, scales)."""
        batches = list(data)
        returns = torch.cat([self._future_returns(batch) for batch in batches])  # [N, H, T], NaN where missing
        self.magnitude.copy_(torch.nan_to_num(returns.abs().nanmean(dim=0), nan=0.0))
        self.fit_signs(batches, returns)
        return self

    def fit_signs(self, batches: list[Mapping[str, Tensor]], returns: Tensor) -> None:
        """Fit what `signs` needs from the training batches and their future returns [N, H, T] (nothing here)."""
        del batches, returns

    def signs(self, batch: Mapping[str, Tensor]) -> Tensor:
        """+1 / -1 / 0 [B, H, T]."""
        raise NotImplementedError

    def predict(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """batch `past` [B, L, C] (+ `past_mask`, scales) -> `point` [B, H, T]."""
        with torch.no_grad():
            returns = self.signs(batch).to(self.magnitude.dtype) * self.magnitude
            return {"point": from_returns(returns, batch)}

    def forward(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        return self.predict(batch)

    def _future_returns(self, batch: Mapping[str, Tensor]) -> Tensor:
        future = to_returns(batch[FUTURE].float(), batch)
        if FUTURE_MASK in batch:
            future = torch.where(batch[FUTURE_MASK].bool().reshape(*future.shape[:2], -1), future, torch.nan)
        return future

    def past_returns(self, batch: Mapping[str, Tensor]) -> Tensor:
        """The target channels' past returns [B, L, T] (0 where not observed)."""
        past = to_returns(batch[PAST][..., self.target_index].float(), batch)
        seen = torch.isfinite(past)
        if PAST_MASK in batch:
            seen = seen & batch[PAST_MASK].bool().unsqueeze(-1)
        return torch.where(seen, past, 0.0)


class MajorityClass(DirectionBaseline):
    """The training span's most frequent sign at each step h (ties: up)."""

    def __init__(self, horizon: int, target_index: Sequence[int] = (0,)) -> None:
        super().__init__(horizon, target_index)
        self.register_buffer("majority", torch.ones(horizon, len(self.target_index)))

    def fit_signs(self, batches: list[Mapping[str, Tensor]], returns: Tensor) -> None:
        up, down = (returns > 0).sum(dim=0), (returns < 0).sum(dim=0)
        self.majority.copy_(torch.where(up >= down, 1.0, -1.0))

    def signs(self, batch: Mapping[str, Tensor]) -> Tensor:
        return self.majority.expand(batch[PAST].shape[0], -1, -1)


class PreviousSign(DirectionBaseline):
    """The sign of the return over the window's last H bars, at every step."""

    def signs(self, batch: Mapping[str, Tensor]) -> Tensor:
        recent = self.past_returns(batch)[:, -self.horizon :].sum(dim=1, keepdim=True)  # [B, 1, T]
        return torch.sign(recent).expand(-1, self.horizon, -1)


class DriftSign(DirectionBaseline):
    """The sign of the window's mean return, at every step."""

    def signs(self, batch: Mapping[str, Tensor]) -> Tensor:
        return torch.sign(self.past_returns(batch).mean(dim=1, keepdim=True)).expand(-1, self.horizon, -1)


class LogisticDirection(DirectionBaseline):
    """A logistic regression per (step h, target t) on the last `lags` bars of every input channel -> up where the
    logit is positive. A step whose training labels are all one sign forecasts that sign."""

    def __init__(
        self, horizon: int, n_channels: int, target_index: Sequence[int] = (0,), lags: int = 16, c: float = 1.0
    ) -> None:
        super().__init__(horizon, target_index)
        self.lags, self.c = lags, c
        targets = len(self.target_index)
        self.register_buffer("coef", torch.zeros(horizon, targets, lags * n_channels))
        self.register_buffer("intercept", torch.zeros(horizon, targets))

    def features(self, batch: Mapping[str, Any]) -> Tensor:
        """The last `lags` bars of every channel, flattened [B, W] (unobserved values as 0)."""
        past = batch[PAST][:, -self.lags :].float()
        if PAST_MASK in batch:
            past = torch.where(batch[PAST_MASK][:, -self.lags :].bool().unsqueeze(-1), past, torch.nan)
        return torch.nan_to_num(past, nan=0.0).reshape(past.shape[0], -1)

    def fit_signs(self, batches: list[Mapping[str, Tensor]], returns: Tensor) -> None:
        from sklearn.linear_model import LogisticRegression

        x = torch.cat([self.features(batch) for batch in batches]).double().numpy()
        for h in range(self.horizon):
            for t in range(len(self.target_index)):
                known = np.isfinite(returns[:, h, t].numpy())
                labels = returns[:, h, t].numpy()[known] > 0
                if labels.all() or not labels.any():
                    self.intercept[h, t] = 1.0 if labels.all() else -1.0
                    continue
                fitted = LogisticRegression(C=self.c, max_iter=1000).fit(x[known], labels)
                self.coef[h, t] = torch.from_numpy(fitted.coef_[0]).float()
                self.intercept[h, t] = float(fitted.intercept_[0])

    def signs(self, batch: Mapping[str, Tensor]) -> Tensor:
        logits = torch.einsum("bw,htw->bht", self.features(batch), self.coef) + self.intercept
        return torch.where(logits > 0, 1.0, -1.0)
