"""Seed 002's objective: top-k long/short weights from logits, negative Sharpe over the horizon, and regularisers.

Shapes: B decisions (the batch), A assets, H horizon steps.

- Weights w = `top_k_abs_weights(logits, k)`: the k largest |logit| keep their value, the others become 0, and
  w_i = logit_i / sum_{j in top-k} |logit_j|, so signs are kept and |w| sums to 1 (ties in |logit| go to the lower
  asset index, as in `evaluation.sizing.top_k_abs_weights`).
- Portfolio returns R_p [B, H] = sum_i w_i R_i with R = `future` [B, A, H] (simple returns, 0 where missing).
- Sharpe [B] = mean_h R_p / sqrt(var_h R_p + eps) (population variance over the H steps); L_sharpe = -mean_b Sharpe.
- L_dist = λ_dist · mean_b (1/A) sum_i w_i²   (against concentration)
- L_net = λ_net · mean_b (sum_i w_i)²          (towards market neutrality)
- L_turnover = λ_turnover · mean sum_i |w_i - w_prev_i| over the decisions that have previous weights.
- total = L_sharpe + L_dist + L_net + L_turnover.

Previous weights. `PortfolioLoss` reads batches of consecutive decisions (`samples.portfolio.ContiguousBatches`): the
previous weights of a decision are those of the decision before it in the batch, detached (they were already
traded); the first decision of a batch has none.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from finfusion.errors import FinfusionError
from finfusion.samples.contract import FUTURE, ORIGIN_US
from finfusion.training.losses import BatchLoss


def top_k_abs_weights(logits: Tensor, k: int) -> Tensor:
    """Weights [B, A] of logits [B, A]: the k largest |logit| per row, signs kept, |w| summing to 1 (0 rows stay 0)."""
    return selected_weights(logits, top_k_mask(logits, k))


def top_k_mask(logits: Tensor, k: int) -> Tensor:
    """[B, A] bool: the k largest |logit| of each row of logits [B, A] (ties to the lower asset index)."""
    if k < 1:
        raise FinfusionError(f"k must be at least 1, got {k}")
    order = torch.sort(logits.detach().abs(), dim=-1, descending=True, stable=True).indices
    return torch.zeros_like(logits, dtype=torch.bool).scatter(-1, order[..., :k], True)


def selected_weights(logits: Tensor, keep: Tensor) -> Tensor:
    """Weights [B, A] of logits [B, A] held where `keep` [B, A]: signs kept, |w| summing to 1 (0 rows stay 0)."""
    kept = logits * keep
    total = kept.abs().sum(dim=-1, keepdim=True)
    return kept / torch.where(total > 0, total, torch.ones_like(total))


def portfolio_returns(weights: Tensor, returns: Tensor) -> Tensor:
    """R_p [B, H] = sum_i weights [B, A] * returns [B, A, H]."""
    return torch.einsum("ba,bah->bh", weights, returns)


def sharpe(port: Tensor, eps: float) -> Tensor:
    """Sharpe [B] of the portfolio returns [B, H]: mean / sqrt(population variance + eps) over H."""
    var, mean = torch.var_mean(port, dim=-1, correction=0)
    return mean / torch.sqrt(var + eps)


def distribution_penalty(weights: Tensor) -> Tensor:
    """(1/A) sum_i w_i² [B] of weights [B, A]."""
    return (weights**2).mean(dim=-1)


def net_exposure_penalty(weights: Tensor) -> Tensor:
    """(sum_i w_i)² [B] of weights [B, A]."""
    return weights.sum(dim=-1) ** 2


def turnover_penalty(weights: Tensor, previous: Tensor) -> Tensor:
    """sum_i |w_i - w_prev_i| [B] of weights and previous weights [B, A]."""
    return (weights - previous).abs().sum(dim=-1)


def portfolio_loss_terms(
    weights: Tensor,
    returns: Tensor,
    *,
    eps: float = 1e-8,
    dist_weight: float = 0.0,
    net_weight: float = 0.0,
    turnover_weight: float = 0.0,
    previous: Tensor | None = None,
    has_previous: Tensor | None = None,
) -> dict[str, Tensor]:
    """The weighted terms and their sum `loss` (all []) of weights [B, A] against returns [B, A, H] (module docstring).

    `previous` [B, A] are the previous weights, for the decisions where `has_previous` [B] (default all) is True;
    without `previous` there is no turnover term (it is 0).
    """
    terms = {
        "sharpe": -sharpe(portfolio_returns(weights, returns), eps).mean(),
        "dist": dist_weight * distribution_penalty(weights).mean(),
        "net": net_weight * net_exposure_penalty(weights).mean(),
        "turnover": weights.new_zeros(()),
    }
    if previous is not None:
        turnover = turnover_penalty(weights, previous)
        if has_previous is not None:
            turnover = turnover[has_previous]
        if turnover.numel():
            terms["turnover"] = turnover_weight * turnover.mean()
    terms["loss"] = terms["sharpe"] + terms["dist"] + terms["net"] + terms["turnover"]
    return terms


class PortfolioLoss(BatchLoss):
    """The objective of the module docstring on `outputs["logits"]` [B, A] and `batch["future"]` [B, A, H]."""

    output_key = "logits"

    def __init__(
        self,
        k: int = 5,
        eps: float = 1e-8,
        dist_weight: float = 1.0,
        net_weight: float = 0.1,
        turnover_weight: float = 0.0,
    ) -> None:
        super().__init__()
        if k < 1:
            raise FinfusionError(f"k must be at least 1, got {k}")
        self.k = k
        self.eps = eps
        self.dist_weight = dist_weight
        self.net_weight = net_weight
        self.turnover_weight = turnover_weight

    def terms(self, outputs: Mapping[str, Tensor], batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Each weighted term and the total `loss` (all [])."""
        weights = top_k_abs_weights(outputs["logits"], self.k)
        previous = has_previous = None
        if self.turnover_weight > 0 and weights.shape[0] > 1:
            origins = batch.get(ORIGIN_US)
            if origins is None or bool((origins[1:] <= origins[:-1]).any()):
                raise FinfusionError(
                    "the turnover term needs batches of consecutive decisions in time order "
                    "(samples.portfolio.ContiguousBatches) with origin_us"
                )
            previous = torch.cat([weights[:1], weights[:-1]]).detach()
            has_previous = torch.arange(weights.shape[0], device=weights.device) > 0
        return portfolio_loss_terms(
            weights,
            batch[FUTURE],
            eps=self.eps,
            dist_weight=self.dist_weight,
            net_weight=self.net_weight,
            turnover_weight=self.turnover_weight,
            previous=previous,
            has_previous=has_previous,
        )

    def forward(self, outputs: Mapping[str, Tensor], batch: Mapping[str, Tensor]) -> Tensor:
        return self.terms(outputs, batch)["loss"]
