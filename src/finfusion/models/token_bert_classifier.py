"""A BERT encoder over price-action tokens with a sequence-classification head (Hugging Face
`BertForSequenceClassification`), fine-tuned on direction, volatility-regime or trend/range labels (seed 001).

`pretrained`: a tokens-family run folder (masked-LM pre-training): its encoder weights start this model (the
pooler and the classification head start fresh), and the sizes must match it (the same preset or sizes, and
`max_positions` its `max_len`); a mismatch is one line naming the tensor. Without it the encoder starts from its
seeded initialisation.

Batch: `tokens` [B, W] int64, `tokens_mask` [B, W] bool. Outputs: `logits` [B, K].
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from torch import Tensor, nn

from finfusion.errors import FinfusionError
from finfusion.models.base import Capabilities
from finfusion.models.token_bert import bert_config, load_pretrained_encoder
from finfusion.samples.contract import TOKENS, TOKENS_MASK

ENCODER_PREFIX = "bert.bert."


class TokenBertClassifier(nn.Module, Capabilities):
    """See the module docstring. `vocab_size`, `max_len` (the window) and `pad_id` come from the data."""

    inputs: ClassVar[frozenset[str]] = frozenset({TOKENS, TOKENS_MASK})
    outputs: ClassVar[frozenset[str]] = frozenset({"logits"})

    def __init__(
        self,
        vocab_size: int,
        max_len: int,
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
    ) -> None:
        super().__init__()
        from transformers import BertForSequenceClassification

        positions = max_positions or max_len
        if positions < max_len:
            raise FinfusionError(f"token_bert_classifier: max_positions {positions} is below the window {max_len}")
        sizes = {"hidden_size": hidden_size, "num_layers": num_layers, "num_heads": num_heads,
                 "intermediate_size": intermediate_size}  # fmt: skip
        config = bert_config(vocab_size, positions, pad_id, preset, sizes, dropout)
        config.num_labels = n_classes
        self.bert = BertForSequenceClassification(config)
        if pretrained is not None:
            load_pretrained_encoder(self, Path(pretrained), source_prefix=ENCODER_PREFIX, target_prefix=ENCODER_PREFIX)

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        out = self.bert(input_ids=batch[TOKENS], attention_mask=batch[TOKENS_MASK].long(), return_dict=True)
        return {"logits": out.logits}
