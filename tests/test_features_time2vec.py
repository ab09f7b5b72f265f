"""Time2Vec layer (finfusion.features.time2vec): shapes and the linear / periodic split."""

from __future__ import annotations

import pytest
import torch

from finfusion.features.time2vec import Time2Vec


@pytest.mark.parametrize("shape", [(2, 5), (2, 5, 1)])
def test_shapes(shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    out = Time2Vec(8)(torch.randn(*shape))
    assert out.shape == (2, 5, 8)


def test_first_component_is_linear_the_others_periodic_and_bounded() -> None:
    torch.manual_seed(0)
    layer = Time2Vec(4)
    t = torch.linspace(-50, 50, 101).reshape(1, 101)
    out = layer(t)
    steps = out[0, 1:, 0] - out[0, :-1, 0]
    assert torch.allclose(steps, steps[0].expand_as(steps), atol=1e-4)
    assert out[..., 1:].abs().max() <= 1.0
    period = 2 * torch.pi / layer.periodic.weight[0, 0]
    shifted = layer(t + period)
    assert torch.allclose(shifted[..., 1], out[..., 1], atol=1e-4)


def test_one_component_and_gradients() -> None:
    layer = Time2Vec(1)
    t = torch.ones(3, 4, requires_grad=True)
    out = layer(t)
    assert out.shape == (3, 4, 1)
    out.sum().backward()
    assert t.grad is not None and layer.linear.weight.grad is not None


def test_bad_input_is_rejected() -> None:
    with pytest.raises(ValueError, match="k >= 1"):
        Time2Vec(0)
    with pytest.raises(ValueError, match=r"\[B, L\]"):
        Time2Vec(3)(torch.zeros(2, 5, 2))
