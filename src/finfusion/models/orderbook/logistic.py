"""Multinomial logistic regression of order-book windows: book [B, T, L, 4] flattened -> one linear layer ->
logits [B, 3], trained by the same task (cross-entropy) as the neural models, on the same inputs."""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor, nn

from finfusion.models.base import Capabilities
from finfusion.samples.contract import BOOK


class LobLogistic(nn.Module, Capabilities):
    inputs: ClassVar[frozenset[str]] = frozenset({BOOK})
    outputs: ClassVar[frozenset[str]] = frozenset({"logits"})

    def __init__(self, levels: int, window: int, n_classes: int = 3) -> None:
        super().__init__()
        self.linear = nn.Linear(window * levels * 4, n_classes)

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        return {"logits": self.linear(batch[BOOK].flatten(1))}
