"""InfoNCE alignment of the two modalities (CLIP-style): each sample's price latent should pick out its own news.

Shapes: B batch, D_ts / D_text latent widths, E shared embedding width. Pooled latents of each modality are projected
to E and L2-normalised; the logits are cosine similarities over a learned temperature (initialised at 0.07, as in
CLIP, with the logit scale capped at 100). The loss is the mean of the two cross-entropies (price -> text and
text -> price) with the matching sample as the positive and the rest of the batch as negatives, over the samples
that have at least one text; it is 0 when fewer than two samples do.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

MAX_LOGIT_SCALE = 100.0


def info_nce(a: Tensor, b: Tensor, logit_scale: Tensor) -> Tensor:
    """Symmetric InfoNCE of normalised embeddings a [M, E] and b [M, E] (row i of each is a positive pair) -> []."""
    logits = logit_scale * a @ b.T
    target = torch.arange(a.shape[0], device=a.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


class ContrastiveAlignment(nn.Module):
    """Projection heads and temperature: pooled ts [B, D_ts], pooled text [B, D_text], has_text [B] -> loss []."""

    def __init__(self, ts_dim: int, text_dim: int, dim: int = 128, temperature: float = 0.07) -> None:
        super().__init__()
        self.ts_head = nn.Linear(ts_dim, dim)
        self.text_head = nn.Linear(text_dim, dim)
        self.log_scale = nn.Parameter(torch.tensor(math.log(1.0 / temperature)))

    def forward(self, ts: Tensor, text: Tensor, has_text: Tensor) -> Tensor:
        """ts [B, D_ts], text [B, D_text], has_text [B] bool -> InfoNCE over the samples with text []."""
        if int(has_text.sum()) < 2:
            return ts.sum() * 0.0
        a = F.normalize(self.ts_head(ts[has_text]), dim=-1)
        b = F.normalize(self.text_head(text[has_text]), dim=-1)
        return info_nce(a, b, self.log_scale.exp().clamp(max=MAX_LOGIT_SCALE))
