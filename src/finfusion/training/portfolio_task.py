"""Lightning task for portfolio weights: any model returning `logits` [B, A], trained on `PortfolioLoss`.

Training logs `train_loss` and each weighted term (`train_sharpe_term`, `train_dist`, `train_net`, `train_turnover`).
Validation logs `val_loss` (the same objective) and `val_sharpe`: the annualised Sharpe ratio of the top-k portfolio
held `hold` bars after each validation decision, i.e. the series of sum_{h < hold} R_p[h] in decision order,
annualised with periods_per_year / hold (with validation windows `hold` bars apart this is the strategy that
rebalances at every decision). Batches must be consecutive decisions when the turnover term is on
(`samples.portfolio.ContiguousBatches`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from finfusion.samples.contract import FUTURE, ORIGIN_US
from finfusion.training.portfolio_loss import PortfolioLoss, portfolio_returns, top_k_abs_weights
from finfusion.training.tasks import Batch, _batch_size, _Task, sharpe_ratio


class PortfolioTask(_Task):
    """Top-k long/short portfolio weights from `logits` [B, A] against `future` returns [B, A, H]."""

    def __init__(
        self,
        model: nn.Module,
        k: int = 5,
        sharpe_eps: float = 1e-8,
        dist_weight: float = 1.0,
        net_weight: float = 0.1,
        turnover_weight: float = 0.0,
        lr: float = 1e-3,
        weight_decay: float = 0.01,
        warmup_fraction: float = 0.05,
        total_steps: int | None = None,
        min_lr_ratio: float = 0.0,
        extra_groups: Sequence[Mapping[str, Any]] | None = None,
        hold: int = 1,
        periods_per_year: float = 252.0,
    ) -> None:
        super().__init__(model, None, None, lr, weight_decay, warmup_fraction, total_steps, min_lr_ratio, extra_groups)
        self.loss_fn: PortfolioLoss = PortfolioLoss(k, sharpe_eps, dist_weight, net_weight, turnover_weight)
        self._val: dict[str, list[Tensor]] = {}

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        terms = self.loss_fn.terms(self.model(batch), batch)
        size = _batch_size(batch)
        self.log("train_loss", terms["loss"], on_step=True, on_epoch=True, prog_bar=True, batch_size=size)
        for name in ("sharpe", "dist", "net", "turnover"):
            label = "train_sharpe_term" if name == "sharpe" else f"train_{name}"
            self.log(label, terms[name], on_step=False, on_epoch=True, batch_size=size)
        return terms["loss"]

    def on_validation_epoch_start(self) -> None:
        self._val = {"origin": [], "pnl": []}

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        outputs = self.model(batch)
        loss = self.loss_fn(outputs, batch)
        self.log("val_loss", loss, on_epoch=True, prog_bar=True, batch_size=_batch_size(batch))
        weights = top_k_abs_weights(outputs["logits"].detach().float(), self.hparams.k)
        held = portfolio_returns(weights, batch[FUTURE].float())[:, : self.hparams.hold].sum(dim=-1)
        self._val["origin"].append(batch[ORIGIN_US].cpu())
        self._val["pnl"].append(held.cpu())

    def on_validation_epoch_end(self) -> None:
        if not self._val.get("pnl"):
            return
        order = torch.argsort(torch.cat(self._val["origin"]))
        pnl = torch.cat(self._val["pnl"])[order]
        periods = self.hparams.periods_per_year / self.hparams.hold
        self.log("val_sharpe", torch.tensor(sharpe_ratio(pnl, periods)), prog_bar=True)
