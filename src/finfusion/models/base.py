"""What every model declares: the batch keys it needs and the outputs it returns (capability flags).

Neural models are `nn.Module`s whose `forward(batch) -> dict[str, Tensor]` reads the keys of
`finfusion.samples.contract`. Outputs:

- `point`     [B, H, T]     point forecast of the (normalised) targets
- `quantiles` [B, H, T, Q]  forecast quantiles at `self.quantile_levels` [Q]
- `samples`   [B, S, H, T]  sampled paths
- `logits`    [B, K]        class scores (movement)
- `aux_loss`  []            a scalar the training task adds to its loss (e.g. MoE load balancing)

Statistical baselines that are not trained by gradient descent implement `fit(dataset)` and
`predict(batch) -> dict[str, Tensor]` with the same output names.
"""

from __future__ import annotations

from typing import ClassVar


class Capabilities:
    """Mixin of class-level flags read by the registry and the training tasks."""

    #: Batch keys the model reads (e.g. {"past", "past_mask"} or {"past", "text_emb", "text_mask"}).
    inputs: ClassVar[frozenset[str]] = frozenset({"past"})
    #: Output keys the model can return.
    outputs: ClassVar[frozenset[str]] = frozenset({"point"})
    #: False for baselines fitted in closed form (no optimiser, no checkpoint of gradients).
    trainable: ClassVar[bool] = True
