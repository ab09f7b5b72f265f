"""Moirai's parts on small generated tensors: shapes, masks, the variate bias, rotary time, the scaler, the mixture
NLL against a direct computation, packing, the token budget and the patch size per frequency."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from finfusion.errors import FinfusionError
from finfusion.models.moirai.attention import AnyVariateAttention
from finfusion.models.moirai.distribution import MixtureHead, PatchMixture, packed_nll
from finfusion.models.moirai.forecaster import Moirai
from finfusion.models.moirai.module import MoiraiModule
from finfusion.models.moirai.presets import PRESETS, check_token_budget, patch_size_for
from finfusion.models.moirai.scaler import packed_std_scale
from finfusion.models.moirai.tokens import pack, window_tokens
from finfusion.models.registry import build_model


def tiny_module(seed: int = 0) -> MoiraiModule:
    torch.manual_seed(seed)
    return MoiraiModule(d_model=128, num_layers=2, patch_sizes=(4, 8), max_seq_len=64).eval()


def window_batch(batch: int = 3, lookback: int = 24, channels: int = 3, horizon: int = 6, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {
        "past": torch.randn(batch, lookback, channels, generator=g),
        "past_mask": torch.ones(batch, lookback, dtype=torch.bool),
        "future": torch.randn(batch, horizon, 2, generator=g),
        "future_mask": torch.ones(batch, horizon, dtype=torch.bool),
    }


def test_window_tokens_lay_out_targets_then_covariates_with_padding_and_horizon() -> None:
    batch = window_batch(batch=2, lookback=10, horizon=5)
    batch["past_mask"][1, :6] = False  # the second window has 4 bars of history
    tokens = window_tokens(batch["past"], batch["past_mask"], [0, 2], 5, 4, 8, batch["future"])
    # 2 targets x (3 context + 2 horizon patches) + 1 covariate x 3 context patches
    assert tokens.target.shape == (2, 13, 8) and tokens.sample_id.shape == (2, 13)
    assert tokens.variate_id[0].tolist() == [0] * 5 + [1] * 5 + [2] * 3
    assert tokens.prediction_mask[0].tolist() == [False] * 3 + [True] * 2 + [False] * 3 + [True] * 2 + [False] * 3
    # left padding: the first two patches of window 1 have no bar, so they are padding and time starts after them
    assert tokens.sample_id[1, :5].tolist() == [0, 0, 1, 1, 1]
    assert tokens.time_id[1, :5].tolist() == [0, 0, 0, 1, 2]
    assert tokens.time_id[0, :5].tolist() == [0, 1, 2, 3, 4]
    # values beyond the patch size and beyond the horizon are unobserved
    assert not tokens.observed[..., 4:].any()
    assert tokens.observed[0, 4].tolist()[:4] == [True, False, False, False]  # horizon 5 = one patch of 4 + 1 value
    assert torch.equal(tokens.target[0, 3, :4], batch["future"][0, :4, 0])


def test_module_shapes_and_the_masked_encoder_never_reads_the_values_it_forecasts() -> None:
    module = tiny_module()
    batch = window_batch()
    tokens = window_tokens(batch["past"], batch["past_mask"], [0, 2], 6, 4, 8, batch["future"])
    with torch.no_grad():
        mixture = module(*tokens.as_arguments())
        assert mixture.log_weights.shape == (*tokens.target.shape, 4)
        assert all(p.shape == tokens.target.shape for params in mixture.parameters for p in params.values())
        changed = window_tokens(batch["past"], batch["past_mask"], [0, 2], 6, 4, 8, batch["future"] * 100 + 7)
        again = module(*changed.as_arguments())
    torch.testing.assert_close(again.log_weights, mixture.log_weights, rtol=0, atol=0)
    torch.testing.assert_close(again.loc, mixture.loc, rtol=0, atol=0)


def test_samples_packed_in_a_row_do_not_see_each_other() -> None:
    module = tiny_module()
    batch = window_batch(batch=2)
    tokens = window_tokens(batch["past"], batch["past_mask"], [0, 2], 6, 4, 8, batch["future"])
    packed = pack(tokens, 2 * tokens.target.shape[1])
    assert packed.target.shape[0] == 1 and packed.sample_id[0].unique().tolist() == [1, 2]
    other = window_batch(batch=2, seed=5)
    replaced = window_tokens(
        torch.stack([batch["past"][0], other["past"][1]]), batch["past_mask"], [0, 2], 6, 4, 8, batch["future"]
    )
    with torch.no_grad():
        first = module(*pack(tokens, packed.target.shape[1]).as_arguments())
        second = module(*pack(replaced, packed.target.shape[1]).as_arguments())
    own = packed.sample_id[0] == 1
    assert own.sum() == tokens.target.shape[1]
    torch.testing.assert_close(first.log_weights[0, own], second.log_weights[0, own], rtol=0, atol=1e-6)
    assert not torch.allclose(first.log_weights[0, ~own], second.log_weights[0, ~own])


def test_the_variate_bias_separates_variates_and_is_equivariant_to_their_order() -> None:
    torch.manual_seed(0)
    attention = AnyVariateAttention(d_model=128, n_heads=2).eval()
    tokens, dim = 6, 128
    x = torch.randn(1, tokens, dim)
    variate = torch.tensor([[0, 0, 0, 1, 1, 1]])
    time = torch.tensor([[0, 1, 2, 0, 1, 2]])
    everyone = torch.ones(1, tokens, tokens, dtype=torch.bool)
    with torch.no_grad():
        attention.var_attn_bias.emb.weight.copy_(torch.tensor([[-1e4, -1e4], [0.0, 0.0]]))  # other variate: blocked
        base = attention(x, everyone, variate, time)
        y = x.clone()
        y[0, 3:] = torch.randn(3, dim)  # change every token of variate 1
        moved = attention(y, everyone, variate, time)
        torch.testing.assert_close(moved[0, :3], base[0, :3])  # variate 0 does not see variate 1
        attention.var_attn_bias.emb.weight.copy_(torch.tensor([[0.3, -0.2], [1.0, 0.5]]))
        mixed = attention(x, everyone, variate, time)
        renamed = attention(x, everyone, 1 - variate, time)  # the same grouping under other names
        swapped = attention(x[:, [3, 4, 5, 0, 1, 2]], everyone, variate, time[:, [3, 4, 5, 0, 1, 2]])
    torch.testing.assert_close(renamed, mixed)
    torch.testing.assert_close(swapped, mixed[:, [3, 4, 5, 0, 1, 2]], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(mixed[0, :3], base[0, :3])  # with a finite bias the variates do mix


def test_rotary_time_makes_attention_depend_on_time_differences_only() -> None:
    torch.manual_seed(1)
    attention = AnyVariateAttention(d_model=128, n_heads=2).eval()
    x = torch.randn(2, 5, 128)
    variate = torch.zeros(2, 5, dtype=torch.long)
    time = torch.arange(5).repeat(2, 1)
    mask = torch.ones(2, 5, 5, dtype=torch.bool)
    with torch.no_grad():
        base = attention(x, mask, variate, time)
        shifted = attention(x, mask, variate, time + 17)
        reordered = attention(x, mask, variate, time.flip(-1))
    torch.testing.assert_close(shifted, base, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(reordered, base, atol=1e-4)


def test_the_scaler_standardises_each_sample_and_variate_by_its_observed_context() -> None:
    g = torch.Generator().manual_seed(3)
    target = torch.randn(1, 6, 4, generator=g) * 5 + 2
    observed = torch.ones(1, 6, 4, dtype=torch.bool)
    observed[0, 1, 2:] = False
    sample = torch.tensor([[1, 1, 1, 2, 2, 0]])
    variate = torch.tensor([[0, 0, 1, 0, 0, 0]])
    loc, scale = packed_std_scale(target, observed, sample, variate)
    group = torch.cat([target[0, 0], target[0, 1, :2]]).double()
    assert loc[0, 0, 0] == pytest.approx(float(group.mean()), abs=1e-6)
    assert loc[0, 1, 0] == loc[0, 0, 0]
    assert scale[0, 0, 0] == pytest.approx(math.sqrt(float(group.var()) + 1e-5), abs=1e-6)
    assert loc[0, 2, 0] == pytest.approx(float(target[0, 2].double().mean()), abs=1e-6)
    assert loc[0, 3, 0] == pytest.approx(float(target[0, 3:5].double().mean()), abs=1e-6)
    assert loc[0, 5, 0] == 0 and scale[0, 5, 0] == 1  # padding


def _mixture(values: torch.Tensor) -> PatchMixture:
    torch.manual_seed(4)
    head = MixtureHead(16, (4,))
    reprs = torch.randn(1, values.shape[1], 16)
    loc = torch.full((1, values.shape[1], 1), 0.5)
    scale = torch.full((1, values.shape[1], 1), 2.0)
    with torch.no_grad():
        return head(reprs, torch.full((1, values.shape[1]), 4), loc, scale)


def test_the_mixture_log_likelihood_equals_a_direct_computation() -> None:
    values = torch.tensor([[[-3.0, 0.5, 2.5, 7.0], [0.5, 4.5, 12.5, -0.1]]])
    mixture = _mixture(values)
    ours = mixture.log_prob(values).numpy()
    w = mixture.log_weights.exp().numpy()
    (t, fixed, nb, lognormal) = [{k: v.numpy() for k, v in p.items()} for p in mixture.parameters]
    y = ((values - 0.5) / 2.0).numpy()
    density = (
        w[..., 0] * stats.t.pdf(y, t["df"], t["loc"], t["scale"])
        + w[..., 1] * stats.norm.pdf(y, fixed["loc"], 1e-3)
        + w[..., 3]
        * np.where(
            y > 0, stats.lognorm.pdf(np.maximum(y, 1e-12), lognormal["scale"], scale=np.exp(lognormal["loc"])), 0.0
        )
    )
    r, p_success = nb["total_count"], 1 / (1 + np.exp(nb["logits"]))  # torch: logits of the failure probability
    from scipy.special import gammaln

    nb_log = gammaln(y + r) - gammaln(r) - gammaln(y + 1) + r * np.log(p_success) + y * np.log1p(-p_success)
    density = density + w[..., 2] * np.where(y >= 0, np.exp(np.where(y >= 0, nb_log, 0.0)), 0.0)
    np.testing.assert_allclose(ours, np.log(density) - np.log(2.0), rtol=1e-4, atol=1e-5)


def test_the_packed_nll_averages_series_and_packing_does_not_change_it() -> None:
    model = build_model("moirai", n_channels=3, context_length=24, horizon=6, target_index=[0, 2], patch_size=8)
    batch = window_batch(batch=4)
    batch["past_mask"][1, :10] = False  # a short window: fewer tokens, which packing fits beside another
    batch["future_mask"][2, 4:] = False
    plain = model.training_losses(batch)["loss"]
    model.pack_rows = 2 * model.tokens
    packed = model.training_losses(batch)["loss"]
    torch.testing.assert_close(packed, plain, rtol=1e-5, atol=1e-6)
    tokens = model._tokens(batch, with_future=True)
    with torch.no_grad():
        mixture = model.module(*tokens.as_arguments())
    log_prob = mixture.log_prob(tokens.target)
    per_series = []
    for row in range(4):
        for variate in (0, 1):
            chosen = (tokens.variate_id[row] == variate) & tokens.prediction_mask[row]
            seen = tokens.observed[row, chosen]
            per_series.append(-log_prob[row, chosen][seen].mean())
    torch.testing.assert_close(plain.detach(), torch.stack(per_series).mean(), rtol=1e-5, atol=1e-6)
    direct = packed_nll(
        mixture, tokens.target, tokens.prediction_mask, tokens.observed, tokens.sample_id, tokens.variate_id
    )
    torch.testing.assert_close(direct, plain.detach(), rtol=1e-5, atol=1e-6)


def test_forecasts_ignore_the_future_and_repeat_with_a_generator() -> None:
    model = build_model("moirai", n_channels=3, context_length=24, horizon=6, target_index=[0, 2], patch_size=8)
    model.eval()
    batch = window_batch()
    first = model.sample(batch, 5, generator=torch.Generator().manual_seed(0))
    hidden = {k: v for k, v in batch.items() if not k.startswith("future")}
    again = model.sample(hidden, 5, generator=torch.Generator().manual_seed(0))
    assert first.shape == (3, 5, 6, 2)
    torch.testing.assert_close(again, first, rtol=0, atol=0)
    later = dict(batch, future=batch["future"] + 50.0)
    torch.testing.assert_close(model.sample(later, 5, generator=torch.Generator().manual_seed(0)), first)


def test_the_token_budget_fails_before_allocating_and_names_the_numbers() -> None:
    with pytest.raises(FinfusionError, match=r"3 variates .* = 389 tokens per sample > budget 256"):
        check_token_budget(2, 1, 1000, 56, 8, 256)
    with pytest.raises(FinfusionError, match=r"tokens per sample > budget 512"):
        Moirai(n_channels=40, context_length=4096, horizon=64, preset="large")
    assert check_token_budget(1, 4, 336, 48, 32, 512) == 1 * 13 + 4 * 11


def test_patch_size_follows_the_frequency_and_presets_have_the_papers_sizes() -> None:
    sizes = PRESETS["small"].patch_sizes
    assert patch_size_for("1h", sizes) == 32 and patch_size_for("1d", sizes) == 16 and patch_size_for("5m", sizes) == 32
    with pytest.raises(FinfusionError, match="no recommended patch size for 1d"):
        patch_size_for("1d", (8, 64))
    counts = {
        name: sum(p.numel() for p in MoiraiModule(s.d_model, s.num_layers).parameters())
        for name, s in PRESETS.items()
        if name in ("small", "base")
    }
    assert 13e6 < counts["small"] < 15e6 and 90e6 < counts["base"] < 93e6
