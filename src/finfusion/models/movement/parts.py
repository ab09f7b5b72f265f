"""Layers shared by the movement models over lag steps (B batch, L steps, N tweets per step, D text dim, d width).

- `TweetEncoder`: frozen sentence embeddings [B, L, N, D] and their ages [B, L, N] -> tweet vectors [B, L, N, d].
- `StepPooling`: attention pooling of each step's tweets [B, L, N, d] -> [B, L, d], a learned vector for empty steps.
- `TemporalHead`: a GRU over the steps [B, L, d] (left-padded, the target step last) with temporal attention
  (Adv-ALSTM style: the attention summary concatenated with the last state, the latent [B, 2d]) -> class logits
  [B, K]. `represent` and `classify` are its two halves, so that a task can perturb the latent (adversarial
  training, `MovementTask(adversarial_epsilon=...)`).

The attention layers also return their weights (`StepPooling.weights`, `TemporalHead.attention`): the models'
`lag_attention(batch)` (explanations, families/movement_explain.py) reads them.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def masked_softmax(scores: Tensor, mask: Tensor, dim: int) -> Tensor:
    """Softmax of `scores` over `dim` where `mask` is True; all-False slices give zeros (not NaN)."""
    scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    weights = torch.softmax(scores, dim=dim) * mask.to(scores.dtype)
    return weights / weights.sum(dim=dim, keepdim=True).clamp_min(1e-9)


class TweetEncoder(nn.Module):
    """Project embeddings [B, L, N, D] to d and add an embedding of the age (days before the decision) [B, L, N].

    Only the tweets under `mask` [B, L, N] are computed (most slots are padding); the others are zeros.
    """

    def __init__(self, text_dim: int, d_model: int, dropout: float) -> None:
        super().__init__()
        self.text = nn.Sequential(nn.Dropout(dropout), nn.Linear(text_dim, d_model))
        self.age = nn.Linear(2, d_model)
        self.out = nn.Sequential(nn.GELU(), nn.LayerNorm(d_model))

    def forward(self, text_emb: Tensor, text_age: Tensor, mask: Tensor) -> Tensor:
        hours = text_age[mask].clamp_min(0.0) * 24.0  # [T]
        age = torch.stack([torch.log1p(hours), (hours < 24.0).to(hours.dtype)], dim=-1)  # [T, 2]
        packed = self.out(self.text(text_emb[mask]) + self.age(age))  # [T, d]
        out = packed.new_zeros((*mask.shape, packed.shape[-1]))
        out[mask] = packed
        return out


class StepPooling(nn.Module):
    """Attention pooling of the tweets of each step [B, L, N, d] under `mask` [B, L, N] -> [B, L, d].

    Steps without tweets get a learned vector; the log count of tweets is added through a linear map.
    """

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.score = nn.Sequential(nn.Linear(d_model, d_model), nn.Tanh(), nn.Linear(d_model, 1))
        self.empty = nn.Parameter(torch.zeros(d_model))
        self.count = nn.Linear(1, d_model)

    def weights(self, tweets: Tensor, mask: Tensor) -> Tensor:
        """The pooling weights [B, L, N] of each step's tweets (0 on padding; a step without tweets is all 0)."""
        scores = tweets.new_zeros(mask.shape)
        scores[mask] = self.score(tweets[mask]).squeeze(-1)  # scored for the real tweets only
        return masked_softmax(scores, mask, dim=-1)

    def forward(self, tweets: Tensor, mask: Tensor) -> Tensor:
        pooled = torch.einsum("bln,blnd->bld", self.weights(tweets, mask), tweets)
        count = mask.sum(dim=-1, keepdim=True).to(tweets.dtype)  # [B, L, 1]
        pooled = torch.where(count > 0, pooled, self.empty.expand_as(pooled))
        return pooled + self.count(torch.log1p(count))


class TemporalHead(nn.Module):
    """GRU over steps [B, L, d] with temporal attention under `step_mask` [B, L] -> logits [B, n_classes]."""

    def __init__(self, d_model: int, dropout: float, n_classes: int = 2) -> None:
        super().__init__()
        self.gru = nn.GRU(d_model, d_model, batch_first=True)
        self.score = nn.Sequential(nn.Linear(d_model, d_model), nn.Tanh(), nn.Linear(d_model, 1))
        self.out = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(2 * d_model, d_model), nn.GELU(), nn.Linear(d_model, n_classes)
        )

    def _states(self, steps: Tensor, step_mask: Tensor) -> tuple[Tensor, Tensor]:
        """steps [B, L, d], step_mask [B, L] -> the GRU states [B, L, d] and the temporal attention [B, L]."""
        states, _ = self.gru(steps * step_mask.unsqueeze(-1).to(steps.dtype))
        return states, masked_softmax(self.score(states).squeeze(-1), step_mask, dim=-1)

    def attention(self, steps: Tensor, step_mask: Tensor) -> Tensor:
        """The temporal attention [B, L] over the steps [B, L, d] under `step_mask` [B, L]."""
        return self._states(steps, step_mask)[1]

    def represent(self, steps: Tensor, step_mask: Tensor) -> Tensor:
        """steps [B, L, d], step_mask [B, L] -> latent [B, 2d] (attention summary, last state)."""
        states, weights = self._states(steps, step_mask)
        summary = torch.einsum("bl,bld->bd", weights, states)
        return torch.cat([summary, states[:, -1]], dim=-1)

    def classify(self, latent: Tensor) -> Tensor:
        """latent [B, 2d] -> logits [B, n_classes]."""
        return self.out(latent)

    def forward(self, steps: Tensor, step_mask: Tensor) -> dict[str, Tensor]:
        """steps [B, L, d], step_mask [B, L] -> {`logits` [B, n_classes], `latent` [B, 2d]}."""
        latent = self.represent(steps, step_mask)
        return {"logits": self.classify(latent), "latent": latent}


class LatentClassifier:
    """Mixin of the movement models whose `head` is a `TemporalHead`: their outputs carry `latent` [B, 2d] and
    `classify(latent)` -> `logits` [B, K] re-runs only the head's last layers (used by adversarial training)."""

    head: TemporalHead

    def classify(self, latent: Tensor) -> Tensor:
        return self.head.classify(latent)
