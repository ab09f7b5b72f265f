"""`MoiraiModule`: packed tokens in, the predictive mixture of every value out. Knows nothing of training.

Shapes: B rows, N tokens per row, P = P_max (the largest patch size), D width. A token is one patch of one variate
of one sample: `target` [B, N, P] its values (left-aligned, padded to P), `observed` [B, N, P] which of them exist,
`sample_id` [B, N] (0 = padding; samples packed in a row have distinct ids), `time_id` [B, N] the patch's position
in time, `variate_id` [B, N], `prediction_mask` [B, N] the patches to forecast, `patch_size` [B, N].

1. Each (sample, variate) series is standardised by the statistics of its observed, not-forecast values.
2. Patches are projected to D by the weight of their patch size.
3. Patches to forecast are replaced by the learned mask embedding (the masked encoder: the model never sees them).
4. The any-variate encoder mixes all tokens of a sample.
5. The mixture head gives a distribution per value, mapped back to the series' units.

Parameter names follow the published checkpoints (`mask_encoding`, `in_proj`, `encoder`, `param_proj`).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from finfusion.models.moirai.distribution import DEFAULT_COMPONENTS, FIXED_SCALE, MixtureHead, PatchMixture
from finfusion.models.moirai.encoder import Encoder
from finfusion.models.moirai.projections import MultiSizeInput
from finfusion.models.moirai.scaler import packed_std_scale


class MoiraiModule(nn.Module):
    """`max_seq_len` is the checkpoint's number of time positions: part of its published config, kept for the
    forecaster's token budget; rotary positions are computed for any time id, so the module itself needs no table."""

    def __init__(
        self,
        d_model: int,
        num_layers: int,
        patch_sizes: Sequence[int] = (8, 16, 32, 64, 128),
        max_seq_len: int = 512,
        attn_dropout_p: float = 0.0,
        dropout_p: float = 0.0,
        scaling: bool = True,
        components: Sequence[str] = DEFAULT_COMPONENTS,
        fixed_scale: float = FIXED_SCALE,
    ) -> None:
        super().__init__()
        del max_seq_len  # see the class docstring
        self.d_model = d_model
        self.patch_sizes = tuple(int(p) for p in patch_sizes)
        self.scaling = scaling
        self.mask_encoding = nn.Embedding(1, d_model)
        self.in_proj = MultiSizeInput(self.patch_sizes, d_model)
        self.encoder = Encoder(d_model, num_layers, dropout_p, attn_dropout_p)
        self.param_proj = MixtureHead(d_model, self.patch_sizes, components, fixed_scale)

    def forward(
        self,
        target: Tensor,
        observed: Tensor,
        sample_id: Tensor,
        time_id: Tensor,
        variate_id: Tensor,
        prediction_mask: Tensor,
        patch_size: Tensor,
    ) -> PatchMixture:
        """The mixture of every value of every token [B, N, P]."""
        reprs, loc, scale = self.encode(target, observed, sample_id, time_id, variate_id, prediction_mask, patch_size)
        return self.param_proj(reprs, patch_size, loc, scale)

    def predictive(
        self,
        target: Tensor,
        observed: Tensor,
        sample_id: Tensor,
        time_id: Tensor,
        variate_id: Tensor,
        prediction_mask: Tensor,
        patch_size: Tensor,
        width: int,
    ) -> PatchMixture:
        """The mixture of the forecast tokens only (`prediction_mask`, in row-major order, all of patch size
        `width`), as one row [1, M, width]: what training and forecasting need, at a fraction of the head's cost."""
        reprs, loc, scale = self.encode(target, observed, sample_id, time_id, variate_id, prediction_mask, patch_size)
        keep = prediction_mask
        return self.param_proj(reprs[keep][None], patch_size[keep][None], loc[keep][None], scale[keep][None], width)

    def encode(
        self,
        target: Tensor,
        observed: Tensor,
        sample_id: Tensor,
        time_id: Tensor,
        variate_id: Tensor,
        prediction_mask: Tensor,
        patch_size: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Steps 1-4: (representations [B, N, D], loc [B, N, 1], scale [B, N, 1])."""
        if self.scaling:
            loc, scale = packed_std_scale(target, observed & ~prediction_mask[..., None], sample_id, variate_id)
        else:
            loc, scale = target.new_zeros(*target.shape[:-1], 1), target.new_ones(*target.shape[:-1], 1)
        reprs = self.in_proj((target - loc) / scale, patch_size)
        masked = prediction_mask[..., None]
        reprs = reprs * ~masked + self.mask_encoding.weight[0] * masked
        attention_mask = sample_id[:, :, None] == sample_id[:, None, :]
        return self.encoder(reprs, attention_mask, variate_id, time_id), loc, scale
