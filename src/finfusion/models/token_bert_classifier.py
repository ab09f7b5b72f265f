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
from finfusion.models.token_bert import bert_config
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
            self._load_encoder(Path(pretrained))

    def _load_encoder(self, run: Path) -> None:
        from safetensors.torch import load_file

        path = run / "model.safetensors"
        if not path.is_file():
            raise FinfusionError(f"model.pretrained: {run} has no model.safetensors (train the masked-LM run first)")
        encoder = {key: value for key, value in load_file(str(path)).items() if key.startswith(ENCODER_PREFIX)}
        own = self.state_dict()
        for key, value in encoder.items():
            if key in own and own[key].shape != value.shape:
                raise FinfusionError(
                    f"model.pretrained: {key} is {tuple(value.shape)} in {run}, {tuple(own[key].shape)} here "
                    "(give this model the pre-trained run's sizes and max_positions)"
                )
        missing, unexpected = self.load_state_dict(encoder, strict=False)
        stray = [key for key in missing if key.startswith(ENCODER_PREFIX) and ".pooler." not in key]
        if stray or unexpected:
            raise FinfusionError(f"model.pretrained: {run} does not hold this encoder ({(stray + unexpected)[:3]})")

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        out = self.bert(input_ids=batch[TOKENS], attention_mask=batch[TOKENS_MASK].long(), return_dict=True)
        return {"logits": out.logits}
