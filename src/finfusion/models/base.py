"""What every model declares: the batch keys it needs and the outputs it returns (capability flags).

Neural models are `nn.Module`s whose `forward(batch) -> dict[str, Tensor]` reads the keys of
`finfusion.samples.contract`. Outputs:

- `point`     [B, H, T]     point forecast of the (normalised) targets
- `quantiles` [B, H, T, Q]  forecast quantiles at `self.quantile_levels` [Q]
- `samples`   [B, S, H, T]  sampled paths
- `logits`    [B, K]        class scores (movement)
- `latent`    [B, E]        the representation a class head reads (`classify(latent)` -> `logits`; adversarial training)
- `aux_loss`  []            a scalar the training task adds to its loss (e.g. MoE load balancing)

Statistical baselines that are not trained by gradient descent implement `fit(dataset)` and
`predict(batch) -> dict[str, Tensor]` with the same output names.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any, ClassVar

from finfusion.errors import FinfusionError

if TYPE_CHECKING:
    from torch import Tensor


class Capabilities:
    """Mixin of class-level flags read by the registry and the training tasks."""

    #: Batch keys the model reads (e.g. {"past", "past_mask"} or {"past", "text_emb", "text_mask"}).
    inputs: ClassVar[frozenset[str]] = frozenset({"past"})
    #: Output keys the model can return.
    outputs: ClassVar[frozenset[str]] = frozenset({"point"})
    #: False for baselines fitted in closed form (no optimiser, no checkpoint of gradients).
    trainable: ClassVar[bool] = True

    def required_inputs(self) -> frozenset[str]:
        """The batch keys this instance reads (its class's `inputs`; a model whose settings decide, e.g. whether it
        reads text, narrows them). The builder checks them against the samples' keys."""
        return type(self).inputs

    def explained_output(self, batch: dict[str, Tensor]) -> Tensor:
        """A deterministic scalar per sample [B] that explanations attribute (evaluation/explain.py): the point
        forecast of the first target summed over the horizon, or the up-minus-down class score of a classifier.
        Models whose forward samples override it with their deterministic part."""
        outputs = self(batch)  # type: ignore[operator]
        if "point" in outputs:
            return outputs["point"][..., 0].sum(dim=1)
        if "logits" in outputs:
            return outputs["logits"][:, -1] - outputs["logits"][:, 0]
        raise FinfusionError(f"{type(self).__name__} returns neither a point forecast nor class scores to explain")

    def held_choices(self, batch: dict[str, Tensor]) -> AbstractContextManager[None]:
        """A context within which the model's discrete choices (e.g. TimesNet's periods) are those it makes for
        `batch` [B0, ...], also on batches that repeat it (the steps of an attribution path): its output is then
        smooth along a path from a baseline to `batch`, and equal to its output at `batch`. None are held by default."""
        del batch
        return nullcontext()

    def stored_options(self) -> dict[str, Any]:
        """Model-part settings a run folder stores in place of the config's (e.g. the architecture read from a
        checkpoint folder), so that the run rebuilds the model from its own files; none by default."""
        return {}


def target_positions(target_index: Sequence[int] | None, n_channels: int) -> list[int]:
    """The positions [T] of the target channels among a model's `n_channels` inputs (all of them when None).

    Raises FinfusionError when the list is empty or a position is out of range."""
    targets = list(range(n_channels)) if target_index is None else [int(i) for i in target_index]
    if not targets or min(targets) < 0 or max(targets) >= n_channels:
        raise FinfusionError(f"target_index {targets} out of range for {n_channels} input channels")
    return targets
