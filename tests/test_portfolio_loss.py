"""Seed 002's portfolio objective: top-k long/short weights, Sharpe over the horizon and the three regularisers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from finfusion.errors import FinfusionError
from finfusion.evaluation.sizing import top_k_abs_weights as numpy_top_k_abs_weights
from finfusion.samples.contract import FUTURE, ORIGIN_US
from finfusion.training.portfolio_loss import (
    PortfolioLoss,
    distribution_penalty,
    net_exposure_penalty,
    portfolio_loss_terms,
    portfolio_returns,
    sharpe,
    top_k_abs_weights,
    turnover_penalty,
)


def test_top_k_weights_on_a_hand_case() -> None:
    logits = torch.tensor([[0.5, -2.0, 1.0, 0.1], [0.0, 0.0, 0.0, 0.0]])
    weights = top_k_abs_weights(logits, 2)
    assert torch.allclose(weights[0], torch.tensor([0.0, -2.0 / 3.0, 1.0 / 3.0, 0.0]))
    assert torch.equal(weights[1], torch.zeros(4))


@settings(max_examples=200, deadline=None)
@given(
    logits=arrays(np.float32, st.tuples(st.integers(1, 4), st.integers(1, 9)), elements=st.sampled_from(
        [-3.0, -1.5, -1.0, -0.25, 0.0, 0.25, 1.0, 1.5, 3.0, 0.7]
    )) | arrays(np.float32, st.tuples(st.integers(1, 4), st.integers(1, 9)), elements=st.floats(-1e3, 1e3, width=32)),
    k=st.integers(1, 10),
)  # fmt: skip
def test_top_k_weights_keep_the_k_largest_magnitudes_with_their_signs(logits: np.ndarray, k: int) -> None:
    weights = top_k_abs_weights(torch.from_numpy(logits), k).numpy()
    kept = weights != 0
    assert (kept.sum(axis=1) <= k).all()
    assert (np.sign(weights[kept]) == np.sign(logits[kept])).all()
    for row, w in zip(logits, weights, strict=True):
        if np.abs(row).max() > 0:
            assert np.abs(w).sum() == pytest.approx(1.0, abs=1e-5)
            smallest_kept = np.abs(row[w != 0]).min()
            assert (np.abs(row[w == 0]) <= smallest_kept).all()
            assert np.allclose(w[w != 0] * np.abs(row[w != 0]).sum(), row[w != 0], rtol=1e-5, atol=1e-4)
        else:
            assert (w == 0).all()
    assert np.allclose(weights, numpy_top_k_abs_weights(logits.astype(np.float64), k), atol=1e-6)


def test_gradients_reach_only_the_selected_logits() -> None:
    logits = torch.tensor([[0.5, -2.0, 1.0, 0.1]], requires_grad=True)
    top_k_abs_weights(logits, 2)[0, 2].backward()
    assert logits.grad is not None
    assert logits.grad[0, 0] == 0 and logits.grad[0, 3] == 0
    assert logits.grad[0, 2] != 0 and logits.grad[0, 1] != 0


def test_sharpe_of_the_portfolio_over_the_horizon_by_hand() -> None:
    weights = torch.tensor([[0.5, -0.5]])
    returns = torch.tensor([[[0.02, 0.00, 0.04], [0.00, 0.02, -0.02]]])  # [B=1, A=2, H=3]
    port = portfolio_returns(weights, returns)
    assert torch.allclose(port, torch.tensor([[0.01, -0.01, 0.03]]))
    mean, var = 0.01, ((0.0) ** 2 + 0.02**2 + 0.02**2) / 3
    assert sharpe(port, 1e-8).item() == pytest.approx(mean / math.sqrt(var + 1e-8), rel=1e-5)


def test_each_regulariser_on_a_hand_case() -> None:
    weights = torch.tensor([[0.5, -0.25, 0.25, 0.0]])
    previous = torch.tensor([[0.25, -0.25, 0.0, 0.5]])
    assert distribution_penalty(weights).item() == pytest.approx((0.25 + 0.0625 + 0.0625) / 4)
    assert net_exposure_penalty(weights).item() == pytest.approx(0.5**2)
    assert turnover_penalty(weights, previous).item() == pytest.approx(0.25 + 0.0 + 0.25 + 0.5)


def test_total_is_the_weighted_sum_and_turnover_needs_previous_weights() -> None:
    weights = torch.tensor([[0.5, -0.25, 0.25, 0.0], [0.0, 0.5, -0.5, 0.0]])
    returns = torch.randn(2, 4, 6, generator=torch.Generator().manual_seed(0)) * 0.01
    previous = torch.tensor([[0.0, 0.0, 0.0, 0.0], [0.5, -0.25, 0.25, 0.0]])
    plain = portfolio_loss_terms(weights, returns, dist_weight=2.0, net_weight=3.0, turnover_weight=5.0)
    assert plain["turnover"].item() == 0.0
    terms = portfolio_loss_terms(
        weights,
        returns,
        dist_weight=2.0,
        net_weight=3.0,
        turnover_weight=5.0,
        previous=previous,
        has_previous=torch.tensor([False, True]),
    )
    assert terms["dist"].item() == pytest.approx(2.0 * distribution_penalty(weights).mean().item())
    assert terms["net"].item() == pytest.approx(3.0 * (0.5**2 + 0.0) / 2)
    assert terms["turnover"].item() == pytest.approx(5.0 * (0.5 + 0.75 + 0.75 + 0.0))
    expected = -sharpe(portfolio_returns(weights, returns), 1e-8).mean() + terms["dist"] + terms["net"]
    assert terms["loss"].item() == pytest.approx((expected + terms["turnover"]).item(), rel=1e-6)


def test_batch_loss_takes_previous_weights_from_the_decision_before() -> None:
    logits = torch.tensor([[2.0, -1.0, 0.0], [0.0, 1.0, -3.0], [1.0, 1.0, 1.0]])
    batch = {FUTURE: torch.zeros(3, 3, 4), ORIGIN_US: torch.tensor([10, 20, 30])}
    loss = PortfolioLoss(k=2, dist_weight=0.0, net_weight=0.0, turnover_weight=1.0)
    terms = loss.terms({"logits": logits}, batch)
    weights = top_k_abs_weights(logits, 2)
    expected = turnover_penalty(weights[1:], weights[:-1]).mean()
    assert terms["turnover"].item() == pytest.approx(expected.item())
    with pytest.raises(FinfusionError, match="consecutive decisions"):
        loss.terms({"logits": logits}, {**batch, ORIGIN_US: torch.tensor([10, 30, 20])})
    assert PortfolioLoss(k=2).terms({"logits": logits}, {**batch, ORIGIN_US: torch.tensor([3, 2, 1])})["turnover"] == 0


def test_bad_k_is_a_clear_error() -> None:
    with pytest.raises(FinfusionError, match="k must be at least 1"):
        PortfolioLoss(k=0)
    with pytest.raises(FinfusionError, match="k must be at least 1"):
        top_k_abs_weights(torch.ones(1, 3), 0)
