"""A BERT encoder over price-action tokens (Brooks tokens or VQ codes) with a masked-LM head: Hugging Face
`BertForMaskedLM`, sized from the run's vocabulary (seed 001, the token track).

Presets: `cpu` (hidden 64, 2 layers, 2 heads, feed-forward 256: seconds per epoch on a laptop) and `gpu` (hidden
256, 4 layers, 4 heads, feed-forward 1,024); any of the sizes can be set directly. Positions: `max_len`, the longest
chunk of the samples.

Batch: `tokens` [B, L] int64, `tokens_mask` [B, L] bool, `labels` [B, L] int64 (-100 where not predicted).
Outputs: `logits` [B, L, V], `mlm_loss` [] (cross-entropy over the predicted positions).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from torch import Tensor, nn

from finfusion.errors import FinfusionError
from finfusion.models.base import Capabilities
from finfusion.samples.contract import LABELS, TOKENS, TOKENS_MASK

PRESETS: dict[str, dict[str, int]] = {
    "cpu": {"hidden_size": 64, "num_layers": 2, "num_heads": 2, "intermediate_size": 256},
    "gpu": {"hidden_size": 256, "num_layers": 4, "num_heads": 4, "intermediate_size": 1024},
}


def bert_config(
    vocab_size: int, positions: int, pad_id: int, preset: str, sizes: dict[str, int | None], dropout: float
) -> Any:
    """A `BertConfig` from a preset, with the sizes given (not None) replacing the preset's."""
    from transformers import BertConfig

    if preset not in PRESETS:
        raise FinfusionError(f"token_bert: unknown preset '{preset}'; known: {', '.join(PRESETS)}")
    chosen = {**PRESETS[preset], **{key: value for key, value in sizes.items() if value is not None}}
    if chosen["hidden_size"] % chosen["num_heads"]:
        raise FinfusionError(f"token_bert: hidden_size {chosen['hidden_size']} is not a multiple of num_heads")
    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=chosen["hidden_size"],
        num_hidden_layers=chosen["num_layers"],
        num_attention_heads=chosen["num_heads"],
        intermediate_size=chosen["intermediate_size"],
        max_position_embeddings=positions,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
        pad_token_id=pad_id,
        type_vocab_size=1,
    )


def load_pretrained_encoder(module: nn.Module, run: Path, source_prefix: str, target_prefix: str) -> None:
    """Load the BERT encoder of a tokens-family run (`run`/model.safetensors, keys under `source_prefix`) into
    `module` (keys under `target_prefix`); a shape mismatch or a missing encoder tensor is one line naming it."""
    from safetensors.torch import load_file

    path = run / "model.safetensors"
    if not path.is_file():
        raise FinfusionError(f"model.pretrained: {run} has no model.safetensors (train the masked-LM run first)")
    encoder = {
        target_prefix + key.removeprefix(source_prefix): value
        for key, value in load_file(str(path)).items()
        if key.startswith(source_prefix)
    }
    own = module.state_dict()
    for key, value in encoder.items():
        if key in own and own[key].shape != value.shape:
            raise FinfusionError(
                f"model.pretrained: {key} is {tuple(value.shape)} in {run}, {tuple(own[key].shape)} here "
                "(give this model the pre-trained run's sizes and max_positions)"
            )
    missing, unexpected = module.load_state_dict(encoder, strict=False)
    stray = [key for key in missing if key.startswith(target_prefix) and ".pooler." not in key]
    if stray or unexpected:
        raise FinfusionError(f"model.pretrained: {run} does not hold this encoder ({(stray + unexpected)[:3]})")


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
        from transformers import BertForMaskedLM

        sizes = {"hidden_size": hidden_size, "num_layers": num_layers, "num_heads": num_heads,
                 "intermediate_size": intermediate_size}  # fmt: skip
        self.bert = BertForMaskedLM(bert_config(vocab_size, max_len, pad_id, preset, sizes, dropout))

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        out = self.bert(
            input_ids=batch[TOKENS], attention_mask=batch[TOKENS_MASK].long(), labels=batch[LABELS], return_dict=True
        )
        return {"logits": out.logits, "mlm_loss": out.loss}
