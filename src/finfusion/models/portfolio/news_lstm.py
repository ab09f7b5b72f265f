"""Seed 002's news stream: per bar the mean text embedding, or a learned NO_NEWS embedding where the bar has no text,
with the coverage one-hot concatenated, run through one LSTM whose last hidden state is the news embedding.

Shapes: B batch, A assets (one news sequence each, all through the same LSTM), L bars, D text width, S universe size
(the coverage one-hot), E news embedding width.

The text part is first mapped linearly from D to E: a low-rank factor of the LSTM's input weights (the LSTM applies a
linear map to its inputs anyway), which keeps the LSTM small when D is a sentence encoder's width (384 for MiniLM).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class NewsLSTM(nn.Module):
    """(text mean [B, A, L, D], has-news [B, A, L], coverage [B, A, L, S]) -> news embedding [B, A, E]."""

    def __init__(self, text_dim: int, n_symbols: int, hidden: int, n_layers: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        self.no_news = nn.Parameter(torch.randn(text_dim) * 0.02)
        self.project = nn.Linear(text_dim, hidden)
        self.lstm = nn.LSTM(
            hidden + n_symbols, hidden, n_layers, batch_first=True, dropout=dropout if n_layers > 1 else 0.0
        )

    def texts(self, emb: Tensor, mask: Tensor) -> Tensor:
        """The text embedding of each bar [..., L, D]: `emb`, or NO_NEWS where `mask` is False."""
        return torch.where(mask.unsqueeze(-1), emb, self.no_news.to(emb.dtype))

    def forward(self, emb: Tensor, mask: Tensor, coverage: Tensor) -> Tensor:
        batch, assets, length = mask.shape
        steps = torch.cat([self.project(self.texts(emb, mask)), coverage.to(emb.dtype)], dim=-1)
        steps = steps.reshape(batch * assets, length, -1)
        _, (hidden, _) = self.lstm(steps)
        return hidden[-1].view(batch, assets, -1)
