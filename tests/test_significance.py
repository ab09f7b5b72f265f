"""Diebold-Mariano test and block-bootstrap intervals: hand cases, a loop reimplementation and seeded simulations."""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import pytest
from scipy import stats

from finfusion.evaluation.significance import (
    block_bootstrap_ci,
    block_bootstrap_means,
    diebold_mariano,
    long_run_variance,
)


def _ar1(n: int, phi: float, rng: np.random.Generator) -> np.ndarray:
    noise = rng.normal(size=n)
    out = np.empty(n)
    out[0] = noise[0] / math.sqrt(1 - phi**2)
    for t in range(1, n):
        out[t] = phi * out[t - 1] + noise[t]
    return out


def _dm_by_loops(d: list[float], h: int) -> tuple[float, float]:
    """Diebold-Mariano with the HLN correction, written from the formulas with plain loops."""
    n = len(d)
    mean = sum(d) / n
    gammas = []
    for k in range(h):
        gammas.append(sum((d[t] - mean) * (d[t - k] - mean) for t in range(k, n)) / n)
    variance = (gammas[0] + 2 * sum(gammas[1:])) / n
    statistic = mean / math.sqrt(variance) * math.sqrt((n + 1 - 2 * h + h * (h - 1) / n) / n)
    return statistic, 2 * stats.t.sf(abs(statistic), df=n - 1)


def test_dm_hand_case() -> None:
    # d = 1, 2, 3, 4: mean 2.5, gamma_0 = 1.25, V/n = 0.3125, DM = sqrt(20), HLN factor sqrt(3/4): sqrt(15)
    result = diebold_mariano([1.0, 2.0, 3.0, 4.0], [0.0] * 4)
    assert result.statistic == pytest.approx(math.sqrt(15))
    assert result.p_value == pytest.approx(2 * stats.t.sf(math.sqrt(15), df=3))
    assert (result.mean_difference, result.n) == (2.5, 4)
    plain = diebold_mariano([1.0, 2.0, 3.0, 4.0], [0.0] * 4, hln=False)
    assert plain.statistic == pytest.approx(math.sqrt(20))
    assert plain.p_value == pytest.approx(2 * stats.norm.sf(math.sqrt(20)))


@pytest.mark.parametrize("h", [1, 2, 4])
def test_dm_matches_a_loop_reimplementation(h: int) -> None:
    rng = np.random.default_rng(h)
    a, b = rng.normal(size=40) ** 2, (rng.normal(size=40) * 1.2) ** 2
    statistic, p_value = _dm_by_loops((a - b).tolist(), h)
    result = diebold_mariano(a, b, horizon=h)
    assert result.variance == "acf"
    assert result.statistic == pytest.approx(statistic, rel=1e-12)
    assert result.p_value == pytest.approx(p_value, rel=1e-9)


def test_dm_identical_forecasts_give_zero() -> None:
    losses = np.random.default_rng(0).random(30)
    result = diebold_mariano(losses, losses.copy(), horizon=3)
    assert result.statistic == 0.0
    assert result.p_value == 1.0
    assert result.mean_difference == 0.0


def test_dm_finds_a_clearly_better_forecast() -> None:
    rng = np.random.default_rng(1)
    truth = rng.normal(size=200)
    good = truth + 0.1 * rng.normal(size=200)
    bad = truth + rng.normal(size=200)
    a, b = (good - truth) ** 2, (bad - truth) ** 2
    assert diebold_mariano(a, b, alternative="less").p_value < 0.01
    assert diebold_mariano(a, b, alternative="greater").p_value > 0.99
    assert diebold_mariano(a, b).p_value < 0.01


def test_dm_rejects_at_about_the_nominal_rate_under_the_null() -> None:
    rng = np.random.default_rng(2)
    rejections = sum(diebold_mariano(rng.normal(size=80), rng.normal(size=80)).p_value < 0.05 for _ in range(400))
    assert 0.02 <= rejections / 400 <= 0.09


def test_dm_falls_back_to_bartlett_when_the_acf_variance_is_negative() -> None:
    d = np.tile([1.0, -1.0], 20) + 0.05
    assert long_run_variance(d, 1, "acf") < 0
    result = diebold_mariano(d, np.zeros_like(d), horizon=2)
    assert result.variance == "bartlett"
    assert math.isfinite(result.statistic) and result.statistic > 0


def test_long_run_variance_bartlett_weights_by_hand() -> None:
    d = np.array([1.0, 3.0, 2.0, 6.0])
    centred = d - 3.0
    gamma0 = centred @ centred / 4
    gamma1 = centred[1:] @ centred[:-1] / 4
    assert long_run_variance(d, 1, "bartlett") == pytest.approx(gamma0 + 2 * 0.5 * gamma1)
    assert long_run_variance(d, 1, "acf") == pytest.approx(gamma0 + 2 * gamma1)


def test_dm_rejects_a_horizon_too_long_for_the_sample() -> None:
    with pytest.raises(ValueError, match="horizon"):
        diebold_mariano([1.0, 2.0, 3.0], [0.0, 0.0, 0.0], horizon=3)


def test_bootstrap_ci_contains_the_true_mean_difference_of_an_ar1() -> None:
    rng = np.random.default_rng(11)
    true_mean = 0.3
    d = true_mean + _ar1(500, 0.6, rng)
    interval = block_bootstrap_ci(d, np.zeros_like(d), block_length=10, seed=5)
    assert interval.lower < true_mean < interval.upper
    assert interval.lower < interval.mean_difference < interval.upper


def test_bootstrap_ci_is_reproducible_by_seed() -> None:
    d = _ar1(200, 0.5, np.random.default_rng(4))
    first = block_bootstrap_ci(d, np.zeros_like(d), seed=9)
    assert first == block_bootstrap_ci(d, np.zeros_like(d), seed=9)
    assert first != block_bootstrap_ci(d, np.zeros_like(d), seed=10)


def test_blocks_widen_the_interval_for_positively_correlated_losses() -> None:
    d = _ar1(600, 0.8, np.random.default_rng(6))
    iid = block_bootstrap_ci(d, np.zeros_like(d), block_length=1, seed=1)
    blocks = block_bootstrap_ci(d, np.zeros_like(d), block_length=25, seed=1)
    assert blocks.upper - blocks.lower > 1.5 * (iid.upper - iid.lower)


def test_a_beats_b_when_its_losses_are_clearly_lower() -> None:
    rng = np.random.default_rng(8)
    b = 1.0 + rng.random(300)
    a = b - 0.5 + 0.1 * _ar1(300, 0.5, rng)
    interval = block_bootstrap_ci(a, b, method="moving", seed=2)
    assert interval.a_beats_b and not interval.b_beats_a
    assert interval.upper < 0


@pytest.mark.parametrize("method", ["circular", "moving"])
def test_one_block_of_the_whole_series_keeps_its_mean(method: Literal["circular", "moving"]) -> None:
    d = np.random.default_rng(3).normal(size=37)
    means = block_bootstrap_means(d, block_length=37, n_resamples=50, method=method, seed=0)
    np.testing.assert_allclose(means, d.mean())


def test_single_point_blocks_match_the_iid_bootstrap_spread() -> None:
    d = np.random.default_rng(5).normal(size=400)
    means = block_bootstrap_means(d, block_length=1, n_resamples=4000, seed=0)
    assert means.std() == pytest.approx(d.std() / math.sqrt(400), rel=0.1)
