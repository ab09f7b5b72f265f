"""Multimodal forecaster components: PatchTST latents, MiniLM + LoRA, Q-Former, sparse MoE, parameter budget."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from sentence_transformers import SentenceTransformer

from finfusion.features.text import DEFAULT_ENCODER
from finfusion.models.multimodal.forecaster import MultimodalDiffusionForecaster
from finfusion.models.multimodal.moe import SparseMoE, load_balancing_loss
from finfusion.models.multimodal.qformer import QFormer
from finfusion.models.multimodal.text_encoder import (
    MiniLMLoRAEncoder,
    backbone_path,
    load_tokenizer,
    tokenize_texts,
)
from finfusion.models.multimodal.ts_encoder import PatchTSTLatentEncoder
from finfusion.samples.contract import TEXT_IDS, TEXT_IDS_MASK

pytestmark = pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")

TEXTS = [["Acme soars after blowout quarter", "Acme names a new CFO"], ["Apex slumps on a profit warning"]]


@pytest.fixture(scope="module")
def minilm() -> MiniLMLoRAEncoder:
    torch.manual_seed(0)
    return MiniLMLoRAEncoder(DEFAULT_ENCODER, lora_rank=8, lora_dropout=0.0).eval()


@pytest.fixture(scope="module")
def text_ids() -> dict[str, torch.Tensor]:
    return tokenize_texts(load_tokenizer(DEFAULT_ENCODER), TEXTS, max_texts=3, max_tokens=32)


def test_ts_encoder_shapes_and_masked_bars_do_not_matter() -> None:
    torch.manual_seed(0)
    encoder = PatchTSTLatentEncoder(n_channels=3, context_length=20, patch_len=4, stride=4, d_model=16, n_heads=2,
                                    n_layers=2, d_ff=32, dropout=0.0).eval()  # fmt: skip
    past = torch.randn(2, 20, 3)
    mask = torch.ones(2, 20, dtype=torch.bool)
    mask[1, :9] = False  # left padding: patches 0 and 1 of sample 1 are empty, patch 2 is partly observed
    tokens, token_mask = encoder(past, mask)
    assert tokens.shape == (2, 3 * 5, 16)
    assert token_mask[0].all()
    assert token_mask[1].view(3, 5).tolist() == [[False, False, True, True, True]] * 3
    garbage = past.clone()
    garbage[1, :9] = 1e3
    again, _ = encoder(garbage, mask)
    assert torch.allclose(again[1].view(3, 5, 16)[:, 2:], tokens[1].view(3, 5, 16)[:, 2:], atol=1e-5)
    assert torch.equal(again[0], tokens[0])


def test_qformer_output_shape_and_text_padding_changes_nothing() -> None:
    torch.manual_seed(0)
    qformer = QFormer(ts_dim=16, text_dim=24, d_model=32, n_heads=4, n_layers=2, d_ff=64, n_queries=4,
                      dropout=0.0).eval()  # fmt: skip
    ts, ts_mask = torch.randn(2, 6, 16), torch.ones(2, 6, dtype=torch.bool)
    text = torch.randn(2, 2, 24)
    text_mask = torch.tensor([[True, True], [True, False]])
    out = qformer(ts, ts_mask, text, text_mask)
    assert out.shape == (2, 4, 32)
    padded = torch.cat([text, 100 * torch.randn(2, 3, 24)], dim=1)
    padded_mask = torch.cat([text_mask, torch.zeros(2, 3, dtype=torch.bool)], dim=1)
    padded[1, 1] = -50.0  # the masked second slot of sample 1 holds garbage too
    assert torch.allclose(qformer(ts, ts_mask, padded, padded_mask), out, atol=1e-5)
    no_text = qformer(ts, ts_mask, text, torch.zeros(2, 2, dtype=torch.bool))
    assert torch.allclose(no_text, qformer(ts, ts_mask), atol=1e-5)
    assert not torch.allclose(no_text, out, atol=1e-3)


def test_top2_routing_sends_every_token_to_exactly_two_experts_with_gated_outputs() -> None:
    torch.manual_seed(0)
    moe = SparseMoE(d_model=8, hidden=16, n_experts=5, top_k=2).eval()
    x = torch.randn(3, 7, 8)
    probs, indices, gates = moe.route(x.reshape(-1, 8))
    assert indices.shape == (21, 2)
    assert all(len(set(row)) == 2 for row in indices.tolist())
    assert torch.allclose(gates.sum(dim=-1), torch.ones(21))
    assert torch.equal(indices, probs.topk(2, dim=-1).indices)
    out, _ = moe(x)
    flat = x.reshape(-1, 8)
    manual = torch.stack(
        [sum(g * moe.experts[int(e)](flat[i]) for e, g in zip(indices[i], gates[i], strict=True)) for i in range(21)]
    )
    assert torch.allclose(out.reshape(-1, 8), manual, atol=1e-6)


def test_load_balancing_loss_is_minimal_for_uniform_routing() -> None:
    n, experts = 64, 4
    uniform = torch.full((n, experts), 1.0 / experts)
    balanced = torch.stack([torch.arange(n) % experts, (torch.arange(n) + 1) % experts], dim=1)
    assert load_balancing_loss(uniform, balanced, experts).item() == pytest.approx(1.0)
    collapsed = torch.tensor([[0.9, 0.1, 0.0, 0.0]]).expand(n, -1)
    assert load_balancing_loss(collapsed, collapsed.topk(2).indices, experts).item() == pytest.approx(2.0)
    torch.manual_seed(0)
    moe = SparseMoE(d_model=8, hidden=16, n_experts=experts)
    x = torch.randn(n, 8)
    x[:, 0] = 1.0
    torch.nn.init.zeros_(moe.router.weight)
    assert moe(x)[1].item() == pytest.approx(1.0)
    weights = 0.3 * torch.randn(experts, 8)
    losses = []
    for bias in (0.5, 1.0, 2.0, 4.0):  # a router leaning ever harder towards expert 0
        with torch.no_grad():
            moe.router.weight.copy_(weights)
            moe.router.weight[0, 0] += bias
        losses.append(moe(x)[1].item())
    assert losses == sorted(losses) and losses[0] > 1.0
    optimizer = torch.optim.SGD(moe.router.parameters(), lr=0.5)
    for _ in range(200):  # minimising the loss alone spreads the load back out
        optimizer.zero_grad()
        moe(x)[1].backward()
        optimizer.step()
    _, indices, _ = moe.route(x)
    shares = torch.bincount(indices.flatten(), minlength=experts) / indices.numel()
    assert moe(x)[1].item() < min(1.05, losses[-1]) and shares.max().item() < 0.35


def test_tokenize_texts_pads_slots_and_tokens(text_ids: dict[str, torch.Tensor]) -> None:
    ids, mask = text_ids[TEXT_IDS], text_ids[TEXT_IDS_MASK]
    assert ids.shape[:2] == (2, 3) and ids.shape == mask.shape and ids.dtype == torch.long
    assert mask.any(dim=-1).tolist() == [[True, True, False], [True, False, False]]
    assert torch.equal(ids[~mask], torch.zeros_like(ids[~mask]))


def test_fresh_lora_encoder_matches_the_cached_sentence_embeddings(
    minilm: MiniLMLoRAEncoder, text_ids: dict[str, torch.Tensor]
) -> None:
    with torch.no_grad():
        emb, text_mask = minilm(text_ids[TEXT_IDS], text_ids[TEXT_IDS_MASK])
    assert emb.shape == (2, 3, 384)
    assert text_mask.tolist() == [[True, True, False], [True, False, False]]
    assert torch.equal(emb[~text_mask], torch.zeros(3, 384))
    reference = SentenceTransformer(str(backbone_path(DEFAULT_ENCODER)), device="cpu", local_files_only=True)
    expected = torch.from_numpy(reference.encode([text for sample in TEXTS for text in sample]))
    assert torch.allclose(emb[text_mask], expected, atol=1e-5)


def test_lora_trains_only_adapters_and_leaves_base_weights_untouched(text_ids: dict[str, torch.Tensor]) -> None:
    torch.manual_seed(0)
    encoder = MiniLMLoRAEncoder(DEFAULT_ENCODER, lora_rank=8, lora_dropout=0.0)
    assert all(module.training for module in encoder.modules())
    trainable = [name for name, param in encoder.named_parameters() if param.requires_grad]
    assert trainable and all("lora_" in name for name in trainable)
    assert len(trainable) == 6 * 2 * 2  # 6 layers x (query, value) x (A, B)
    assert sum(p.numel() for p in encoder.parameters() if p.requires_grad) == 6 * 2 * 8 * (384 + 384)
    base_before = {name: p.detach().clone() for name, p in encoder.named_parameters() if not p.requires_grad}
    lora_before = {name: p.detach().clone() for name, p in encoder.named_parameters() if p.requires_grad}
    optimizer = torch.optim.AdamW([p for p in encoder.parameters() if p.requires_grad], lr=1e-2)
    emb, _ = encoder(text_ids[TEXT_IDS], text_ids[TEXT_IDS_MASK])
    emb[..., :8].sum().backward()
    optimizer.step()
    after = dict(encoder.named_parameters())
    assert all(torch.equal(after[name], value) for name, value in base_before.items())
    assert any(not torch.equal(after[name], value) for name, value in lora_before.items())
    encoder.set_base_trainable(True)
    assert all(p.requires_grad for p in encoder.parameters())
    encoder.set_base_trainable(False)
    assert [n for n, p in encoder.named_parameters() if p.requires_grad] == trainable


def test_model_with_minilm_restores_from_safetensors_without_pretrained_weights(
    text_ids: dict[str, torch.Tensor], tmp_path: Path
) -> None:
    sizes = {"ts_encoder": {"d_model": 16, "n_heads": 2, "n_layers": 1, "d_ff": 32}, "sampling": {"steps": 4}}
    torch.manual_seed(0)
    model = MultimodalDiffusionForecaster(2, 16, 4, text_encoder={"backbone": DEFAULT_ENCODER}, **sizes).eval()
    restored = MultimodalDiffusionForecaster(
        2, 16, 4, text_encoder={"backbone": DEFAULT_ENCODER, "load_weights": False}, **sizes
    )
    save_file({key: value.contiguous() for key, value in model.state_dict().items()}, str(tmp_path / "m.safetensors"))
    restored.load_state_dict(load_file(str(tmp_path / "m.safetensors")), strict=True)
    restored.eval()
    batch = {"past": torch.randn(2, 16, 2), **text_ids}
    first = model.sample(batch, num_samples=3, generator=torch.Generator().manual_seed(1))
    second = restored.sample(batch, num_samples=3, generator=torch.Generator().manual_seed(1))
    assert torch.equal(first, second)
    with torch.no_grad():
        assert torch.allclose(model.encode(batch).text_pooled, restored.encode(batch).text_pooled)


def count(module: torch.nn.Module) -> int:
    return sum(param.numel() for param in module.parameters())


def test_full_preset_matches_the_seed_parameter_table_per_module() -> None:
    with torch.device("meta"):
        model = MultimodalDiffusionForecaster(
            n_channels=5, context_length=30, horizon=30, preset="full", text_encoder={"load_weights": False}
        )
    table = {"ts_encoder": 25e6, "qformer": 35e6, "decoder": 120e6}  # seed 000, "Parameter Budget"
    for name, expected in table.items():
        assert count(getattr(model, name)) == pytest.approx(expected, rel=0.15), name
    assert model.text_encoder is not None
    lora = sum(p.numel() for p in model.text_encoder.parameters() if p.requires_grad)
    assert lora == 6 * 2 * 8 * (384 + 384)
    assert count(model.text_encoder) - lora == pytest.approx(22.7e6, rel=0.01)  # MiniLM-L6-H384 itself
    assert len(model.decoder.blocks) == 12 and model.decoder.blocks[0].moe.top_k == 2
    assert model.qformer.queries.shape == (8, 256)
    assert len(model.ts_encoder.layers) == 8
