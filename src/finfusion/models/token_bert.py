"""A BERT encoder over price-action tokens (Brooks tokens or VQ codes) with a masked-LM head: Hugging Face
`BertForMaskedLM`, sized from the run's vocabulary (seed 001, the token track).

Presets: `cpu` (hidden 64, 2 layers, 2 heads, feed-forward 256: seconds per epoch on a laptop) and `gpu` (hidden
256, 4 layers, 4 heads, feed-forward 1,024); any of the sizes can be set directly. Positions: `max_len`, the longest
chunk of the samples.

Batch: `tokens` [B, L] int64, `tokens_mask` [B, L] bool, `labels` [B, L] int64 (-100 where not predicted).
Outputs: `logits` [B, L, V], `mlm_loss` [] (cross-entropy over the predicted positions).
"""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor, nn

from finfusion.errors import FinfusionError
from finfusion.models.base import Capabilities
from finfusion.samples.contract import LABELS, TOKENS, TOKENS_MASK

PRESETS: dict[str, dict[str, int]] = {
    "cpu": {"hidden_size": 64, "num_layers": 2, "num_heads": 2, "intermediate_size": 256},
    "gpu": {"hidden_size": 256, "num_layers": 4, "num_heads": 4, "intermediate_size": 1024},
}


class TokenBert(nn.Module, Capabilities):
    """See the module docstring. `vocab_size`, `max_len` and `pad_id` come from the data."""

    inputs: ClassVar[frozenset[str]] = frozenset({TOKENS, TOKENS_MASK, LABELS})
    outputs: ClassVar[frozenset[str]] = frozenset({"logits", "mlm_loss"})

    def __init__(
        self,
        vocab_size: int,
        max_len: int,
        pad_id: int = 0,
        preset: str = "cpu",
        hidden_size: int | None = None,
        num_layers: int | None = None,
        num_heads: int | None = None,
        intermediate_size: int | None = None,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        from transformers import BertConfig, BertForMaskedLM

        if preset not in PRESETS:
            raise FinfusionError(f"token_bert: unknown preset '{preset}'; known: {', '.join(PRESETS)}")
        given = {"hidden_size": hidden_size, "num_layers": num_layers, "num_heads": num_heads,
                 "intermediate_size": intermediate_size}  # fmt: skip
        sizes = {**PRESETS[preset], **{key: value for key, value in given.items() if value is not None}}
        if sizes["hidden_size"] % sizes["num_heads"]:
            raise FinfusionError(f"token_bert: hidden_size {sizes['hidden_size']} is not a multiple of num_heads")
        self.config = BertConfig(
            vocab_size=vocab_size,
            hidden_size=sizes["hidden_size"],
            num_hidden_layers=sizes["num_layers"],
            num_attention_heads=sizes["num_heads"],
            intermediate_size=sizes["intermediate_size"],
            max_position_embeddings=max_len,
            hidden_dropout_prob=dropout,
            attention_probs_dropout_prob=dropout,
            pad_token_id=pad_id,
            type_vocab_size=1,
        )
        self.bert = BertForMaskedLM(self.config)

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        out = self.bert(
            input_ids=batch[TOKENS], attention_mask=batch[TOKENS_MASK].long(), labels=batch[LABELS], return_dict=True
        )
        return {"logits": out.logits, "mlm_loss": out.loss}
