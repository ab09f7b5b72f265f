"""Fusion of price-action tokens with the continuous price window of the same bars and, optionally, the news known at
the decision bar (seed 001, the fusion model): two towers joined by gated cross-attention adapters
(models/gated_cross_attention.py).

Shapes: B batch, W tokens, D the BERT width, L bars, C price channels, P patches, E the price tower's width, N texts,
T the text embedding width, K classes.

    tokens [B, W] -> BERT encoder -> h [B, W, D]                                      (the token tower)
    past [B, L, C] -> RevIN -> PatchTST encoder -> [B, C, P, E] + channel embedding [C, E]
                   -> Linear E -> D -> prices [B, C * P, D] (a patch without an observed bar is masked)
    h <- h + tanh(a_p) * Attention(LN(h), LN(prices))                                 (price adapter)
    h <- h + tanh(a_n) * Attention(LN(h), LN(Linear T -> D (text_emb [B, N, T])))     (news adapter, `news: true`;
                                                                                       text_mask [B, N]; a window
                                                                                       without texts: no update)
    logits [B, K] = Linear(dropout(BERT pooler(h)))                                   (the classifier's head)

Every token state attends to every patch of every channel (and every text), so the news is pooled per token by its
attention, and the gates a_p, a_n [D] start near closed (`gate_init`): at initialisation the model is, up to a small
perturbation, the token classifier (token_bert_classifier) with the same weights, and it learns how much of the
prices and the news to mix in. `pretrained`: a tokens-family run whose BERT encoder starts the token tower (as
token_bert_classifier; the sizes must match it). The price tower's sizes are `price_*`.

Batch: `tokens` [B, W], `tokens_mask` [B, W], `past` [B, L, C], `past_mask` [B, L], and with `news` `text_emb`
[B, N, T], `text_mask` [B, N]. Outputs: `logits` [B, K].
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import torch
from torch import Tensor, nn

from finfusion.errors import FinfusionError
from finfusion.models.base import Capabilities
from finfusion.models.gated_cross_attention import GatedCrossAttention
from finfusion.models.patchtst import PatchTSTTower
from finfusion.models.token_bert import bert_config, load_pretrained_encoder
from finfusion.samples.contract import PAST, PAST_MASK, TEXT_EMB, TEXT_MASK, TOKENS, TOKENS_MASK

NEWS_INPUTS = frozenset({TEXT_EMB, TEXT_MASK})


class TokenFusion(nn.Module, Capabilities):
    """See the module docstring. `vocab_size`, `max_len` (the window), `pad_id`, `n_channels`, `context_length` and,
    with texts, `text_dim` come from the data."""

    inputs: ClassVar[frozenset[str]] = frozenset({TOKENS, TOKENS_MASK, PAST, PAST_MASK}) | NEWS_INPUTS
    outputs: ClassVar[frozenset[str]] = frozenset({"logits"})

    def __init__(
        self,
        vocab_size: int,
        max_len: int,
        n_channels: int,
        context_length: int,
        pad_id: int = 0,
        n_classes: int = 2,
        preset: str = "cpu",
        hidden_size: int | None = None,
        num_layers: int | None = None,
        num_heads: int | None = None,
        intermediate_size: int | None = None,
        dropout: float = 0.1,
        max_positions: int | None = None,
        pretrained: str | None = None,
        patch_len: int = 8,
        stride: int = 8,
        price_d_model: int = 32,
        price_heads: int = 2,
        price_layers: int = 1,
        price_d_ff: int = 64,
        news: bool = False,
        text_dim: int | None = None,
        gate_init: float = 0.01,
    ) -> None:
        super().__init__()
        from transformers import BertModel

        positions = max_positions or max_len
        if positions < max_len:
            raise FinfusionError(f"token_fusion: max_positions {positions} is below the window {max_len}")
        if news and text_dim is None:
            raise FinfusionError(
                "model 'token_fusion' reads 'text_emb' (news: true), which this experiment's samples do not carry "
                "(data.texts.enabled: true adds the texts known at each decision bar)"
            )
        sizes = {"hidden_size": hidden_size, "num_layers": num_layers, "num_heads": num_heads,
                 "intermediate_size": intermediate_size}  # fmt: skip
        config = bert_config(vocab_size, positions, pad_id, preset, sizes, dropout)
        width, heads = config.hidden_size, config.num_attention_heads
        self.news = news
        self.bert = BertModel(config, add_pooling_layer=True)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(width, n_classes)
        self.prices = PatchTSTTower(n_channels, context_length, patch_len, stride, price_d_model, price_heads,
                                    price_layers, price_d_ff, dropout)  # fmt: skip
        self.channel_embedding = nn.Parameter(torch.empty(n_channels, price_d_model).uniform_(-0.02, 0.02))
        self.price_projection = nn.Linear(price_d_model, width)
        self.price_adapter = GatedCrossAttention(width, heads, dropout, gate_init)
        self.news_projection = nn.Linear(text_dim, width) if news and text_dim is not None else None
        self.news_adapter = GatedCrossAttention(width, heads, dropout, gate_init) if news else None
        if pretrained is not None:
            load_pretrained_encoder(self, Path(pretrained), source_prefix="bert.bert.", target_prefix="bert.")

    def required_inputs(self) -> frozenset[str]:
        return self.inputs if self.news else self.inputs - NEWS_INPUTS

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        states = self.bert(input_ids=batch[TOKENS], attention_mask=batch[TOKENS_MASK].long()).last_hidden_state
        patches, patch_mask = self.prices(batch[PAST], batch.get(PAST_MASK))  # [B, C, P, E], [B, P]
        prices = self.price_projection(patches + self.channel_embedding[:, None, :]).flatten(1, 2)  # [B, C * P, D]
        price_mask = patch_mask[:, None, :].expand(-1, patches.shape[1], -1).flatten(1)  # [B, C * P]
        states = self.price_adapter(states, prices, price_mask)
        if self.news_adapter is not None and self.news_projection is not None:
            states = self.news_adapter(states, self.news_projection(batch[TEXT_EMB]), batch[TEXT_MASK])
        return {"logits": self.classifier(self.dropout(self.bert.pooler(states)))}
