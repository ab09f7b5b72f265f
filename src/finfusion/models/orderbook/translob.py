"""TransLOB (Wallbridge 2020): dilated causal convolutions over the order-book events, then a transformer encoder.

    book [B, T, L, 4] -> [B, 4L, T] -> 5 causal Conv1d (kernel 2, dilations 1, 2, 4, 8, 16, `conv_channels`,
    ReLU) -> LayerNorm -> concat a linear position in [-1, 1] -> Linear to d_model -> TransformerEncoder
    (`layers` x `heads`, pre-norm) -> flatten -> MLP (64, dropout) -> logits [B, 3]

Causal: the output at event t reads events at or before t only (left padding by (kernel - 1) x dilation).
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from finfusion.models.base import Capabilities
from finfusion.samples.contract import BOOK


class CausalConv(nn.Module):
    """Conv1d [B, C, T] -> [B, C', T] whose output at t sees inputs at or before t."""

    def __init__(self, channels_in: int, channels_out: int, dilation: int, kernel: int = 2) -> None:
        super().__init__()
        self.pad = (kernel - 1) * dilation
        self.conv = nn.Conv1d(channels_in, channels_out, kernel, dilation=dilation)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(x, (self.pad, 0)))


class TransLOB(nn.Module, Capabilities):
    """See the module docstring. `levels` and `window` come from the data."""

    inputs: ClassVar[frozenset[str]] = frozenset({BOOK})
    outputs: ClassVar[frozenset[str]] = frozenset({"logits"})

    def __init__(
        self,
        levels: int,
        window: int,
        n_classes: int = 3,
        conv_channels: int = 14,
        d_model: int = 16,
        heads: int = 2,
        layers: int = 2,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        convs, width = [], 4 * levels
        for dilation in (1, 2, 4, 8, 16):
            convs.append(CausalConv(width, conv_channels, dilation))
            width = conv_channels
        self.convs = nn.ModuleList(convs)
        self.norm = nn.LayerNorm(conv_channels)
        self.project = nn.Linear(conv_channels + 1, d_model)
        layer = nn.TransformerEncoderLayer(d_model, heads, 4 * d_model, dropout, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Sequential(
            nn.Linear(window * d_model, 64), nn.ReLU(), nn.Dropout(dropout), nn.Linear(64, n_classes)
        )
        self.register_buffer("position", torch.linspace(-1.0, 1.0, window).view(1, window, 1), persistent=False)

    def features(self, book: Tensor) -> Tensor:
        """The causal convolution features [B, T, conv_channels] of `book` [B, T, L, 4]."""
        x = book.flatten(2).transpose(1, 2)
        for conv in self.convs:
            x = F.relu(conv(x))
        return self.norm(x.transpose(1, 2))

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        x = self.features(batch[BOOK])
        x = self.project(torch.cat([x, self.position.expand(x.shape[0], -1, -1)], dim=-1))
        return {"logits": self.head(self.encoder(x).flatten(1))}
