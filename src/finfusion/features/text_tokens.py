"""Token ids of texts by text id, for models that encode the text themselves (MiniLM + LoRA in the loop).

Shapes: U texts, S tokens (the longest tokenised text, at most `max_tokens`). Each text is its `document_text`
(title and body as embedded, features/text.py), tokenised once; samples gather the rows of the texts they see.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from transformers import PreTrainedTokenizerBase


@dataclass(frozen=True)
class TextTokens:
    """`row` {text id: row}, `ids` [U, S] int64 token ids and `mask` [U, S] bool (True on real tokens)."""

    row: dict[str, int]
    ids: np.ndarray
    mask: np.ndarray

    def gather(self, text_ids: Sequence[str], slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Token ids [K, S] and mask [K, S] of `text_ids` placed, in order, at the True positions of `slots` [K]
        (the sample's text mask); other slots are all-False."""
        ids = np.zeros((len(slots), self.ids.shape[1]), dtype=np.int64)
        mask = np.zeros((len(slots), self.ids.shape[1]), dtype=bool)
        for slot, text_id in zip(np.flatnonzero(slots), text_ids, strict=True):
            ids[slot], mask[slot] = self.ids[self.row[text_id]], self.mask[self.row[text_id]]
        return ids, mask


def tokenize_by_id(
    text_ids: Sequence[str], documents: Sequence[str], tokenizer: PreTrainedTokenizerBase, max_tokens: int
) -> TextTokens:
    """Tokenise `documents` [U] (one per id of `text_ids` [U]) with `tokenizer`, truncated to `max_tokens`."""
    encoded = tokenizer(
        list(documents) or [""], padding=True, truncation=True, max_length=max_tokens, return_tensors="np"
    )
    return TextTokens(
        row={text_id: k for k, text_id in enumerate(text_ids)},
        ids=encoded["input_ids"].astype(np.int64)[: len(documents)],
        mask=encoded["attention_mask"].astype(bool)[: len(documents)],
    )
