"""The Cross-Gated Attention portfolio model of seed 002 (NeuralFusionCore): news + OHLCV -> one logit per asset.

Shapes: B batch, A assets, L lookback bars, F market features, D text embedding width, E model width.

1. Market stream: a TimesNet encoder over each asset's features `past` [B, A, L, F] (`timesnet.py`), then, as in
   TimesNet's classification head, GELU, dropout, flatten over time and a linear map to the market embedding
   M [B, A, E].
2. News stream: each asset's bars carry the mean embedding of the texts binned to them, or a learned NO_NEWS
   embedding, with the coverage one-hot; one LSTM shared by all assets gives the news embedding N [B, A, E]
   (`news_lstm.py`).
3. Fusion: Cross-Gated Attention both ways over the assets (`cross_gated_attention.py`): Ñ, M̃ [B, A, E], then
   concatenated [B, A, 2E].
4. Head: one linear layer shared by the assets maps the fused embedding to a logit per asset: `logits` [B, A].
   Assets without a bar in the window (`past_mask` all False) get logit 0; portfolio weights come from the logits
   through `training.portfolio_loss.top_k_abs_weights`.

`use_news=False` gives the price-only twin: the same market stream and head on M alone (it reads only `past` and
`past_mask`).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import ClassVar

import torch
from torch import Tensor, nn

from finfusion.models.base import Capabilities
from finfusion.models.portfolio.cross_gated_attention import CrossGatedAttention
from finfusion.models.portfolio.news_lstm import NewsLSTM
from finfusion.models.portfolio.timesnet import TimesNetEncoder
from finfusion.samples.contract import NEWS_COVERAGE, NEWS_EMB, NEWS_MASK, PAST, PAST_MASK


class CGAPortfolio(nn.Module, Capabilities):
    """`past` [B, A, L, F] + `past_mask` [B, A, L] (+ `news_emb` [B, A, L, D], `news_mask` [B, A, L],
    `news_coverage` [B, A, L, A]) -> `logits` [B, A]."""

    inputs: ClassVar[frozenset[str]] = frozenset({PAST, PAST_MASK, NEWS_EMB, NEWS_MASK, NEWS_COVERAGE})
    outputs: ClassVar[frozenset[str]] = frozenset({"logits"})
    trainable: ClassVar[bool] = True

    def __init__(
        self,
        n_features: int,
        n_assets: int,
        context_length: int,
        text_dim: int = 384,
        d_model: int = 32,
        d_ff: int = 32,
        timesnet_layers: int = 1,
        top_k_periods: int = 2,
        n_kernels: int = 3,
        lstm_layers: int = 1,
        n_heads: int = 2,
        dropout: float = 0.1,
        use_news: bool = True,
    ) -> None:
        super().__init__()
        self.n_assets = n_assets
        self.use_news = use_news
        self.market = TimesNetEncoder(
            n_features, context_length, d_model, d_ff, timesnet_layers, top_k_periods, n_kernels, dropout
        )
        self.market_head = nn.Sequential(nn.GELU(), nn.Dropout(dropout), nn.Linear(context_length * d_model, d_model))
        self.news = NewsLSTM(text_dim, n_assets, d_model, lstm_layers, dropout) if use_news else None
        self.fusion = CrossGatedAttention(d_model, n_heads, dropout) if use_news else None
        self.head = nn.Linear(2 * d_model if use_news else d_model, 1)

    def required_inputs(self) -> frozenset[str]:
        """The price-only twin (use_news=False) reads `past` and `past_mask` only."""
        return type(self).inputs if self.use_news else frozenset({PAST, PAST_MASK})

    def held_choices(self, batch: dict[str, Tensor]) -> AbstractContextManager[None]:
        """Within, the market stream's TimesNet periods are those picked for `batch`'s series (`held_periods`)."""
        past, mask = batch[PAST], batch[PAST_MASK]
        return self.market.held_periods(past.flatten(0, 1), mask.flatten(0, 1))

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """batch (see the class docstring) -> {"logits": [B, A]}."""
        past, mask = batch[PAST], batch[PAST_MASK]
        size, assets, length, features = past.shape
        if assets != self.n_assets:
            raise ValueError(f"the model was built for {self.n_assets} assets, the batch has {assets}")
        hidden = self.market(past.reshape(size * assets, length, features), mask.reshape(size * assets, length))
        market = self.market_head(hidden.flatten(1)).view(size, assets, -1)  # [B, A, E]
        present = mask.any(dim=-1)  # [B, A]
        fused = market
        if self.news is not None and self.fusion is not None:
            news = self.news(batch[NEWS_EMB], batch[NEWS_MASK], batch[NEWS_COVERAGE])  # [B, A, E]
            news, market = self.fusion(news, market, present)
            fused = torch.cat([news, market], dim=-1)
        return {"logits": self.head(fused).squeeze(-1) * present}
