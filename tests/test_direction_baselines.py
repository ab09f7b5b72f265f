"""The direction baselines: signs fitted on training windows only, in return units whatever the normalisation,
saved with the run; and the walk-forward's direction test takes the best of them as its reference, never a forecast
without a sign."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from finfusion.forecasting.forecast import Forecasts
from finfusion.forecasting.walk_forward import evaluation_options, score
from finfusion.models.build import build_model, load_model_state, save_model_state
from finfusion.models.direction_baselines import DriftSign, LogisticDirection, MajorityClass, PreviousSign
from finfusion.samples.contract import FUTURE, PAST, SCALE_LOC, SCALE_SCALE

H, L, C = 3, 8, 2


def batch(past: np.ndarray, future: np.ndarray | None = None, loc: float = 0.0, scale: float = 1.0) -> dict:
    """past [B, L, C] and future [B, H, 1] in return units -> a batch normalised by (loc, scale)."""
    n = len(past)
    out = {
        PAST: torch.tensor((past - loc) / scale, dtype=torch.float32),
        SCALE_LOC: torch.full((n, 1, 1), loc),
        SCALE_SCALE: torch.full((n, 1, 1), scale),
    }
    if future is not None:
        out[FUTURE] = torch.tensor((future - loc) / scale, dtype=torch.float32)
    return out


def returns_of(model: MajorityClass, data: dict) -> np.ndarray:
    """The model's point forecast [B, H] in return units."""
    point = model.predict({k: v for k, v in data.items() if k != FUTURE})["point"]
    return (point * data[SCALE_SCALE] + data[SCALE_LOC]).numpy()[..., 0]


def test_majority_class_takes_the_training_span_sign_and_scale() -> None:
    rng = np.random.default_rng(0)
    future = np.abs(rng.normal(0.01, 0.005, (40, H, 1)))
    future[:10] *= -1  # 30 up, 10 down at every step
    train = batch(rng.normal(0, 0.01, (40, L, C)), future, loc=0.002, scale=0.01)
    model = MajorityClass(H).fit([train])
    forecast = returns_of(model, batch(rng.normal(0, 0.01, (5, L, C)), loc=0.002, scale=0.01))
    assert (forecast > 0).all()
    assert np.allclose(forecast[0], np.abs(future).mean(axis=0)[:, 0], rtol=1e-4)


def test_previous_and_drift_signs_read_returns_not_normalised_values() -> None:
    past = np.full((2, L, C), 0.001)
    past[1] = -0.001
    past[0, : L - H, 0], past[0, -H:, 0] = 0.02, -0.01  # window 0: rose, then fell over the last H bars
    data = batch(past, np.full((2, H, 1), 0.01), loc=0.05, scale=0.01)  # every normalised value is below 0
    previous, drift = PreviousSign(H).fit([data]), DriftSign(H).fit([data])
    assert (returns_of(previous, data)[0] < 0).all() and (returns_of(previous, data)[1] < 0).all()
    assert (returns_of(drift, data)[0] > 0).all() and (returns_of(drift, data)[1] < 0).all()


def test_logistic_direction_finds_a_planted_sign_and_is_saved_with_the_run(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)

    def windows(n: int) -> dict:
        past = rng.normal(0, 0.01, (n, L, C))
        future = np.sign(past[:, -1:, 1:2]) * np.abs(rng.normal(0.01, 0.005, (n, H, 1)))  # the last bar's sign
        return batch(past, future, scale=0.01)  # z-scored inputs, as the windows give them

    model = build_model({"name": "logistic_direction", "lags": 4}, {"horizon": H, "n_channels": C})
    assert isinstance(model, LogisticDirection)
    model.fit([windows(400)])
    test = windows(200)
    hits = np.sign(returns_of(model, test)) == np.sign(test[FUTURE].numpy()[..., 0])
    assert hits.mean() > 0.9
    save_model_state(model, tmp_path)
    fresh = build_model({"name": "logistic_direction", "lags": 4}, {"horizon": H, "n_channels": C})
    loaded = load_model_state(fresh, tmp_path)
    assert np.array_equal(returns_of(loaded, test), returns_of(model, test))  # read back, never refitted


def test_a_window_s_forecast_does_not_depend_on_its_future() -> None:
    rng = np.random.default_rng(2)
    train = batch(rng.normal(0, 0.01, (60, L, C)), rng.normal(0, 0.01, (60, H, 1)))
    test = batch(rng.normal(0, 0.01, (10, L, C)), rng.normal(0, 0.01, (10, H, 1)))
    changed = {**test, FUTURE: -test[FUTURE]}
    for cls in (MajorityClass, PreviousSign, DriftSign):
        model = cls(H).fit([train])
        assert np.array_equal(returns_of(model, test), returns_of(model, changed))


def forecasts(point: np.ndarray, realised: np.ndarray) -> Forecasts:
    n = len(point)
    return Forecasts(
        symbols=("AAA",),
        targets=("log_return",),
        symbol_index=np.zeros(n, dtype=np.int64),
        origin_us=np.arange(n, dtype=np.int64) * 86_400_000_000,
        target_us=np.zeros((n, 1), dtype=np.int64),
        point=point[:, None, None],
        realised=realised[:, None, None],
        past=np.random.default_rng(n).normal(0, 0.01, (n, 4, 1)),
    )


def test_direction_is_tested_against_the_best_sign_baseline_never_the_random_walk(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    truth = rng.normal(0.001, 0.01, 200)
    right = rng.random(200) < 0.7
    model = np.where(right, np.sign(truth), -np.sign(truth)) * 0.01
    weak = np.where(rng.random(200) < 0.55, np.sign(truth), -np.sign(truth)) * 0.01
    runs = {
        "model": forecasts(model, truth),
        "random_walk": forecasts(np.zeros(200), truth),
        "majority_class": forecasts(np.full(200, 0.01), truth),
        "previous_sign": forecasts(weak, truth),
    }
    signs = ["majority_class", "previous_sign"]
    options = evaluation_options({"dm_loss": ["absolute", "direction"], "direction_baselines": signs})
    evaluation = score(runs, ["random_walk", "majority_class", "previous_sign"], options, tmp_path)
    accuracy = {name: values["directional_accuracy"] for name, values in evaluation.metrics.models.items()}
    best = max(signs, key=accuracy.__getitem__)
    direction = [t for t in evaluation.metrics.significance if t["loss"] == "direction error"]
    # the random walk has no sign: neither tested on direction nor a reference for it
    assert {(t["model"], t["baseline"]) for t in direction} == {("model", best)}
    assert direction[0]["p_value"] < 0.05
    absolute = [t for t in evaluation.metrics.significance if t["loss"] == "absolute error"]
    assert {t["baseline"] for t in absolute} == {"random_walk"}  # point comparisons keep the random walk


@pytest.mark.parametrize("name", ["majority_class", "previous_sign", "drift_sign", "logistic_direction"])
def test_each_direction_baseline_is_registered(name: str) -> None:
    model = build_model({"name": name}, {"horizon": H, "n_channels": C, "target_index": [0]})
    assert not model.trainable and model.outputs == frozenset({"point"})


def test_each_subset_is_tested_against_its_own_best_sign_baseline(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    truth = rng.normal(0.0, 0.01, 300)
    subset = np.zeros((300, 1), dtype=bool)
    subset[::3] = True
    right = np.where(rng.random(300) < 0.8, np.sign(truth), -np.sign(truth)) * 0.01
    good_on_subset = np.where(subset[:, 0], right, -right)  # right on the subset, wrong elsewhere
    good_elsewhere = -good_on_subset
    runs = {
        "model": forecasts(right, truth),
        "majority_class": forecasts(good_on_subset, truth),
        "previous_sign": forecasts(good_elsewhere, truth),
    }
    options = evaluation_options({"dm_loss": "absolute", "direction_baselines": ["majority_class", "previous_sign"]})
    evaluation = score(runs, ["majority_class", "previous_sign"], options, tmp_path, {"news": subset})
    references = {t["subset"]: t["baseline"] for t in evaluation.metrics.significance if t["model"] == "model"
                  and t["loss"] == "direction error"}  # fmt: skip
    assert references == {"all": "previous_sign", "news": "majority_class"}
