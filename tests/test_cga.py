"""The CGA portfolio model and its parts: gates, cross-attention masks, TimesNet periods, NO_NEWS, shapes, the
price-only twin, training lowers the loss, and a saved model reloads to identical logits."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor

from finfusion.models.build import build_model, load_model_state, save_model_state
from finfusion.models.portfolio.cga import CGAPortfolio
from finfusion.models.portfolio.cross_gated_attention import CrossAttention, CrossGatedAttention, gated_residual
from finfusion.models.portfolio.news_lstm import NewsLSTM
from finfusion.models.portfolio.timesnet import TimesBlock, TimesNetEncoder, dominant_periods
from finfusion.samples.contract import FUTURE, NEWS_COVERAGE, NEWS_EMB, NEWS_MASK, ORIGIN_US, PAST, PAST_MASK
from finfusion.training.portfolio_loss import PortfolioLoss

B, A, L, F, D = 4, 5, 12, 3, 8


pytestmark = pytest.mark.usefixtures("one_thread")


def make_batch(seed: int = 0, batch: int = B) -> dict[str, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    news_mask = torch.rand(batch, A, L, generator=gen) < 0.3
    coverage = torch.zeros(batch, A, L, A)
    coverage[news_mask] = torch.eye(A).expand(batch, L, A, A).transpose(1, 2)[news_mask]
    return {
        PAST: torch.randn(batch, A, L, F, generator=gen),
        PAST_MASK: torch.ones(batch, A, L, dtype=torch.bool),
        NEWS_EMB: torch.randn(batch, A, L, D, generator=gen) * news_mask.unsqueeze(-1),
        NEWS_MASK: news_mask,
        NEWS_COVERAGE: coverage,
        FUTURE: torch.randn(batch, A, 6, generator=gen) * 0.01,
        ORIGIN_US: torch.arange(batch, dtype=torch.int64),
    }


def small_model(**kwargs: object) -> CGAPortfolio:
    torch.manual_seed(0)
    options: dict[str, object] = {"n_features": F, "n_assets": A, "context_length": L, "text_dim": D, "d_model": 16}
    return CGAPortfolio(**(options | kwargs)).eval()  # type: ignore[arg-type]


# ---------------------------------------------------------------- gates and attention


def test_gated_residual_formula_on_a_hand_case() -> None:
    stream, attended = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([5.0, -1.0, 0.0])
    gate = torch.tensor([0.0, 1.0, 0.25])
    assert torch.equal(gated_residual(stream, attended, gate), torch.tensor([1.0, -1.0, 2.25]))


def identity_attention(attention: CrossAttention) -> None:
    for layer in (attention.query, attention.key, attention.value, attention.out):
        torch.nn.init.eye_(layer.weight)
        torch.nn.init.zeros_(layer.bias)


def test_cross_gated_attention_matches_the_formula_on_a_hand_case() -> None:
    cga = CrossGatedAttention(d_model=2, n_heads=1)
    identity_attention(cga.news_to_market)
    identity_attention(cga.market_to_news)
    with torch.no_grad():
        for gate in (cga.news_gate, cga.market_gate):
            gate.weight.zero_()
            gate.weight[0, 2] = 1.0  # gate dimension 0 reads attended dimension 0; dimension 1 only its bias
            gate.bias.copy_(torch.tensor([0.0, math.log(3.0)]))  # sigmoid(log 3) = 0.75
    news = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    market = torch.tensor([[[2.0, 0.0], [0.0, -1.0]]])
    news_out, market_out = cga(news, market)

    def attend(query: np.ndarray, keys: np.ndarray) -> np.ndarray:
        scores = query @ keys.T / math.sqrt(2.0)
        probs = np.exp(scores - scores.max(axis=1, keepdims=True))
        return (probs / probs.sum(axis=1, keepdims=True)) @ keys

    def expected(stream: np.ndarray, attended: np.ndarray) -> np.ndarray:
        gate = np.stack([1 / (1 + np.exp(-attended[:, 0])), np.full(len(stream), 0.75)], axis=1)
        return gate * attended + (1 - gate) * stream

    n, m = news[0].numpy().astype(np.float64), market[0].numpy().astype(np.float64)
    assert np.allclose(news_out[0].detach().numpy(), expected(n, attend(n, m)), atol=1e-6)
    assert np.allclose(market_out[0].detach().numpy(), expected(m, attend(m, n)), atol=1e-6)


def test_a_closed_gate_returns_each_stream_unchanged() -> None:
    torch.manual_seed(0)
    cga = CrossGatedAttention(d_model=8, n_heads=2)
    with torch.no_grad():
        for gate in (cga.news_gate, cga.market_gate):
            gate.weight.zero_()
            gate.bias.fill_(-1e4)  # sigmoid underflows to exactly 0
    news, market = torch.randn(3, 4, 8), torch.randn(3, 4, 8)
    news_out, market_out = cga(news, market)
    assert torch.equal(news_out, news)
    assert torch.equal(market_out, market)


def test_masked_keys_do_not_reach_the_output() -> None:
    torch.manual_seed(0)
    attention = CrossAttention(8, 2)
    x, y = torch.randn(2, 3, 8), torch.randn(2, 4, 8)
    mask = torch.tensor([[True, True, False, False], [False, False, False, False]])
    changed = y.clone()
    changed[0, 2:] = torch.randn(2, 8)
    out, out_changed = attention(x, y, mask), attention(x, changed, mask)
    assert torch.allclose(out[0], out_changed[0])
    assert torch.isfinite(out[1]).all()  # no visible key: attends to all rather than NaN


# ---------------------------------------------------------------- TimesNet


def test_dominant_period_of_a_sine_is_found() -> None:
    t = torch.arange(48, dtype=torch.float32)
    x = torch.stack([torch.sin(2 * math.pi * t / 8), torch.sin(2 * math.pi * t / 12)]).unsqueeze(-1)  # [2, 48, 1]
    periods, amplitudes = dominant_periods(x, 1)
    assert periods[:, 0].tolist() == [8, 12]
    assert (amplitudes > 0).all()
    with pytest.raises(ValueError, match="periods"):
        dominant_periods(x, 25)


def test_times_block_output_of_a_series_does_not_depend_on_its_batch() -> None:
    torch.manual_seed(0)
    block = TimesBlock(d_model=8, d_ff=8, k=2, n_kernels=2).eval()
    x = torch.randn(6, 20, 8)
    alone = torch.cat([block(x[i : i + 1]) for i in range(6)])
    together = block(x)
    assert together.shape == (6, 20, 8)
    assert torch.allclose(alone, together, atol=1e-5)


def test_timesnet_encoder_zeroes_unobserved_steps() -> None:
    torch.manual_seed(0)
    encoder = TimesNetEncoder(F, L, d_model=8, d_ff=8).eval()
    mask = torch.ones(2, L, dtype=torch.bool)
    mask[0, :4] = False
    out = encoder(torch.randn(2, L, F), mask)
    assert out.shape == (2, L, 8)
    assert (out[0, :4] == 0).all() and (out[0, 4:] != 0).any()


# ---------------------------------------------------------------- news stream and the whole model


def test_no_news_embedding_fills_bars_without_news() -> None:
    torch.manual_seed(0)
    lstm = NewsLSTM(text_dim=D, n_symbols=A, hidden=16)
    batch = make_batch()
    texts = lstm.texts(batch[NEWS_EMB], batch[NEWS_MASK])
    mask = batch[NEWS_MASK]
    assert torch.equal(texts[~mask], lstm.no_news.detach().expand(int((~mask).sum()), D))
    assert torch.equal(texts[mask], batch[NEWS_EMB][mask])
    noisy = batch[NEWS_EMB] + torch.randn_like(batch[NEWS_EMB]) * (~mask).unsqueeze(-1)
    out = lstm(batch[NEWS_EMB], mask, batch[NEWS_COVERAGE])
    assert out.shape == (B, A, 16)
    assert torch.equal(out, lstm(noisy, mask, batch[NEWS_COVERAGE]))
    with torch.no_grad():
        lstm.no_news.add_(1.0)
    assert not torch.allclose(out, lstm(batch[NEWS_EMB], mask, batch[NEWS_COVERAGE]))


def test_model_shapes_and_absent_assets() -> None:
    model = small_model()
    batch = make_batch()
    batch[PAST_MASK][1, 3] = False
    logits = model(batch)["logits"]
    assert logits.shape == (B, A)
    assert logits[1, 3] == 0 and (logits[0] != 0).all()
    with pytest.raises(ValueError, match="assets"):
        model({**batch, PAST: batch[PAST][:, :3], PAST_MASK: batch[PAST_MASK][:, :3]})
    assert CGAPortfolio.outputs == {"logits"} and NEWS_EMB in CGAPortfolio.inputs


def test_news_moves_the_logits_and_the_price_only_twin_ignores_it() -> None:
    batch = make_batch()
    louder = {**batch, NEWS_EMB: batch[NEWS_EMB] * 3.0}
    model = small_model()
    assert not torch.allclose(model(batch)["logits"], model(louder)["logits"])
    twin = small_model(use_news=False)
    price_only = {PAST: batch[PAST], PAST_MASK: batch[PAST_MASK]}
    assert torch.equal(twin(price_only)["logits"], twin(louder)["logits"])
    assert twin.news is None and twin.fusion is None
    assert sum(p.numel() for p in twin.parameters()) < sum(p.numel() for p in model.parameters())


def test_a_few_steps_lower_the_loss() -> None:
    model = small_model(dropout=0.0).train()
    batch = make_batch(seed=1, batch=16)
    signal = batch[NEWS_EMB][..., 0].sum(dim=-1)  # [B, A]: the news pushes each asset's returns
    batch[FUTURE] = signal.unsqueeze(-1) * 0.01 + 0.002 * torch.randn(16, A, 6, generator=torch.Generator())
    loss_fn = PortfolioLoss(k=2, dist_weight=0.0, net_weight=0.0)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(25):
        loss = loss_fn(model(batch), batch)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.2


def test_saved_model_reloads_to_identical_logits(tmp_path: Path) -> None:
    part = {"name": "cga", "context_length": L, "text_dim": D, "d_model": 16, "n_heads": 2}
    arguments = {"n_features": 3, "n_assets": A}
    torch.manual_seed(3)
    model = build_model(part, arguments).eval()
    save_model_state(model, tmp_path)
    loaded = load_model_state(build_model(part, arguments), tmp_path)
    batch = make_batch(seed=2)
    assert torch.equal(model(batch)["logits"], loaded(batch)["logits"])
