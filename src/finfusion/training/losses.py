"""Training losses: functional forms on tensors, and batch losses that read a model's outputs and the sample contract.

Shapes: B batch, L lookback, H horizon, C input channels, T target channels, Q quantiles, K classes.
A batch loss is called as `loss(outputs, batch) -> Tensor[]`; `build_loss(name, **kw)` makes one by name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from finfusion.samples.contract import FUTURE, FUTURE_MASK, IGNORE_LABEL, LABEL, PAST

_EPS = 1e-8


def _masked_mean(values: Tensor, mask: Tensor | None) -> Tensor:
    """Mean of `values` [B, H, ...] over the entries where `mask` [B, H] is True (all entries when None)."""
    if mask is None:
        return values.mean()
    weight = mask.to(values.dtype).reshape(*mask.shape, *([1] * (values.dim() - mask.dim()))).expand_as(values)
    return (values * weight).sum() / weight.sum().clamp_min(1.0)


def mse_loss(pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean squared error of `pred` [B, H, T] against `target` [B, H, T] over steps where `mask` [B, H] is True."""
    return _masked_mean((pred - target) ** 2, mask)


def huber_loss(pred: Tensor, target: Tensor, mask: Tensor | None = None, delta: float = 1.0) -> Tensor:
    """Huber loss (quadratic within `delta`, linear beyond) of `pred` [B, H, T] against `target` [B, H, T]."""
    return _masked_mean(F.huber_loss(pred, target, reduction="none", delta=delta), mask)


def quantile_loss(quantiles: Tensor, target: Tensor, levels: Tensor, mask: Tensor | None = None) -> Tensor:
    """Pinball loss of `quantiles` [B, H, T, Q] at `levels` [Q] against `target` [B, H, T], averaged over Q too."""
    levels = levels.to(device=quantiles.device, dtype=quantiles.dtype)
    error = target.unsqueeze(-1) - quantiles
    return _masked_mean(torch.maximum(levels * error, (levels - 1.0) * error), mask)


def naive_scale(
    past: Tensor, target_channels: Sequence[int], season: int = 1, past_mask: Tensor | None = None
) -> Tensor:
    """In-sample mean absolute error of the seasonal naive forecast on `past` [B, L, C], for each target: [B, 1, T].

    `target_channels` lists, for each of the T targets, its channel in `past`. Steps whose bar or its lagged bar is
    missing (`past_mask` [B, L] False) are left out.
    """
    history = past[..., list(target_channels)]
    diffs = (history[:, season:] - history[:, :-season]).abs()
    valid = None if past_mask is None else past_mask[:, season:] & past_mask[:, :-season]
    if valid is None:
        return diffs.mean(dim=1, keepdim=True)
    weight = valid.to(diffs.dtype).unsqueeze(-1)
    return (diffs * weight).sum(dim=1, keepdim=True) / weight.sum(dim=1, keepdim=True).clamp_min(1.0)


def mase_loss(pred: Tensor, target: Tensor, scale: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean absolute scaled error: |`pred` - `target`| [B, H, T] divided by the naive `scale` [B, 1, T]."""
    return _masked_mean((pred - target).abs() / scale.clamp_min(_EPS), mask)


def focal_loss(
    logits: Tensor,
    labels: Tensor,
    gamma: float = 2.0,
    alpha: float | Sequence[float] | None = None,
    ignore_index: int = IGNORE_LABEL,
) -> Tensor:
    """Focal loss -alpha_y (1 - p_y)^gamma log p_y of `logits` [B, K] for `labels` [B], mean over kept labels.

    `alpha` is one weight per class, or a float a giving class 1 weight a and class 0 weight 1 - a (binary case).
    Labels equal to `ignore_index` are left out; with gamma 0 and no alpha this is cross-entropy.
    """
    keep = labels != ignore_index
    if not bool(keep.any()):
        return logits.sum() * 0.0
    logits, labels = logits[keep], labels[keep]
    log_p = F.log_softmax(logits.float(), dim=-1).gather(1, labels.unsqueeze(1)).squeeze(1)
    loss = -((1.0 - log_p.exp()) ** gamma) * log_p
    if alpha is not None:
        weights = torch.tensor([1.0 - alpha, alpha] if isinstance(alpha, float | int) else list(alpha))
        loss = loss * weights.to(loss.device, loss.dtype)[labels]
    return loss.mean()


def cross_entropy_loss(
    logits: Tensor, labels: Tensor, label_smoothing: float = 0.0, ignore_index: int = IGNORE_LABEL
) -> Tensor:
    """Cross-entropy of `logits` [B, K] for `labels` [B] with label smoothing; `ignore_index` labels left out."""
    if not bool((labels != ignore_index).any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits.float(), labels, label_smoothing=label_smoothing, ignore_index=ignore_index)


class BatchLoss(nn.Module):
    """A loss on a model's outputs and the batch: `forward(outputs, batch) -> Tensor[]`."""

    #: The model output the loss reads (`point`, `quantiles` or `logits`).
    output_key: str = "point"

    def forward(self, outputs: Mapping[str, Tensor], batch: Mapping[str, Tensor]) -> Tensor:
        raise NotImplementedError


class _PointLoss(BatchLoss):
    def __init__(self, fn: Callable[..., Tensor], **kwargs: float) -> None:
        super().__init__()
        self.fn = fn
        self.kwargs = kwargs

    def forward(self, outputs: Mapping[str, Tensor], batch: Mapping[str, Tensor]) -> Tensor:
        return self.fn(outputs["point"], batch[FUTURE], batch.get(FUTURE_MASK), **self.kwargs)


class QuantileLoss(BatchLoss):
    """Pinball loss of `outputs["quantiles"]` [B, H, T, Q] at `levels` [Q] against `batch["future"]` [B, H, T]."""

    output_key = "quantiles"

    def __init__(self, levels: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("levels", torch.tensor(list(levels), dtype=torch.float32), persistent=False)

    def forward(self, outputs: Mapping[str, Tensor], batch: Mapping[str, Tensor]) -> Tensor:
        return quantile_loss(outputs["quantiles"], batch[FUTURE], self.levels, batch.get(FUTURE_MASK))


class PointQuantileLoss(QuantileLoss):
    """MSE of `outputs["point"]` plus the pinball loss of `outputs["quantiles"]`: trains both heads of a model."""

    def forward(self, outputs: Mapping[str, Tensor], batch: Mapping[str, Tensor]) -> Tensor:
        point = mse_loss(outputs["point"], batch[FUTURE], batch.get(FUTURE_MASK))
        return point + super().forward(outputs, batch)


class MASELoss(BatchLoss):
    """MASE of `outputs["point"]` [B, H, T], scaled per sample by the naive errors on `batch["past"]` [B, L, C]."""

    def __init__(self, target_channels: Sequence[int] | None = None, season: int = 1) -> None:
        super().__init__()
        self.target_channels = None if target_channels is None else list(target_channels)
        self.season = season

    def forward(self, outputs: Mapping[str, Tensor], batch: Mapping[str, Tensor]) -> Tensor:
        target = batch[FUTURE]
        channels = self.target_channels if self.target_channels is not None else list(range(target.shape[-1]))
        scale = naive_scale(batch[PAST], channels, self.season, batch.get("past_mask"))
        return mase_loss(outputs["point"], target, scale, batch.get(FUTURE_MASK))


class FocalLoss(BatchLoss):
    """Focal loss of `outputs["logits"]` [B, K] for `batch["label"]` [B]."""

    output_key = "logits"

    def __init__(
        self, gamma: float = 2.0, alpha: float | Sequence[float] | None = None, ignore_index: int = IGNORE_LABEL
    ) -> None:
        super().__init__()
        self.gamma = gamma
        self.alpha = alpha if alpha is None or isinstance(alpha, float | int) else list(alpha)
        self.ignore_index = ignore_index

    def forward(self, outputs: Mapping[str, Tensor], batch: Mapping[str, Tensor]) -> Tensor:
        return focal_loss(outputs["logits"], batch[LABEL], self.gamma, self.alpha, self.ignore_index)


class CrossEntropyLoss(BatchLoss):
    """Cross-entropy with label smoothing of `outputs["logits"]` [B, K] for `batch["label"]` [B]."""

    output_key = "logits"

    def __init__(self, label_smoothing: float = 0.0, ignore_index: int = IGNORE_LABEL) -> None:
        super().__init__()
        self.label_smoothing = label_smoothing
        self.ignore_index = ignore_index

    def forward(self, outputs: Mapping[str, Tensor], batch: Mapping[str, Tensor]) -> Tensor:
        return cross_entropy_loss(outputs["logits"], batch[LABEL], self.label_smoothing, self.ignore_index)


class ModelLoss(BatchLoss):
    """The loss the model computed itself, `outputs["loss"]` [] (e.g. a likelihood of a distribution head)."""

    output_key = "loss"

    def forward(self, outputs: Mapping[str, Tensor], batch: Mapping[str, Tensor]) -> Tensor:
        if "loss" not in outputs:
            raise ValueError("loss 'model' needs a model that returns `loss` when the batch has `future`")
        return outputs["loss"]


def build_loss(name: str, **kwargs: object) -> BatchLoss:
    """The batch loss called `name` (mse, huber, quantile, mse_quantile, mase, focal,
    cross_entropy, model) with its arguments."""
    key = name.lower().replace("-", "_")
    if key == "mse":
        return _PointLoss(mse_loss, **kwargs)
    if key == "huber":
        return _PointLoss(huber_loss, **kwargs)
    factories: dict[str, Callable[..., BatchLoss]] = {
        "quantile": QuantileLoss,
        "mase": MASELoss,
        "focal": FocalLoss,
        "cross_entropy": CrossEntropyLoss,
        "ce": CrossEntropyLoss,
        "model": ModelLoss,
        "mse_quantile": PointQuantileLoss,
    }
    if key not in factories:
        raise ValueError(f"unknown loss {name!r}; choose one of mse, huber, {', '.join(factories)}")
    return factories[key](**kwargs)
