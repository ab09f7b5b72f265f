"""Explanations: Integrated Gradients are complete (attributions sum to the output minus the baseline's), occlusion
and permutation importance measure what a model reads, the Q-Former's attention maps are distributions (after
training on news that moves prices, the news item outranks a distractor text: tests/test_multimodal_model.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from finfusion.errors import FinfusionError
from finfusion.evaluation.explain import Group, integrated_gradients, permutation_importance, text_occlusion
from finfusion.evaluation.explain_page import write_page
from finfusion.evaluation.explain_section import EXPLANATIONS_DIR, PLANTED_FILE, explanations_section
from finfusion.evaluation.explanation import parse_at
from finfusion.forecasting.explain import at_least
from finfusion.samples.contract import PAST, TEXT_EMB, TEXT_MASK
from tests.test_multimodal_model import generated, perturbed, tiny


class Linear(nn.Module):
    """output = sum over time of past channel 0 + 3 x the first width of every present text."""

    def explained_output(self, batch: dict[str, Tensor]) -> Tensor:
        texts = (batch[TEXT_EMB][..., 0] * batch[TEXT_MASK].float()).sum(dim=1)
        return batch[PAST][..., 0].sum(dim=1) + 3.0 * texts


def linear_batch() -> dict[str, Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {
        PAST: torch.randn(16, 10, 2, generator=generator),
        TEXT_EMB: torch.randn(16, 3, 4, generator=generator),
        TEXT_MASK: torch.tensor([[True, True, False]] * 16),
    }


def test_integrated_gradients_of_a_linear_model_are_exact() -> None:
    batch = linear_batch()
    found = integrated_gradients(Linear().explained_output, batch, [PAST, TEXT_EMB], steps=8)
    assert torch.allclose(found.values[PAST][..., 0], batch[PAST][..., 0], atol=1e-5)
    assert torch.all(found.values[PAST][..., 1] == 0)
    expected_text = 3.0 * batch[TEXT_EMB][..., 0] * batch[TEXT_MASK].float()
    assert torch.allclose(found.values[TEXT_EMB][..., 0], expected_text, atol=1e-5)
    assert torch.allclose(found.delta, torch.zeros(16), atol=1e-4)


def test_integrated_gradients_of_the_multimodal_forecaster_are_complete() -> None:
    model = perturbed(tiny())
    batch = generated(8, 5)
    found = integrated_gradients(model.explained_output, batch, [PAST, TEXT_EMB], steps=128)
    total = sum(value.flatten(1).sum(dim=1) for value in found.values.values())
    difference = found.output - found.baseline_output
    assert difference.abs().max() > 1e-3  # something to attribute
    assert torch.allclose(total, difference, atol=2e-3 + 0.02 * float(difference.abs().max()))


def test_occlusion_is_each_texts_own_effect_and_empty_slots_are_zero() -> None:
    batch = linear_batch()
    effects = text_occlusion(Linear().explained_output, batch)
    assert torch.allclose(effects[:, :2], 3.0 * batch[TEXT_EMB][:, :2, 0], atol=1e-5)
    assert torch.all(effects[:, 2] == 0)
    with pytest.raises(FinfusionError, match="no text_mask"):
        text_occlusion(Linear().explained_output, {PAST: batch[PAST]})


def test_permutation_importance_is_zero_for_what_the_model_ignores() -> None:
    batch = linear_batch()
    realised = Linear().explained_output(batch)
    groups = [Group("read", PAST, (0,)), Group("ignored", PAST, (1,)), Group("texts", TEXT_EMB, None, (TEXT_MASK,))]

    def squared_error(shuffled: dict[str, Tensor]) -> Tensor:
        return ((Linear().explained_output(shuffled) - realised) ** 2).mean()

    rises = permutation_importance(squared_error, batch, groups)
    assert rises["read"] > 0.5 and rises["texts"] > 0.5 and rises["ignored"] == 0.0


def test_attention_maps_are_distributions_over_the_unmasked_memory() -> None:
    model = perturbed(tiny())
    batch = generated(4, 2)
    maps = model.attention_maps(batch)
    weights = maps["weights"]  # [B, layers, Q, 1 + K_ts + N]
    assert weights.shape[:2] == (4, len(model.qformer.layers))
    assert weights.shape[-1] == 1 + int(maps["ts_tokens"]) + int(maps["texts"])
    assert torch.allclose(weights.sum(dim=-1), torch.ones(weights.shape[:-1]), atol=1e-5)
    empty = ~batch[TEXT_MASK]
    assert torch.all(weights[..., -int(maps["texts"]) :].permute(0, 3, 1, 2)[empty] == 0)


@pytest.mark.parametrize(
    ("text", "message"),
    [("AAPL", "is not SYMBOL:YYYY-MM-DD"), (":2020-01-02", "is not SYMBOL"), ("AAPL:02/01/2020", "is not a date")],
)
def test_a_bad_at_is_one_clear_error(text: str, message: str) -> None:
    with pytest.raises(FinfusionError, match=message):
        parse_at(text)
    assert parse_at("BRK:A:2020-01-02")[0] == "BRK:A"


def test_stored_explanations_render_as_a_report_section_and_a_results_page(tmp_path: Path) -> None:
    decision = {
        "symbol": "AAA", "decision": "2020-01-02T21:00:00+00:00", "model": "multimodal",
        "explained": "cumulative forecast of the first target over the horizon, normalised units", "output": 0.5,
        "baseline_output": 0.1, "completeness_gap": 1e-6, "totals": {"price inputs": 0.2, "texts": 0.19},
        "channels": ["log_return", "volume"],
        "channel_attributions": [0.3, -0.1], "heat": [[0.1, 0.0], [0.2, -0.1]],
        "texts": [
            {"slot": 0, "id": "a", "published_at": "2020-01-02T12:00", "title": "AAA wins <big> contract",
             "integrated_gradients": 0.2, "occlusion": 0.15, "attention": 0.3, "planted": True},
            {"slot": 1, "id": "b", "published_at": "2020-01-02T13:00", "title": "weather",
             "integrated_gradients": -0.01, "occlusion": 0.0, "attention": 0.1, "planted": False},
        ],
        "attention": {"register": 0.1, "price tokens": 0.5}, "permutation": {"log_return": 0.02, "texts": 0.05},
        "permutation_measure": "MSE", "planted_rank_first": True,
    }  # fmt: skip
    planted = {"span": "test", "windows": 10, "first_by_integrated_gradients": 7, "first_by_occlusion": 6,
               "rate_integrated_gradients": 0.7, "rate_occlusion": 0.6, "rate_by_chance": 0.4,
               "p_value": 0.05}  # fmt: skip
    folder = tmp_path / EXPLANATIONS_DIR
    folder.mkdir()
    assert explanations_section(tmp_path) is None
    (folder / "AAA_2020-01-02.json").write_text(json.dumps(decision))
    (folder / PLANTED_FILE).write_text(json.dumps(planted))
    section = explanations_section(tmp_path)
    assert section is not None and "AAA wins &lt;big&gt; contract" in section and "7 of 10" in section
    assert section.index("AAA wins") < section.index("weather")  # largest |IG| first
    page = write_page(
        tmp_path / "page.md",
        "finfusion explain run --at AAA:2020-01-02",
        {"decision": decision, "planted": planted},
        "finfusion train --config x --run run",
    )
    text = page.read_text()
    assert "finfusion explain run --at AAA:2020-01-02" in text and "in 7 (70.0%)" in text
    assert "| 2020-01-02T12:00 | AAA wins <big> contract | +0.2 | +0.15 | yes |" in text


def test_the_chance_of_ranking_a_planted_item_first_is_poisson_binomial() -> None:
    assert at_least(np.array([0.5, 0.5]), 2) == pytest.approx(0.25)
    assert at_least(np.array([0.5, 0.5]), 1) == pytest.approx(0.75)
    assert at_least(np.array([1.0, 0.2, 0.5]), 0) == pytest.approx(1.0)
    assert at_least(np.array([1.0, 0.2, 0.5]), 3) == pytest.approx(0.1)
