"""Metrics against independent references: properscoring, scipy and cases worked by hand."""

from __future__ import annotations

import math

import numpy as np
import properscoring
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import stats

from finfusion.evaluation.metric_registry import metric_table
from finfusion.evaluation.metrics import (
    crps_from_quantiles,
    crps_from_samples,
    directional_accuracy,
    directions,
    interval_coverage,
    interval_score,
    mae,
    mape,
    mase,
    mcc,
    msis,
    pinball_loss,
    precision_recall_f1,
    quantile_interval,
    rmse,
    sample_interval,
    seasonal_scale,
)

finite = st.floats(min_value=-1e3, max_value=1e3, allow_nan=False, allow_infinity=False)


def test_rmse_and_mae_by_hand() -> None:
    y, p = [1.0, 2.0, 3.0], [2.0, 2.0, 5.0]
    assert mae(y, p) == pytest.approx(1.0)
    assert rmse(y, p) == pytest.approx(math.sqrt(5 / 3))


def test_point_metrics_reject_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="shape"):
        rmse(np.zeros((2, 3)), np.zeros((3, 2)))


def test_mape_skips_zero_actuals() -> None:
    assert mape([0.0, 2.0, 4.0], [1.0, 1.0, 5.0]) == pytest.approx((0.5 + 0.25) / 2)
    assert math.isnan(mape([0.0, 0.0], [1.0, 2.0]))


def test_mase_by_hand() -> None:
    train = [1.0, 3.0, 2.0, 5.0]
    assert mase([4.0, 6.0], [5.0, 3.0], train) == pytest.approx(2.0 / 2.0)
    assert mase([4.0, 6.0], [5.0, 3.0], train, m=2) == pytest.approx(2.0 / 1.5)


def test_mase_with_one_training_series_per_row() -> None:
    train = np.array([[0.0, 1.0, 2.0], [0.0, 4.0, 8.0]])
    y = np.array([[3.0, 4.0], [12.0, 16.0]])
    pred = y + np.array([[1.0, 1.0], [4.0, 0.0]])
    assert mase(y, pred, train) == pytest.approx(np.mean([1.0, 1.0, 1.0, 0.0]))


def test_seasonal_scale_rejects_a_constant_series() -> None:
    with pytest.raises(ValueError, match="zero"):
        seasonal_scale([2.0, 2.0, 2.0])


def test_directions_against_a_reference_price() -> None:
    prices = np.array([[101.0, 99.0, 100.0]])
    assert directions(prices, reference=[[100.0]]).tolist() == [[1, -1, 0]]
    assert directions([0.5, -0.2, 0.05], threshold=0.1).tolist() == [1, -1, 0]


def test_directional_accuracy_by_hand() -> None:
    truth = [1.0, -1.0, 2.0, -3.0]
    pred = [0.5, 1.0, 1.0, -0.1]
    assert directional_accuracy(truth, pred) == pytest.approx(0.75)


def test_precision_recall_f1_by_hand() -> None:
    truth = [1, 1, 1, 1, -1, -1, -1]
    pred = [1, 1, 1, -1, 1, -1, -1]
    up = precision_recall_f1(truth, pred, 1)
    assert up.precision == pytest.approx(3 / 4)
    assert up.recall == pytest.approx(3 / 4)
    assert up.support == 4
    down = precision_recall_f1(truth, pred, -1)
    assert (down.precision, down.recall) == pytest.approx((2 / 3, 2 / 3))
    assert down.f1 == pytest.approx(stats.hmean([2 / 3, 2 / 3]))


def test_precision_without_predictions_of_the_label_is_zero() -> None:
    scores = precision_recall_f1([1, -1], [-1, -1], 1)
    assert scores == (0.0, 0.0, 0.0, 1)


def test_mcc_binary_by_hand() -> None:
    # tp = 3, tn = 2, fp = 1, fn = 1: (3*2 - 1*1) / sqrt(4 * 4 * 3 * 3) = 5 / 12
    truth = [1, 1, 1, 1, -1, -1, -1]
    pred = [1, 1, 1, -1, 1, -1, -1]
    assert mcc(truth, pred) == pytest.approx(5 / 12)


def test_mcc_three_classes_by_hand() -> None:
    # confusion (rows true, cols predicted) over labels -1, 0, 1: [[2, 1, 0], [0, 1, 1], [1, 0, 2]]
    truth = [-1, -1, -1, 0, 0, 1, 1, 1]
    pred = [-1, -1, 0, 0, 1, -1, 1, 1]
    c, s = 5, 8
    t = np.array([3, 2, 3])
    p = np.array([3, 2, 3])
    expected = (c * s - p @ t) / math.sqrt((s**2 - p @ p) * (s**2 - t @ t))
    assert mcc(truth, pred) == pytest.approx(expected)


def test_mcc_degenerate_is_zero_and_perfect_is_one() -> None:
    assert mcc([1, 1, 1], [1, -1, 1]) == 0.0
    assert mcc([1, -1, 0, 1], [1, -1, 0, 1]) == pytest.approx(1.0)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([-1, 1]), st.sampled_from([-1, 1])), min_size=4, max_size=60))
def test_binary_mcc_equals_the_pearson_correlation(pairs: list[tuple[int, int]]) -> None:
    truth, pred = (np.array(side) for side in zip(*pairs, strict=True))
    if np.ptp(truth) == 0 or np.ptp(pred) == 0:
        return
    assert mcc(truth, pred) == pytest.approx(stats.pearsonr(truth, pred).statistic, abs=1e-12)


@settings(max_examples=80, deadline=None)
@given(
    st.integers(1, 4).flatmap(
        lambda n: st.integers(1, 3).flatmap(
            lambda h: st.tuples(
                arrays(np.float64, (n, h), elements=finite),
                arrays(np.float64, (n, h, 7), elements=finite) | arrays(np.float64, (n, h, 1), elements=finite),
            )
        )
    )
)
def test_crps_from_samples_equals_properscoring(case: tuple[np.ndarray, np.ndarray]) -> None:
    y, samples = case
    expected = properscoring.crps_ensemble(y, samples)
    np.testing.assert_allclose(crps_from_samples(y, samples), expected, rtol=1e-9, atol=1e-9)


def test_crps_from_samples_on_random_ensembles() -> None:
    rng = np.random.default_rng(7)
    y = rng.normal(size=(5, 3))
    samples = rng.normal(size=(5, 3, 200)) * 2 + 1
    np.testing.assert_allclose(crps_from_samples(y, samples), properscoring.crps_ensemble(y, samples), atol=1e-12)


def test_crps_from_samples_with_one_sample_is_the_absolute_error() -> None:
    assert crps_from_samples([1.0, 2.0], [[3.0], [1.5]]).tolist() == pytest.approx([2.0, 0.5])


def test_crps_from_samples_rejects_misaligned_samples() -> None:
    with pytest.raises(ValueError, match="samples"):
        crps_from_samples(np.zeros((2, 3)), np.zeros((3, 2, 10)))


def test_pinball_loss_by_hand() -> None:
    loss = pinball_loss([10.0], [[8.0, 12.0]], [0.1, 0.9])
    # y above the 0.1 quantile by 2: 0.1 * 2; below the 0.9 quantile by 2: (1 - 0.9) * 2
    np.testing.assert_allclose(loss, [[0.2, 0.2]])
    np.testing.assert_allclose(pinball_loss([10.0], [[12.0]], [0.1]), [[1.8]])


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 20).flatmap(lambda n: st.tuples(*(arrays(np.float64, n, elements=finite),) * 2)))
def test_pinball_at_the_median_is_half_the_absolute_error(case: tuple[np.ndarray, np.ndarray]) -> None:
    y, pred = case
    assert float(np.mean(pinball_loss(y, pred[:, None], [0.5]))) == pytest.approx(0.5 * mae(y, pred), abs=1e-9)


def test_crps_from_quantiles_by_hand() -> None:
    # pinball at 0.25 of y=1 vs q=0: 0.25; at 0.75 vs q=2: 0.25 * 1 -> 2 * mean = 0.5
    assert crps_from_quantiles([1.0], [[0.0, 2.0]], [0.25, 0.75]).tolist() == pytest.approx([0.5])


def test_crps_from_dense_quantiles_approaches_the_gaussian_crps() -> None:
    q = 1000
    levels = (np.arange(1, q + 1) - 0.5) / q
    mu, sigma = np.array([0.0, 1.0, -2.0]), np.array([1.0, 2.0, 0.5])
    y = np.array([0.3, -1.0, -2.0])
    quantiles = stats.norm.ppf(levels, loc=mu[:, None], scale=sigma[:, None])
    exact = properscoring.crps_gaussian(y, mu, sigma)
    np.testing.assert_allclose(crps_from_quantiles(y, quantiles, levels), exact, rtol=2e-3)


def test_quantile_levels_must_be_inside_the_unit_interval() -> None:
    with pytest.raises(ValueError, match="between 0 and 1"):
        pinball_loss([1.0], [[1.0]], [1.0])


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 20).flatmap(lambda n: arrays(np.float64, n, elements=finite)))
def test_an_interval_around_every_point_covers_all(y: np.ndarray) -> None:
    assert interval_coverage(y, np.full_like(y, y.min()), np.full_like(y, y.max())) == 1.0


def test_interval_coverage_by_hand() -> None:
    assert interval_coverage([0.0, 1.0, 2.0, 3.0], [0.0] * 4, [1.5] * 4) == pytest.approx(0.5)


def test_interval_score_by_hand() -> None:
    scores = interval_score([0.5, -1.0, 3.0], [0.0] * 3, [1.0] * 3, alpha=0.1)
    np.testing.assert_allclose(scores, [1.0, 1.0 + 20 * 1.0, 1.0 + 20 * 2.0])


def test_msis_by_hand() -> None:
    train = [1.0, 3.0, 2.0, 5.0]  # naive scale 2
    value = msis([0.5, 3.0], [0.0, 0.0], [1.0, 1.0], alpha=0.1, y_train=train)
    assert value == pytest.approx(np.mean([1.0, 41.0]) / 2.0)


def test_interval_helpers() -> None:
    low, high = sample_interval(np.arange(1.0, 100.0)[None, :], alpha=0.1)
    assert (low[0], high[0]) == pytest.approx((5.0, 95.0))
    lower, upper = quantile_interval([[1.0, 2.0, 3.0]], [0.05, 0.5, 0.95], alpha=0.1)
    assert (lower[0], upper[0]) == (1.0, 3.0)
    with pytest.raises(ValueError, match="not forecast"):
        quantile_interval([[1.0, 2.0, 3.0]], [0.1, 0.5, 0.9], alpha=0.05)


def test_sample_interval_of_a_small_calibrated_ensemble_covers_its_nominal_share() -> None:
    """16 draws from the true distribution: the 80% interval covers ~81% of outcomes (numpy's linear default: ~71%)."""
    rng = np.random.default_rng(0)
    truth, paths = rng.normal(size=200_000), rng.normal(size=(200_000, 16))
    assert interval_coverage(truth, *sample_interval(paths, alpha=0.2)) == pytest.approx(0.814, abs=0.005)
    linear = np.quantile(paths, [0.1, 0.9], axis=-1)
    assert interval_coverage(truth, *linear) == pytest.approx(0.714, abs=0.005)


def test_metric_table_from_samples_matches_each_metric() -> None:
    rng = np.random.default_rng(3)
    train = 100 + np.cumsum(rng.normal(size=50))
    y = train[-1] + np.cumsum(rng.normal(size=(8, 4)), axis=1)
    samples = y[..., None] + rng.normal(size=(8, 4, 64))
    last = np.full((8, 1), train[-1])
    table = metric_table(y, samples=samples, y_train=train, reference=last)
    median = np.median(samples, axis=-1)
    assert table["mae"] == pytest.approx(mae(y, median))
    assert table["mase"] == pytest.approx(mase(y, median, train))
    assert table["crps"] == pytest.approx(float(np.mean(properscoring.crps_ensemble(y, samples))))
    assert table["directional_accuracy"] == pytest.approx(directional_accuracy(y, median, last))
    assert table["mcc"] == pytest.approx(mcc(directions(y, last), directions(median, last)))
    low, high = sample_interval(samples, 0.05)
    assert table["coverage"] == pytest.approx(interval_coverage(y, low, high))
    assert table["msis"] == pytest.approx(msis(y, low, high, 0.05, train))
    assert {"precision_up", "recall_down", "f1_up", "rmse", "mape"} <= table.keys()


def test_metric_table_from_quantiles_without_interval_levels() -> None:
    y = np.array([1.0, 2.0])
    quantiles = np.array([[0.0, 1.0, 2.0], [1.0, 2.0, 3.0]])
    table = metric_table(y, quantiles=quantiles, levels=[0.25, 0.5, 0.75])
    assert table["mae"] == pytest.approx(0.0)
    assert table["crps"] == pytest.approx(float(np.mean(crps_from_quantiles(y, quantiles, [0.25, 0.5, 0.75]))))
    assert "coverage" not in table
    assert "mcc" not in table
