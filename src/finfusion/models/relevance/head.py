"""A relevance head of the dual-tower model: one horizon's score and direction from the pair's joint embedding."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class RelevanceHead(nn.Module):
    """[B, E] -> score [B] in [-1, 1] and direction logits [B, 2] (down, up).

    Seed 004: Linear(E -> 16) + BatchNorm + ReLU, Linear(16 -> 8) + ReLU, Linear(8 -> 3); output 0 through tanh is
    the relevance score, outputs 1 and 2 are the logits of a positive and a negative direction (their softmax gives
    the positive and negative probabilities).
    """

    def __init__(self, in_features: int, hidden: tuple[int, int] = (16, 8)) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(in_features, hidden[0]),
            nn.BatchNorm1d(hidden[0]),
            nn.ReLU(),
            nn.Linear(hidden[0], hidden[1]),
            nn.ReLU(),
            nn.Linear(hidden[1], 3),
        )

    def forward(self, joint: Tensor) -> tuple[Tensor, Tensor]:
        out = self.layers(joint)
        score = torch.tanh(out[:, 0])
        logits = torch.stack([out[:, 2], out[:, 1]], dim=-1)  # (negative, positive): class 1 is up
        return score, logits
