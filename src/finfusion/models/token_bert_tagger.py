"""A BERT encoder over price-action tokens with a CRF tagging head (pytorch-crf): one tag per bar of the window,
decoded as the most likely path of tags (Viterbi) (seed 001, per-bar pattern tagging).

    tokens [B, W] -> BertModel -> hidden [B, W, E] -> Linear -> emissions [B, W, K] -> CRF

`forbidden`: pairs [a, b] of tags that may not follow each other (e.g. two swing highs on adjacent bars); decoding
never returns them. `pretrained`: a tokens-family run whose encoder starts this one (as token_bert_classifier).

Batch: `tokens` [B, W], `tokens_mask` [B, W], and for training `tags` [B, W] (-1 unknown: left out of the
likelihood). Outputs: `logits` [B, W, K] (the emissions) and, with tags, `crf_loss` [] (negative log-likelihood
per tagged bar).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import torch
from torch import Tensor, nn

from finfusion.errors import FinfusionError
from finfusion.models.base import Capabilities
from finfusion.models.token_bert import bert_config, load_pretrained_encoder
from finfusion.samples.contract import TAGS, TOKENS, TOKENS_MASK

#: A transition score no path takes.
FORBIDDEN_SCORE = -1e4


class TokenBertTagger(nn.Module, Capabilities):
    """See the module docstring. `vocab_size`, `max_len` (the window) and `pad_id` come from the data."""

    inputs: ClassVar[frozenset[str]] = frozenset({TOKENS, TOKENS_MASK})
    outputs: ClassVar[frozenset[str]] = frozenset({"logits", "crf_loss"})

    def __init__(
        self,
        vocab_size: int,
        max_len: int,
        pad_id: int = 0,
        n_tags: int = 3,
        forbidden: Sequence[Sequence[int]] = ((1, 1), (2, 2)),
        preset: str = "cpu",
        hidden_size: int | None = None,
        num_layers: int | None = None,
        num_heads: int | None = None,
        intermediate_size: int | None = None,
        dropout: float = 0.1,
        max_positions: int | None = None,
        pretrained: str | None = None,
    ) -> None:
        super().__init__()
        from torchcrf import CRF
        from transformers import BertModel

        sizes = {"hidden_size": hidden_size, "num_layers": num_layers, "num_heads": num_heads,
                 "intermediate_size": intermediate_size}  # fmt: skip
        config = bert_config(vocab_size, max_positions or max_len, pad_id, preset, sizes, dropout)
        self.bert = BertModel(config, add_pooling_layer=False)
        self.emissions = nn.Linear(config.hidden_size, n_tags)
        self.crf = CRF(n_tags, batch_first=True)
        penalty = torch.zeros(n_tags, n_tags)
        for pair in forbidden:
            a, b = (int(x) for x in pair)
            if not (0 <= a < n_tags and 0 <= b < n_tags):
                raise FinfusionError(f"token_bert_tagger: forbidden transition {list(pair)} outside {n_tags} tags")
            penalty[a, b] = FORBIDDEN_SCORE
        self.register_buffer("penalty", penalty, persistent=False)
        if pretrained is not None:
            load_pretrained_encoder(self, Path(pretrained), source_prefix="bert.bert.", target_prefix="bert.")

    def _emissions(self, batch: dict[str, Tensor]) -> Tensor:
        hidden = self.bert(input_ids=batch[TOKENS], attention_mask=batch[TOKENS_MASK].long()).last_hidden_state
        return self.emissions(hidden)

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        emissions = self._emissions(batch)
        out = {"logits": emissions}
        if TAGS in batch:
            tags = batch[TAGS]
            known = (tags >= 0) & batch[TOKENS_MASK]
            # the CRF needs its first step on: a window whose first tag is unknown is left out
            rows = known[:, 0]
            if rows.any():
                out["crf_loss"] = -self.crf(emissions[rows], tags[rows].clamp_min(0), mask=known[rows],
                                            reduction="token_mean")  # fmt: skip
            else:
                out["crf_loss"] = emissions.sum() * 0.0
        return out

    def decode(self, batch: dict[str, Tensor]) -> list[list[int]]:
        """The most likely tag path of each window (Viterbi), never through a forbidden transition."""
        emissions = self._emissions(batch)
        with torch.no_grad():
            learned = self.crf.transitions.data.clone()
            self.crf.transitions.data += self.penalty
            try:
                return self.crf.decode(emissions, mask=batch[TOKENS_MASK])
            finally:
                self.crf.transitions.data.copy_(learned)
