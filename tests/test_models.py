"""Models: forward shapes, PatchTST invariances, loss goes down on a toy sine, baseline golden values, registry."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from finfusion.errors import FinfusionError
from finfusion.models.base import target_positions
from finfusion.models.baselines import Drift, RandomWalk, SeasonalNaive
from finfusion.models.dlinear import DLinear
from finfusion.models.hf_time_series import HFTimeSeriesTransformer
from finfusion.models.lightgbm_baseline import LightGBMForecaster
from finfusion.models.patchtst import PatchTST, PatchTSTEncoder
from finfusion.models.registry import build_model, capabilities, model_names

B, L, C, H = 4, 32, 3, 6
LossFn = Callable[[torch.nn.Module, dict[str, torch.Tensor]], torch.Tensor]


def small_patchtst(**kwargs: object) -> PatchTST:
    params: dict[str, object] = dict(n_channels=C, context_length=L, horizon=H, patch_len=8, stride=4)
    params.update(d_model=32, n_heads=4, n_layers=2, d_ff=64, dropout=0.0)
    params.update(kwargs)
    return PatchTST(**params).eval()  # type: ignore[arg-type]


def sine_batch(size: int, seed: int, length: int = L, horizon: int = H) -> dict[str, torch.Tensor]:
    """Sine waves with random phase and period, C channels: `past` [size, L, C], `future` [size, H, C]."""
    gen = torch.Generator().manual_seed(seed)
    phase = torch.rand(size, 1, C, generator=gen) * 2 * math.pi
    period = 8 + 8 * torch.rand(size, 1, C, generator=gen)
    t = torch.arange(length + horizon, dtype=torch.float32).view(1, -1, 1)
    series = torch.sin(2 * math.pi * t / period + phase)
    return {
        "past": series[:, :length],
        "past_mask": torch.ones(size, length, dtype=torch.bool),
        "future": series[:, length:],
    }


@pytest.fixture
def batch() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {"past": torch.randn(B, L, C), "past_mask": torch.ones(B, L, dtype=torch.bool)}


def test_patchtst_shapes_with_quantiles_and_target_subset(batch: dict[str, torch.Tensor]) -> None:
    model = small_patchtst(target_index=[0, 2], quantile_levels=[0.9, 0.1, 0.5])
    out = model(batch)
    assert out["point"].shape == (B, H, 2)
    assert out["quantiles"].shape == (B, H, 2, 3)
    assert torch.all(out["quantiles"][..., :-1] <= out["quantiles"][..., 1:])
    assert model.quantile_levels.tolist() == pytest.approx([0.1, 0.5, 0.9])


def test_patchtst_encoder_returns_tokens() -> None:
    encoder = PatchTSTEncoder(context_length=L, patch_len=8, stride=4, d_model=16, n_heads=2, n_layers=1, d_ff=32)
    assert encoder.n_patches == 7
    assert encoder(torch.randn(B, L, C)).shape == (B, C, 7, 16)


def test_patchtst_instance_norm_makes_output_scale_and_shift_equivariant(batch: dict[str, torch.Tensor]) -> None:
    model = small_patchtst()
    with torch.no_grad():
        model.norm.weight.uniform_(0.5, 1.5)
        model.norm.bias.uniform_(-0.5, 0.5)
        base = model(batch)["point"]
        scaled = model({**batch, "past": 7.0 * batch["past"] + 3.0})["point"]
    assert torch.allclose(scaled, 7.0 * base + 3.0, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(base, torch.zeros_like(base))


def test_patchtst_masked_bars_do_not_change_forecast(batch: dict[str, torch.Tensor]) -> None:
    model = small_patchtst()
    mask = batch["past_mask"].clone()
    mask[:, :5] = False
    garbage = batch["past"].clone()
    garbage[:, :5] = 1e6
    with torch.no_grad():
        a = model({"past": batch["past"], "past_mask": mask})["point"]
        b = model({"past": garbage, "past_mask": mask})["point"]
    assert torch.allclose(a, b, atol=1e-5)


def test_patchtst_channels_are_independent(batch: dict[str, torch.Tensor]) -> None:
    model = small_patchtst()
    changed = batch["past"].clone()
    changed[..., 2] = torch.randn(B, L) * 10
    with torch.no_grad():
        before = model(batch)["point"]
        after = model({**batch, "past": changed})["point"]
    assert torch.allclose(before[..., :2], after[..., :2], atol=1e-6)
    assert not torch.allclose(before[..., 2], after[..., 2], atol=1e-3)


def test_dlinear_shapes_shared_and_individual(batch: dict[str, torch.Tensor]) -> None:
    shared = DLinear(C, L, H)
    individual = DLinear(C, L, H, kernel=10, individual=True, target_index=[1])
    assert shared(batch)["point"].shape == (B, H, C)
    assert individual(batch)["point"].shape == (B, H, 1)
    assert individual.kernel == 9
    assert individual.trend_weight.shape == (1, H, L)


def test_dlinear_initial_forecast_is_window_mean(batch: dict[str, torch.Tensor]) -> None:
    point = DLinear(C, L, H)(batch)["point"]
    expected = batch["past"].mean(dim=1, keepdim=True).expand(-1, H, -1)
    assert torch.allclose(point, expected, atol=1e-5)


def test_hf_tst_loss_and_samples() -> None:
    torch.manual_seed(0)
    data = sine_batch(B, seed=1)
    data["future"] = data["future"][..., :2]
    model = HFTimeSeriesTransformer(C, L, H, target_index=[0, 1], num_samples=5, d_model=16)
    model.train()
    assert model(data)["loss"].dim() == 0
    model.eval()
    out = model({k: v for k, v in data.items() if k != "future"})
    assert out["samples"].shape == (B, 5, H, 2)
    assert out["point"].shape == (B, H, 2)
    assert torch.isfinite(out["samples"]).all()
    validation = model(data)
    assert validation["samples"].shape == (B, model.validation_samples, H, 2) and validation["loss"].dim() == 0
    univariate = HFTimeSeriesTransformer(C, L, H, target_index=[2], num_samples=3, d_model=16).eval()
    assert univariate.sample(data)["samples"].shape == (B, 3, H, 1)


def train_steps(model: torch.nn.Module, loss_fn: LossFn, steps: int, lr: float) -> tuple[float, float]:
    """Train on a fixed toy sine set; return (initial loss, final loss) on a held-out sine batch."""
    torch.manual_seed(0)
    train, held_out = sine_batch(64, seed=2), sine_batch(32, seed=3)
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr)
    model.eval()
    with torch.no_grad():
        before = float(loss_fn(model, held_out))
    model.train()
    for _ in range(steps):
        optimiser.zero_grad()
        loss_fn(model, train).backward()
        optimiser.step()
    model.eval()
    with torch.no_grad():
        after = float(loss_fn(model, held_out))
    return before, after


def mse_loss(model: torch.nn.Module, data: dict[str, torch.Tensor]) -> torch.Tensor:
    return F.mse_loss(model(data)["point"], data["future"])


def nll_loss(model: torch.nn.Module, data: dict[str, torch.Tensor]) -> torch.Tensor:
    return model.model(**model._inputs(data), future_values=data["future"]).loss


@pytest.mark.parametrize(
    ("name", "factory", "loss_fn", "steps", "lr"),
    [
        ("patchtst", lambda: small_patchtst(), mse_loss, 30, 3e-3),
        ("dlinear", lambda: DLinear(C, L, H, kernel=9), mse_loss, 30, 1e-2),
        (
            "hf_tst",
            lambda: HFTimeSeriesTransformer(C, L, H, d_model=16, dropout=0.0, num_samples=2),
            nll_loss,
            20,
            3e-3,
        ),
    ],
)
def test_training_reduces_loss(
    name: str, factory: Callable[[], torch.nn.Module], loss_fn: LossFn, steps: int, lr: float
) -> None:
    torch.manual_seed(0)
    before, after = train_steps(factory(), loss_fn, steps, lr)
    assert after < 0.8 * before, name


def golden_batch() -> dict[str, torch.Tensor]:
    past = torch.tensor([[[1.0, 10.0], [2.0, 10.0], [4.0, 13.0], [7.0, 13.0]]])
    return {"past": past, "past_mask": torch.tensor([[True, True, True, False]])}


def test_random_walk_golden_values() -> None:
    level = RandomWalk(horizon=2, space="level").fit().predict(golden_batch())["point"]
    assert level.tolist() == [[[4.0, 13.0], [4.0, 13.0]]]
    returns = RandomWalk(horizon=3, target_index=[1]).predict(golden_batch())["point"]
    assert returns.tolist() == [[[0.0], [0.0], [0.0]]]
    assert RandomWalk.trainable is False


def test_drift_golden_values() -> None:
    level = Drift(horizon=2, space="level").predict(golden_batch())["point"]
    assert torch.allclose(level, torch.tensor([[[5.5, 14.5], [7.0, 16.0]]]))
    returns = Drift(horizon=2, space="return", target_index=[0]).predict(golden_batch())["point"]
    assert torch.allclose(returns, torch.tensor([[[7.0 / 3.0], [7.0 / 3.0]]]))
    with pytest.raises(ValueError, match="space"):
        Drift(horizon=1, space="price")  # type: ignore[arg-type]


def test_seasonal_naive_golden_values() -> None:
    past = torch.tensor([[[1.0], [2.0], [3.0], [4.0], [5.0], [6.0]]])
    mask = torch.tensor([[True, True, True, True, False, True]])
    point = SeasonalNaive(horizon=5, season=3).predict({"past": past, "past_mask": mask})["point"]
    # steps repeat past[3], past[4] (not observed: NaN), past[5], then again
    values = point[0, :, 0].tolist()
    assert values[0] == 4.0 and values[2] == 6.0 and values[3] == 4.0
    assert math.isnan(values[1]) and math.isnan(values[4])
    with pytest.raises(ValueError, match="at least season 7"):
        SeasonalNaive(horizon=2, season=7).predict({"past": past})


def test_baseline_quantiles_are_the_point_plus_the_windows_own_errors() -> None:
    returns = torch.tensor([[[-2.0], [0.0], [1.0], [5.0], [1.0]]])  # mean 1
    levels = [0.25, 0.5, 0.75]
    batch = {"past": returns, "past_mask": torch.ones(1, 5, dtype=torch.bool)}
    walk = RandomWalk(horizon=2, quantile_levels=levels).predict(batch)
    centred = torch.quantile(returns[0, :, 0] - 1.0, torch.tensor(levels))
    assert walk["quantiles"].shape == (1, 2, 1, 3)
    torch.testing.assert_close(walk["quantiles"][0, 1, 0], centred)
    drift = Drift(horizon=2, quantile_levels=levels).predict(batch)
    torch.testing.assert_close(drift["quantiles"][0, 0, 0], 1.0 + centred)
    seasonal = SeasonalNaive(horizon=1, season=2, quantile_levels=levels).predict(batch)
    differences = torch.tensor([3.0, 5.0, 0.0])  # r_t - r_(t-2)
    torch.testing.assert_close(seasonal["quantiles"][0, 0, 0], 5.0 + torch.quantile(differences, torch.tensor(levels)))
    with pytest.raises(ValueError, match="space 'return' only"):
        RandomWalk(horizon=1, space="level", quantile_levels=levels)


def test_lightgbm_fits_predicts_finite_and_deterministic() -> None:
    rng = np.random.default_rng(0)
    n, lookback, horizon = 120, 12, 3
    series = np.cumsum(rng.normal(size=(n, lookback + horizon, 2)), axis=1).astype(np.float32)
    data = {"past": series[:, :lookback], "future": series[:, lookback:, :1], "extra": rng.normal(size=(n, 4))}
    first = LightGBMForecaster(horizon, lags=8, feature_keys=["extra"], n_estimators=20, min_child_samples=5)
    second = LightGBMForecaster(horizon, lags=8, feature_keys=["extra"], n_estimators=20, min_child_samples=5)
    samples = [{k: v[i] for k, v in data.items()} for i in range(n)]
    a = first.fit(data).predict(data)["point"]
    b = second.fit(samples).predict(data)["point"]
    assert a.shape == (n, horizon, 1)
    assert torch.isfinite(a).all()
    assert torch.equal(a, b)
    target = torch.from_numpy(data["future"])
    assert F.mse_loss(a, target) < F.mse_loss(torch.zeros_like(target), target)


def test_lightgbm_predict_before_fit_raises() -> None:
    with pytest.raises(RuntimeError, match="before fit"):
        LightGBMForecaster(2).predict({"past": torch.zeros(1, 4, 1)})


def test_registry_lists_builds_and_declares_capabilities() -> None:
    names = model_names()
    assert {"patchtst", "dlinear", "random_walk", "drift", "lightgbm", "hf_tst"} <= set(names)
    for name in names:
        caps = capabilities(name)
        assert caps["inputs"] and caps["outputs"]
        if name in {"patchtst", "dlinear", "random_walk", "drift", "lightgbm", "hf_tst", "multimodal_diffusion"}:
            assert "past" in caps["inputs"]
        assert isinstance(caps["trainable"], bool)
    assert capabilities("lightgbm")["trainable"] is False
    assert "samples" in capabilities("hf_tst")["outputs"]
    model = build_model("patchtst", n_channels=2, context_length=16, horizon=3, d_model=8, n_heads=2, n_layers=1)
    assert isinstance(model, PatchTST)
    with pytest.raises(KeyError, match="known"):
        build_model("nope")


@pytest.mark.parametrize("bad", [[], [3], [-1], [0, 5]])
@pytest.mark.parametrize("model", ["patchtst", "dlinear", "hf_tst", "multimodal_diffusion"])
def test_every_forecaster_rejects_target_channels_it_does_not_have(model: str, bad: list[int]) -> None:
    with pytest.raises(FinfusionError, match="out of range for 3 input channels"):
        build_model(model, n_channels=3, context_length=32, horizon=4, target_index=bad)


def test_target_positions_default_to_every_channel() -> None:
    assert target_positions(None, 3) == [0, 1, 2] and target_positions((2, 0), 3) == [2, 0]
