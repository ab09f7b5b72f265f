"""Gated sparse Mixture-of-Experts MLP with top-k routing (k = 2 by default) and the load-balancing loss.

Shapes: N tokens, D width, E experts, k experts per token. A linear router gives each token a softmax over the E
experts; the token goes to its k most probable experts (no capacity limit, no token dropped) and the output is the sum
of their outputs weighted by the router probabilities renormalised over the k (the gates).

Load balancing (Switch Transformer, Fedus et al. 2022): loss = E * sum_e f_e * P_e, with f_e the share of the N * k
assignments that went to expert e and P_e the mean router probability of e. It is 1 when the routing is uniform
(either factor uniform) and grows as the load concentrates on few experts; gradients flow through P_e.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from finfusion.models.multimodal.layers import FeedForward


def load_balancing_loss(probs: Tensor, indices: Tensor, n_experts: int) -> Tensor:
    """E * sum_e f_e P_e from router probabilities probs [N, E] and the chosen experts indices [N, k] -> []."""
    counts = F.one_hot(indices, n_experts).sum(dim=(0, 1)).to(probs.dtype)  # [E]
    share = counts / counts.sum().clamp_min(1.0)
    return n_experts * (share * probs.mean(dim=0)).sum()


class SparseMoE(nn.Module):
    """x [..., D] -> (y [..., D], load-balancing loss []): each token through its top-k of E feed-forward experts."""

    def __init__(self, d_model: int, hidden: int, n_experts: int, top_k: int = 2, dropout: float = 0.0) -> None:
        super().__init__()
        if not 1 <= top_k <= n_experts:
            raise ValueError(f"top_k {top_k} must lie in 1..{n_experts} (the number of experts)")
        self.top_k = top_k
        self.n_experts = n_experts
        self.router = nn.Linear(d_model, n_experts, bias=False)
        self.experts = nn.ModuleList(FeedForward(d_model, hidden, dropout) for _ in range(n_experts))

    def route(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x [N, D] -> router probabilities [N, E] (float32), chosen experts [N, k], gates [N, k] summing to 1."""
        probs = torch.softmax(self.router(x).float(), dim=-1)
        top, indices = probs.topk(self.top_k, dim=-1)
        return probs, indices, top / top.sum(dim=-1, keepdim=True)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x [..., D] -> y [..., D], load-balancing loss []."""
        flat = x.reshape(-1, x.shape[-1])
        probs, indices, gates = self.route(flat)
        out = torch.zeros_like(flat)
        for e, expert in enumerate(self.experts):
            token, slot = (indices == e).nonzero(as_tuple=True)
            if token.numel():
                out.index_add_(0, token, expert(flat[token]) * gates[token, slot, None].to(flat.dtype))
        return out.view_as(x), load_balancing_loss(probs, indices, self.n_experts)
