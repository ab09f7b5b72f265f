"""The towers of the dual-tower relevance model: a multilayer perceptron from a feature vector to an embedding."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn


class FeatureTower(nn.Module):
    """[B, F] -> [B, E]: for each width of `hidden`, Linear + BatchNorm + ReLU + Dropout(`dropout`); then a Linear
    to the `embedding_dim` embedding (seed 004: context 128 -> 64 -> 32, dropout 0.2; stock 256 -> 128 -> 64,
    dropout 0.3)."""

    def __init__(self, in_features: int, hidden: Sequence[int], embedding_dim: int, dropout: float) -> None:
        super().__init__()
        if in_features < 1:
            raise ValueError("a tower needs at least one input feature")
        layers: list[nn.Module] = []
        width = in_features
        for size in hidden:
            layers += [nn.Linear(width, int(size)), nn.BatchNorm1d(int(size)), nn.ReLU(), nn.Dropout(dropout)]
            width = int(size)
        layers.append(nn.Linear(width, embedding_dim))
        self.layers = nn.Sequential(*layers)
        self.embedding_dim = embedding_dim

    def forward(self, features: Tensor) -> Tensor:
        return self.layers(features)
