"""Moirai's predictive distribution: a mixture per value, its head and its negative log-likelihood.

Shapes: B rows, N tokens, P = P_max positions per token, K components, S samples. Each value of a patch gets a
mixture of K components whose parameters come from the token's representation (one projection per patch size and
parameter); the mixture lives in the scaled units of the series and is mapped back by the token's loc / scale
(log-density minus log scale). Components, with the published checkpoints' parameter maps:

- `student_t`:          df = 2 + softplus, loc, scale = softplus (heavy tails)
- `normal_fixed_scale`: loc, scale fixed (1e-3: a low-variance normal for near-constant series)
- `negative_binomial`:  total_count = softplus, logits (counts, on values >= 0)
- `log_normal`:         loc, scale = softplus (positive, right-skewed values, on values > 0)
- `normal`:             loc, scale = softplus

A component whose support excludes a value gives it density 0 (log -inf) and the others carry it; the mixture never
excludes a real value because the Student-t is always in it. The component densities and samplers are
torch.distributions'; the mixture, its support handling and the packed loss are written here because the mixture
weights and the supports must be handled per value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Distribution, LogNormal, NegativeBinomial, Normal, StudentT

from finfusion.models.moirai.projections import MultiSizeOutput
from finfusion.models.moirai.scaler import group_index, group_sums

#: Component name -> its raw parameters, in the published checkpoints' order.
COMPONENT_PARAMETERS: dict[str, tuple[str, ...]] = {
    "student_t": ("df", "loc", "scale"),
    "normal_fixed_scale": ("loc",),
    "negative_binomial": ("total_count", "logits"),
    "log_normal": ("loc", "scale"),
    "normal": ("loc", "scale"),
}
#: Moirai 1.x's mixture.
DEFAULT_COMPONENTS = ("student_t", "normal_fixed_scale", "negative_binomial", "log_normal")
FIXED_SCALE = 1e-3


def _positive(raw: Tensor) -> Tensor:
    return F.softplus(raw).clamp_min(torch.finfo(raw.dtype).eps)


def component_parameters(name: str, raw: Mapping[str, Tensor], fixed_scale: float) -> dict[str, Tensor]:
    """Raw projections [..] of component `name` -> its distribution's parameters."""
    if name == "student_t":
        return {"df": 2.0 + F.softplus(raw["df"]), "loc": raw["loc"], "scale": _positive(raw["scale"])}
    if name == "normal_fixed_scale":
        return {"loc": raw["loc"], "scale": torch.full_like(raw["loc"], fixed_scale)}
    if name == "negative_binomial":
        return {"total_count": F.softplus(raw["total_count"]), "logits": raw["logits"]}
    if name in ("log_normal", "normal"):
        return {"loc": raw["loc"], "scale": _positive(raw["scale"])}
    raise ValueError(f"unknown mixture component {name!r}; known: {', '.join(COMPONENT_PARAMETERS)}")


def _torch_distribution(name: str, params: Mapping[str, Tensor]) -> Distribution:
    if name == "student_t":
        return StudentT(params["df"], params["loc"], params["scale"], validate_args=False)
    if name in ("normal_fixed_scale", "normal"):
        return Normal(params["loc"], params["scale"], validate_args=False)
    if name == "negative_binomial":
        return NegativeBinomial(params["total_count"], logits=params["logits"], validate_args=False)
    return LogNormal(params["loc"], params["scale"], validate_args=False)


def _in_support(name: str, value: Tensor) -> Tensor | None:
    """Where `value` is in the component's support (None: everywhere)."""
    if name == "negative_binomial":
        return value >= 0
    if name == "log_normal":
        return value > 0
    return None


@dataclass
class PatchMixture:
    """The predictive mixture of every value [B, N, P]: log_weights [B, N, P, K], per component its parameters
    [B, N, P], and the affine map loc / scale [B, N, 1] back to the series' units."""

    components: tuple[str, ...]
    log_weights: Tensor
    parameters: tuple[dict[str, Tensor], ...]
    loc: Tensor
    scale: Tensor

    def log_prob(self, value: Tensor) -> Tensor:
        """Log-density [B, N, P] of values [B, N, P] in the series' units."""
        scaled = (value - self.loc) / self.scale
        parts = []
        for name, params in zip(self.components, self.parameters, strict=True):
            support = _in_support(name, scaled)
            safe = scaled if support is None else torch.where(support, scaled, torch.ones_like(scaled))
            log_density = _torch_distribution(name, params).log_prob(safe)
            if support is not None:
                log_density = log_density.masked_fill(~support, float("-inf"))
            parts.append(log_density)
        mixed = torch.logsumexp(torch.stack(parts, dim=-1) + self.log_weights, dim=-1)
        return mixed - torch.log(self.scale)

    def mean(self) -> Tensor:
        """The mean [B, N, P] of each value's mixture in the series' units: the components' means weighed by the
        mixture's weights, deterministic and differentiable (the expectation of `sample`'s draws, which draw from
        every component whatever its support)."""
        means = torch.stack(
            [
                _torch_distribution(name, params).mean
                for name, params in zip(self.components, self.parameters, strict=True)
            ],
            dim=-1,
        )  # [B, N, P, K], in the scaled units
        return (self.log_weights.exp() * means).sum(dim=-1) * self.scale + self.loc

    def sample(self, count: int) -> Tensor:
        """`count` draws [S, B, N, P] in the series' units (torch's global generator)."""
        shape = torch.Size((count,))
        draws = torch.stack(
            [
                _torch_distribution(name, params).sample(shape)
                for name, params in zip(self.components, self.parameters, strict=True)
            ],
            dim=-1,
        )  # [S, B, N, P, K]
        choice = torch.distributions.Categorical(logits=self.log_weights, validate_args=False).sample(shape)
        picked = draws.gather(-1, choice.unsqueeze(-1)).squeeze(-1)
        return picked * self.scale + self.loc


class MixtureHead(nn.Module):
    """Token representations [B, N, D] and patch sizes [B, N] -> `PatchMixture` (the published `param_proj`)."""

    def __init__(
        self,
        d_model: int,
        patch_sizes: Sequence[int],
        components: Sequence[str] = DEFAULT_COMPONENTS,
        fixed_scale: float = FIXED_SCALE,
    ) -> None:
        super().__init__()
        unknown = [name for name in components if name not in COMPONENT_PARAMETERS]
        if unknown or not components:
            raise ValueError(f"mixture components {list(components)}: known are {', '.join(COMPONENT_PARAMETERS)}")
        self.components = tuple(components)
        self.fixed_scale = fixed_scale
        self.proj = nn.ModuleDict(
            {
                "weights_logits": MultiSizeOutput(d_model, patch_sizes, len(self.components)),
                "components": nn.ModuleList(
                    nn.ModuleDict(
                        {param: MultiSizeOutput(d_model, patch_sizes, 1) for param in COMPONENT_PARAMETERS[c]}
                    )
                    for c in self.components
                ),
            }
        )

    def forward(
        self, reprs: Tensor, patch_size: Tensor, loc: Tensor, scale: Tensor, width: int | None = None
    ) -> PatchMixture:
        """With `width` (the patch size of every token) the mixture of only the first `width` values of each."""
        logits = self.proj["weights_logits"](reprs, patch_size, width)  # [B, N, P, K]
        parameters = []
        for name, projections in zip(self.components, self.proj["components"], strict=True):
            raw = {param: layer(reprs, patch_size, width).squeeze(-1) for param, layer in projections.items()}
            parameters.append(component_parameters(name, raw, self.fixed_scale))
        return PatchMixture(self.components, torch.log_softmax(logits, dim=-1), tuple(parameters), loc, scale)


def packed_nll(
    distribution: PatchMixture,
    target: Tensor,
    prediction_mask: Tensor,
    observed: Tensor,
    sample_id: Tensor,
    variate_id: Tensor,
) -> Tensor:
    """Mean over (sample, variate) series with prediction tokens of the mean negative log-likelihood of their
    observed predicted values; target / observed [B, N, P], the rest [B, N]. Packing samples into rows does not
    change it (the loss is per series, never per row)."""
    counted = prediction_mask[..., None] & observed
    nll = -distribution.log_prob(target).masked_fill(~counted, 0.0)
    groups, count = group_index(sample_id, variate_id)
    values = group_sums(counted.sum(-1).to(nll.dtype), groups, count)
    totals = group_sums(nll.sum(-1), groups, count)
    predicted = group_sums(prediction_mask.to(nll.dtype), groups, count) > 0
    per_series = totals / torch.where(values == 0, 1.0, values)
    series = predicted.sum()
    return per_series[predicted].sum() / series.clamp_min(1)
