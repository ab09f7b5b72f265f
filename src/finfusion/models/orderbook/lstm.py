"""An LSTM baseline of order-book windows: book [B, T, L, 4] -> LSTM over T (hidden `hidden`) -> last state ->
logits [B, 3]."""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor, nn

from finfusion.models.base import Capabilities
from finfusion.samples.contract import BOOK


class LobLSTM(nn.Module, Capabilities):
    inputs: ClassVar[frozenset[str]] = frozenset({BOOK})
    outputs: ClassVar[frozenset[str]] = frozenset({"logits"})

    def __init__(self, levels: int, n_classes: int = 3, hidden: int = 64) -> None:
        super().__init__()
        self.lstm = nn.LSTM(4 * levels, hidden, batch_first=True)
        self.head = nn.Linear(hidden, n_classes)

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        _, (state, _) = self.lstm(batch[BOOK].flatten(2))
        return {"logits": self.head(state[-1])}
