"""The multimodal diffusion forecaster end to end: losses, learning, sampling, guidance, checkpoints, the task."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from safetensors.torch import load_file, save_file
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from finfusion.errors import FinfusionError
from finfusion.evaluation.explain import integrated_gradients
from finfusion.features.text import DEFAULT_ENCODER
from finfusion.models.multimodal.forecaster import LOSS_PARTS, MultimodalDiffusionForecaster
from finfusion.models.multimodal.text_encoder import load_tokenizer, tokenize_texts
from finfusion.samples.contract import PAST, TEXT_EMB, TEXT_MASK
from finfusion.training.generative_task import GenerativeForecastTask

pytestmark = pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")

L_, C, H, N, D = 24, 2, 6, 3, 384
NEWS = F.normalize(torch.randn(D, generator=torch.Generator().manual_seed(123)), dim=0)


def generated(size: int, seed: int) -> dict[str, Tensor]:
    """Samples with a volatility regime visible in `past` and news that shifts `future`.

    Each sample is calm (scale 0.3) or volatile (2.0); half carry one text whose embedding is +/- a fixed direction,
    and its sign moves every future step by +/- 1.5."""
    gen = torch.Generator().manual_seed(seed)
    vol = torch.where(torch.rand(size, generator=gen) < 0.5, 0.3, 2.0)
    sign = torch.randint(0, 2, (size,), generator=gen).float() * 2 - 1
    has_news = torch.rand(size, generator=gen) < 0.5
    text_emb = torch.zeros(size, N, D)
    text_emb[has_news, -1] = sign[has_news, None] * NEWS
    text_mask = torch.zeros(size, N, dtype=torch.bool)
    text_mask[has_news, -1] = True
    shift = 1.5 * sign * has_news
    return {
        "past": vol[:, None, None] * torch.randn(size, L_, C, generator=gen),
        "past_mask": torch.ones(size, L_, dtype=torch.bool),
        "future": vol[:, None, None] * torch.randn(size, H, 1, generator=gen) + shift[:, None, None],
        "future_mask": torch.ones(size, H, dtype=torch.bool),
        TEXT_EMB: text_emb,
        TEXT_MASK: text_mask,
        "origin_us": torch.arange(size, dtype=torch.int64) + 1000 * seed,
        "symbol_index": torch.zeros(size, dtype=torch.int64),
    }


class Generated(Dataset[dict[str, Tensor]]):
    def __init__(self, size: int, seed: int) -> None:
        self.data = generated(size, seed)

    def __len__(self) -> int:
        return len(self.data["past"])

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {key: value[i] for key, value in self.data.items()}


def tiny(use_text: bool = True, **overrides: object) -> MultimodalDiffusionForecaster:
    torch.manual_seed(0)
    options: dict[str, object] = {"ts_encoder": {"patch_len": 6, "stride": 3}, "sampling": {"steps": 8}}
    options.update(overrides)
    return MultimodalDiffusionForecaster(C, L_, H, target_index=[0], use_text=use_text, preset="tiny", **options)


def train_on_generated(model: MultimodalDiffusionForecaster, steps: int) -> None:
    """`steps` AdamW steps (lr 3e-3) on fresh generated batches of 32, batch `step` seeded by its index."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for step in range(steps):
        optimizer.zero_grad()
        model.training_losses(generated(32, step))["loss"].backward()
        optimizer.step()


def perturbed(model: MultimodalDiffusionForecaster) -> MultimodalDiffusionForecaster:
    """The model with noise on every weight, so that zero-initialised output layers no longer hide the condition."""
    torch.manual_seed(1)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.1 * torch.randn_like(param))
    return model.eval()


def draw(model: MultimodalDiffusionForecaster, batch: dict[str, Tensor], seed: int, **kwargs: object) -> Tensor:
    return model.sample(batch, num_samples=4, generator=torch.Generator().manual_seed(seed), **kwargs)


def test_training_losses_report_every_part_and_their_weighted_total() -> None:
    model = tiny()
    parts = model.training_losses(generated(8, 0), generator=torch.Generator().manual_seed(0))
    assert set(parts) == set(LOSS_PARTS)
    assert all(value.dim() == 0 and torch.isfinite(value) for value in parts.values())
    weights = model.config.losses
    total = (
        parts["diffusion"]
        + weights.mean * parts["mean"]
        + weights.infonce * parts["infonce"]
        + weights.reconstruction * parts["reconstruction"]
        + weights.load_balance * parts["load_balance"]
    )
    assert torch.allclose(parts["loss"], total)
    assert parts["infonce"] > 0 and parts["load_balance"] >= 0.99
    parts["loss"].backward()
    assert model.alignment is not None and model.alignment.ts_head.weight.grad is not None
    assert model.ts_encoder.embed.weight.grad is not None and model.qformer.queries.grad is not None


def test_a_few_training_steps_make_the_loss_fall() -> None:
    model = tiny()
    held_out = generated(64, 99)

    def evaluate() -> dict[str, float]:
        model.eval()
        with torch.no_grad():
            parts = model.training_losses(held_out, generator=torch.Generator().manual_seed(0))
        return {name: value.item() for name, value in parts.items()}

    before = evaluate()
    train_on_generated(model, steps=40)
    after = evaluate()
    assert after["loss"] < 0.75 * before["loss"]
    assert after["diffusion"] < 0.85 * before["diffusion"]
    assert after["reconstruction"] < 0.8 * before["reconstruction"]
    assert after["mean"] < 0.8 * before["mean"]


@pytest.fixture(scope="module")
def trained() -> MultimodalDiffusionForecaster:
    """The tiny forecaster after 60 steps on the generated news (eval mode)."""
    model = tiny()
    train_on_generated(model, steps=60)
    return model.eval()


def test_sampled_paths_move_with_the_news_after_training(trained: MultimodalDiffusionForecaster) -> None:
    """The news shifts every future step by +/- 1.5: after training, the paths' median has the news' sign."""
    model = trained
    held_out = generated(64, 99)
    news = held_out[TEXT_MASK].any(dim=1)
    sign = held_out[TEXT_EMB][news, -1] @ NEWS
    median = draw(model.eval(), held_out, 0).median(dim=1).values.mean(dim=(1, 2))
    assert (torch.sign(median[news]) == torch.sign(sign)).float().mean() > 0.9


def test_after_training_integrated_gradients_rank_the_news_above_a_distractor_text(
    trained: MultimodalDiffusionForecaster,
) -> None:
    model = trained
    batch = generated(64, 77)
    news = batch[TEXT_MASK].any(dim=1)
    batch = {key: value[news] for key, value in batch.items()}
    distractor = torch.randn(int(news.sum()), NEWS.shape[0], generator=torch.Generator().manual_seed(3))
    batch[TEXT_EMB][:, 0] = torch.nn.functional.normalize(distractor, dim=1)
    batch[TEXT_MASK][:, 0] = True  # slot 0: an unrelated text; slot -1: the news
    found = integrated_gradients(model.explained_output, batch, [PAST, TEXT_EMB], steps=32)
    per_text = found.values[TEXT_EMB].sum(dim=-1).abs()
    assert (per_text[:, -1] > per_text[:, 0]).float().mean() > 0.8


def test_sample_shapes_and_forward_gives_the_median_as_point() -> None:
    model = perturbed(tiny(sampling={"num_samples": 5, "steps": 4}))
    batch = generated(3, 0)
    for sampler in ("ddim", "ancestral"):
        assert draw(model, batch, 0, sampler=sampler, steps=6).shape == (3, 4, H, 1)
    torch.manual_seed(5)
    out = model(batch)
    torch.manual_seed(5)
    again = model.sample(batch)
    assert out["samples"].shape == (3, 5, H, 1) and torch.equal(out["samples"], again)
    assert torch.equal(out["point"], again.median(dim=1).values)


def test_ddim_with_the_same_seed_is_deterministic() -> None:
    model = perturbed(tiny())
    batch = generated(3, 0)
    assert torch.equal(draw(model, batch, 7), draw(model, batch, 7))
    assert not torch.allclose(draw(model, batch, 7), draw(model, batch, 8))
    ancestral = {"sampler": "ancestral", "steps": 10}
    assert torch.equal(draw(model, batch, 7, **ancestral), draw(model, batch, 7, **ancestral))


def test_guidance_scale_zero_is_the_unconditional_model() -> None:
    model = perturbed(tiny())
    first, second = generated(3, 0), generated(3, 1)
    assert not torch.allclose(draw(model, first, 3, guidance_scale=1.0), draw(model, second, 3, guidance_scale=1.0))
    unconditional = draw(model, first, 3, guidance_scale=0.0)
    assert torch.equal(unconditional, draw(model, second, 3, guidance_scale=0.0))
    null = model.null_condition.expand(12, -1, -1)
    with torch.no_grad():
        direct = model.diffusion.sample(
            lambda x, t: model.predict_noise(x, t, null)[0], (12, H, 1), 8, "ddim", torch.Generator().manual_seed(3),
            torch.device("cpu"),
        )  # fmt: skip
        null_mean = model.mean_path(null[:3])
    assert torch.allclose(unconditional, direct.view(3, 4, H, 1) + null_mean[:, None], atol=1e-6)
    mixed = draw(model, first, 3, guidance_scale=2.0)
    assert not torch.allclose(mixed, unconditional) and torch.isfinite(mixed).all()


def test_samples_do_not_read_the_future() -> None:
    model = perturbed(tiny())
    batch = generated(3, 0)
    changed = {**batch, "future": batch["future"] + 100.0, "future_mask": torch.zeros(3, H, dtype=torch.bool)}
    assert torch.equal(draw(model, batch, 2), draw(model, changed, 2))


def test_text_padding_and_masked_slots_do_not_change_the_samples() -> None:
    model = perturbed(tiny())
    batch = generated(4, 0)
    wider = {
        **batch,
        TEXT_EMB: torch.cat([batch[TEXT_EMB], torch.randn(4, 2, D)], dim=1),
        TEXT_MASK: torch.cat([batch[TEXT_MASK], torch.zeros(4, 2, dtype=torch.bool)], dim=1),
    }
    assert torch.allclose(draw(model, batch, 0), draw(model, wider, 0), atol=1e-4)


def test_checkpoint_round_trip_through_safetensors_gives_identical_samples(tmp_path: Path) -> None:
    model = perturbed(tiny())
    path = tmp_path / "model.safetensors"
    save_file({key: value.contiguous() for key, value in model.state_dict().items()}, str(path))
    restored = tiny()
    restored.load_state_dict(load_file(str(path)), strict=True)
    restored.eval()
    batch = generated(3, 0)
    for kwargs in ({}, {"guidance_scale": 1.5}, {"sampler": "ancestral", "steps": 12}):
        assert torch.equal(draw(model, batch, 11, **kwargs), draw(restored, batch, 11, **kwargs))


def test_price_only_twin_has_no_text_side_and_ignores_texts() -> None:
    twin, full = tiny(use_text=False), tiny()
    assert twin.text_encoder is None and twin.alignment is None
    twin_names, full_names = set(twin.state_dict()), set(full.state_dict())
    assert twin_names < full_names
    assert all(name.startswith(("alignment.", "qformer.text_proj.")) for name in full_names - twin_names)
    batch = generated(4, 0)
    prices = {key: value for key, value in batch.items() if key not in (TEXT_EMB, TEXT_MASK)}
    parts = twin.training_losses(prices)
    assert parts["infonce"].item() == 0.0
    twin = perturbed(twin)
    assert torch.equal(draw(twin, prices, 0), draw(twin, batch, 0))


def test_bad_input_raises_clear_errors() -> None:
    model = tiny()
    batch = generated(2, 0)
    with pytest.raises(FinfusionError, match="neither text_emb nor text_ids"):
        model.sample({"past": batch["past"]})
    with pytest.raises(FinfusionError, match=r"text_emb must be \[B, N, 384\]"):
        model.sample({**batch, TEXT_EMB: torch.zeros(2, N, 10)})
    with pytest.raises(FinfusionError, match="text_ids but the model has no text encoder"):
        model.sample({"past": batch["past"], "text_ids": torch.ones(2, 1, 4, dtype=torch.long)})
    with pytest.raises(FinfusionError, match=r"future must be \[B, 6, 1\]"):
        model.training_losses({**batch, "future": torch.zeros(2, H + 1, 1)})
    with pytest.raises(FinfusionError, match=r"past has shape \[B, 20, 2\]"):
        model.sample({**batch, "past": torch.zeros(2, 20, C)})
    with pytest.raises(FinfusionError, match="unknown sampler"):
        model.sample(batch, sampler="euler")  # type: ignore[arg-type]
    with pytest.raises(FinfusionError, match="unknown decoder option"):
        tiny(decoder={"n_expert": 4})
    with pytest.raises(FinfusionError, match="unknown multimodal preset"):
        MultimodalDiffusionForecaster(C, L_, H, preset="huge")


def quiet_trainer(**kwargs: object) -> L.Trainer:
    options: dict[str, object] = dict(
        accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0,
    )  # fmt: skip
    options.update(kwargs)
    return L.Trainer(**options)


def test_generative_task_trains_logs_every_part_validates_samples_and_predicts() -> None:
    torch.manual_seed(0)
    task = GenerativeForecastTask(tiny(), lr=3e-3, val_num_samples=8, val_steps=5)
    train = DataLoader(Generated(96, 0), batch_size=16, shuffle=True)
    val = DataLoader(Generated(32, 1), batch_size=16)
    trainer = quiet_trainer(max_epochs=2, log_every_n_steps=1)
    trainer.fit(task, train, val)
    metrics = trainer.callback_metrics
    expected = {"val_loss", "val_crps", "val_coverage80", "val_directional_accuracy", "train_loss"}
    expected |= {f"{prefix}_{part}" for prefix in ("train", "val") for part in LOSS_PARTS if part != "loss"}
    assert expected <= set(metrics)
    assert 0.0 < metrics["val_crps"].item() < 2.0
    assert 0.0 <= metrics["val_coverage80"].item() <= 1.0
    assert 0.0 <= metrics["val_directional_accuracy"].item() <= 1.0
    predictions = quiet_trainer().predict(task, val)
    assert predictions[0]["samples"].shape == (16, task.model.config.sampling.num_samples, H, 1)
    assert predictions[0]["point"].shape == (16, H, 1)
    assert torch.equal(predictions[1]["origin_us"], torch.arange(16, 32) + 1000)
    assert "symbol_index" in predictions[0]


class Snapshots(Callback):
    """MiniLM's base weights and a LoRA matrix at the start and the end of every epoch."""

    def __init__(self) -> None:
        self.base: list[Tensor] = []
        self.lora: list[Tensor] = []
        self.trainable: list[bool] = []

    def _take(self, module: GenerativeForecastTask) -> None:
        encoder = module.model.text_encoder
        assert encoder is not None
        query = dict(encoder.model.named_parameters())
        prefix = "base_model.model.encoder.layer.0.attention.self.query"
        self.base.append(query[f"{prefix}.base_layer.weight"].detach().clone())
        self.lora.append(query[f"{prefix}.lora_B.default.weight"].detach().clone())

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._take(pl_module)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: object) -> None:
        self.trainable.append(all(p.requires_grad for p in pl_module.model.text_base_parameters()))

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._take(pl_module)


def test_two_stage_schedule_unfreezes_minilm_at_its_epoch_with_the_lower_lr() -> None:
    torch.manual_seed(0)
    model = tiny(text_encoder={"backbone": DEFAULT_ENCODER, "lora_dropout": 0.0})
    task = GenerativeForecastTask(model, lr=2e-4, text_lr=5e-5, unfreeze_text_epoch=1, warmup_fraction=0.0)
    texts = [["Acme soars after blowout quarter"], ["Apex slumps on a profit warning", "Apex names a new CFO"]] * 2
    batch = {
        key: value[:4] for key, value in generated(4, 0).items() if key not in (TEXT_EMB, TEXT_MASK)
    } | tokenize_texts(load_tokenizer(DEFAULT_ENCODER), texts, max_texts=2, max_tokens=16)
    loader = DataLoader([batch], batch_size=None)
    snapshots = Snapshots()
    trainer = quiet_trainer(max_epochs=2, limit_val_batches=0, callbacks=[snapshots])
    trainer.fit(task, loader)
    assert snapshots.trainable == [False, True]
    base_start0, base_end0, base_start1, base_end1 = snapshots.base
    assert torch.equal(base_start0, base_end0) and torch.equal(base_end0, base_start1)
    assert not torch.equal(base_start1, base_end1)
    assert not torch.equal(snapshots.lora[0], snapshots.lora[1])
    groups = trainer.optimizers[0].param_groups
    text_groups = [g for g in groups if g["initial_lr"] == 5e-5]
    assert text_groups and all(g["initial_lr"] == 2e-4 for g in groups if g not in text_groups)
    base_ids = {id(p) for p in model.text_base_parameters()}
    assert base_ids == {id(p) for g in text_groups for p in g["params"]}
