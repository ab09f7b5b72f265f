"""The multimodal diffusion forecaster of seed 000: prices + same-day news -> sampled future return paths.

Shapes: B batch, L lookback, C input channels, H horizon, T target channels, N texts, S_tok tokens per text,
D_text text width, Q queries, S sampled paths.

    past [B, L, C] --PatchTST--> ts tokens [B, C*P, D_ts] --+
                                                             +--Q-Former--> condition [B, Q, D] --> diffusion decoder
    texts (text_emb [B, N, D_text], or text_ids [B, N, S_tok]  |                                  (sparse MoE, CFG)
           through MiniLM + LoRA) -----> text tokens ---------+                                   --> paths [B, S, H, T]

Training (`training_losses`): the diffusion MSE between the true and predicted noise on `future` [B, H, T], plus
weighted auxiliary losses: InfoNCE between the pooled price and text latents, the teacher-forced reconstruction of
`future` from the condition, and the MoE load balancing. Classifier-free guidance: during training the condition of a
sample is replaced by a learned null condition with probability `cond_dropout`; sampling mixes
eps = eps_null + w (eps_cond - eps_null) with guidance scale w (w = 0: unconditional, w = 1: conditional only).

Residual of a conditional mean (`diffusion.residual_of_mean`, on by default; after CARD, Han et al., NeurIPS 2022): a
linear head regresses the mean path mu(condition) [B, H, T] on `future` (MSE, weight `losses.mean`) and the chain
diffuses the residual future - mu, so samples are mu + residual. Epsilon-prediction alone learns a shift of the
conditional mean slowly: at most timesteps the noise hides it, so the decoder's loss barely depends on it (on the
synthetic market a 1-3 day news effect moved neither the paths' median nor their direction after hundreds of steps),
whereas the regression sees it in every step. Guidance mixes the means like the noise estimates:
mu = mu_null + w (mu_cond - mu_null).

`use_text=False` builds the price-only twin: the same architecture without the text side. Nothing here reads `future`
except `training_losses`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import torch
from diffusers.utils.torch_utils import randn_tensor
from torch import Tensor, nn

from finfusion.errors import FinfusionError
from finfusion.models.base import Capabilities, target_positions
from finfusion.models.multimodal.contrastive import ContrastiveAlignment
from finfusion.models.multimodal.diffusion import GaussianDiffusion, Sampler
from finfusion.models.multimodal.diffusion_decoder import DiffusionDecoder
from finfusion.models.multimodal.layers import masked_mean, masked_mse
from finfusion.models.multimodal.presets import resolve_config
from finfusion.models.multimodal.qformer import QFormer
from finfusion.models.multimodal.reconstruction import TeacherForcedHead
from finfusion.models.multimodal.text_encoder import MiniLMLoRAEncoder
from finfusion.models.multimodal.ts_encoder import PatchTSTLatentEncoder
from finfusion.samples.contract import (
    FUTURE,
    FUTURE_MASK,
    PAST,
    PAST_MASK,
    TEXT_EMB,
    TEXT_IDS,
    TEXT_IDS_MASK,
    TEXT_MASK,
)

Batch = Mapping[str, Tensor]
LOSS_PARTS: tuple[str, ...] = ("loss", "diffusion", "mean", "infonce", "reconstruction", "load_balance")


@dataclass
class Encoded:
    """The encoders' outputs for one batch: condition tokens and the pooled latents InfoNCE aligns."""

    condition: Tensor  # [B, Q, D]
    ts_pooled: Tensor  # [B, D_ts]
    text_pooled: Tensor | None  # [B, D_text]
    has_text: Tensor | None  # [B] bool


class MultimodalDiffusionForecaster(nn.Module, Capabilities):
    """Samples H-step paths of the T target channels given `past` and the texts of the decision bar.

    Size: `preset` ("tiny" or "full", see presets.py) with per-component overrides (mappings of that component's
    config fields). `target_index` [T] gives the positions of the targets among the C inputs (channel 0 by default).
    """

    inputs: ClassVar[frozenset[str]] = frozenset({PAST, PAST_MASK, TEXT_EMB, TEXT_MASK, TEXT_IDS, TEXT_IDS_MASK})
    outputs: ClassVar[frozenset[str]] = frozenset({"samples", "point"})
    #: Keyword options of `sample` the generative task may set for validation.
    sampler_options: ClassVar[frozenset[str]] = frozenset({"steps", "guidance_scale", "sampler"})
    trainable: ClassVar[bool] = True

    def __init__(
        self,
        n_channels: int,
        context_length: int,
        horizon: int,
        target_index: Sequence[int] = (0,),
        use_text: bool = True,
        preset: str = "tiny",
        ts_encoder: Mapping[str, Any] | None = None,
        text_encoder: Mapping[str, Any] | None = None,
        qformer: Mapping[str, Any] | None = None,
        decoder: Mapping[str, Any] | None = None,
        diffusion: Mapping[str, Any] | None = None,
        losses: Mapping[str, Any] | None = None,
        sampling: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        overrides = {
            "ts_encoder": ts_encoder, "text_encoder": text_encoder, "qformer": qformer, "decoder": decoder,
            "diffusion": diffusion, "losses": losses, "sampling": sampling,
        }  # fmt: skip
        self.config = config = resolve_config(preset, overrides)
        targets = target_positions(target_index, n_channels)
        self.register_buffer("target_index", torch.tensor(targets, dtype=torch.long), persistent=False)
        self.horizon = horizon
        self.use_text = use_text
        ts_cfg, text_cfg, q_cfg, dec_cfg = config.ts_encoder, config.text_encoder, config.qformer, config.decoder
        self.ts_encoder = PatchTSTLatentEncoder(n_channels, context_length, **asdict(ts_cfg))
        self.text_encoder: MiniLMLoRAEncoder | None = None
        self.alignment: ContrastiveAlignment | None = None
        if use_text:
            if text_cfg.backbone is not None:
                self.text_encoder = MiniLMLoRAEncoder(
                    text_cfg.backbone, text_cfg.lora_rank, text_cfg.lora_alpha, text_cfg.lora_dropout,
                    text_cfg.target_modules, text_cfg.load_weights,
                )  # fmt: skip
                if self.text_encoder.dim != text_cfg.embedding_dim:
                    raise FinfusionError(
                        f"text backbone {text_cfg.backbone!r} is {self.text_encoder.dim} wide but "
                        f"text_encoder.embedding_dim is {text_cfg.embedding_dim}"
                    )
            self.alignment = ContrastiveAlignment(
                ts_cfg.d_model, text_cfg.embedding_dim, config.losses.contrastive_dim, config.losses.temperature
            )
        self.qformer = QFormer(
            ts_cfg.d_model, text_cfg.embedding_dim if use_text else None, q_cfg.d_model, q_cfg.n_heads,
            q_cfg.n_layers, q_cfg.d_ff, q_cfg.n_queries, q_cfg.dropout,
        )  # fmt: skip
        self.null_condition = nn.Parameter(torch.randn(q_cfg.n_queries, q_cfg.d_model) * 0.02)
        self.decoder = DiffusionDecoder(
            horizon, len(targets), q_cfg.d_model, dec_cfg.d_model, dec_cfg.n_heads, dec_cfg.n_layers,
            dec_cfg.expert_hidden, dec_cfg.n_experts, dec_cfg.top_k, dec_cfg.dropout,
        )  # fmt: skip
        self.reconstruction = TeacherForcedHead(
            horizon, len(targets), q_cfg.d_model, q_cfg.n_heads, dec_cfg.recon_layers, 4 * q_cfg.d_model,
            q_cfg.dropout,
        )  # fmt: skip
        self.diffusion = GaussianDiffusion(config.diffusion.train_timesteps, config.diffusion.beta_schedule)
        self.mean_head: nn.Linear | None = None
        if config.diffusion.residual_of_mean:
            self.mean_head = nn.Linear(q_cfg.n_queries * q_cfg.d_model, horizon * len(targets))
            nn.init.zeros_(self.mean_head.weight)
            nn.init.zeros_(self.mean_head.bias)

    # -- stage 2 of the two-stage schedule -------------------------------------------------------------------------

    def text_base_parameters(self) -> Iterator[nn.Parameter]:
        """The MiniLM weights (frozen in stage 1); nothing when the model has no text encoder."""
        return iter(()) if self.text_encoder is None else self.text_encoder.base_parameters()

    def set_text_base_trainable(self, trainable: bool) -> None:
        """Unfreeze (stage 2) or freeze (stage 1) the MiniLM weights; the LoRA adapters always train."""
        if self.text_encoder is not None:
            self.text_encoder.set_base_trainable(trainable)

    def required_inputs(self) -> frozenset[str]:
        """`past` and its mask; with text, the texts' embeddings and, with a text encoder, their token ids."""
        if not self.use_text:
            return frozenset({PAST, PAST_MASK})
        texts = {TEXT_EMB, TEXT_MASK} | ({TEXT_IDS, TEXT_IDS_MASK} if self.text_encoder is not None else set())
        return frozenset({PAST, PAST_MASK, *texts})

    # -- encoding -------------------------------------------------------------------------------------------------

    def _texts(self, batch: Batch) -> tuple[Tensor, Tensor] | None:
        """Text tokens [B, N, D_text] and mask [B, N]: encoded `text_ids` when there is an encoder, else `text_emb`."""
        if not self.use_text:
            return None
        if TEXT_IDS in batch and self.text_encoder is not None:
            ids = batch[TEXT_IDS]
            return self.text_encoder(ids, batch.get(TEXT_IDS_MASK, ids != 0))
        if TEXT_EMB in batch:
            emb = batch[TEXT_EMB]
            width = self.config.text_encoder.embedding_dim
            if emb.dim() != 3 or emb.shape[-1] != width:
                raise FinfusionError(
                    f"text_emb must be [B, N, {width}] (text_encoder.embedding_dim), got {list(emb.shape)}"
                )
            mask = batch.get(TEXT_MASK)
            return emb, torch.ones(emb.shape[:2], dtype=torch.bool, device=emb.device) if mask is None else mask.bool()
        if TEXT_IDS in batch:
            raise FinfusionError("the batch has text_ids but the model has no text encoder (text_encoder.backbone)")
        raise FinfusionError(
            "the model reads text (use_text=True) but the batch has neither text_emb nor text_ids; "
            "use samples with texts, or build the price-only twin with use_text=False"
        )

    def encode(self, batch: Batch) -> Encoded:
        """The condition tokens [B, Q, D] of a batch and the pooled latents of each modality."""
        if PAST not in batch:
            raise FinfusionError("the batch has no `past` [B, L, C]")
        past = batch[PAST]
        ts_tokens, ts_mask = self.ts_encoder(past, batch.get(PAST_MASK))
        texts = self._texts(batch)
        text, text_mask = (None, None) if texts is None else texts
        condition = self.qformer(ts_tokens, ts_mask, text, text_mask)
        return Encoded(
            condition=condition,
            ts_pooled=masked_mean(ts_tokens, ts_mask),
            text_pooled=None if text is None else masked_mean(text, text_mask),
            has_text=None if text_mask is None else text_mask.any(dim=-1),
        )

    def mean_path(self, condition: Tensor) -> Tensor:
        """The conditional mean path [B, H, T] of condition [B, Q, D] (zeros without `residual_of_mean`)."""
        batch_size, shape = condition.shape[0], (self.horizon, len(self.target_index))
        if self.mean_head is None:
            return condition.new_zeros(batch_size, *shape)
        return self.mean_head(condition.flatten(1)).view(batch_size, *shape)

    def predict_noise(self, x_t: Tensor, t: Tensor, condition: Tensor) -> tuple[Tensor, Tensor]:
        """eps [B, H, T] for x_t [B, H, T] at timesteps t [B] given condition [B, Q, D]: the standard-normal prior's
        noise estimate plus the decoder's correction; and the decoder's MoE balance loss []."""
        correction, balance = self.decoder(x_t, t, condition)
        return self.diffusion.prior_noise(x_t, t) + correction, balance

    # -- training -------------------------------------------------------------------------------------------------

    def training_losses(self, batch: Batch, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """`loss` (the total) and its parts `diffusion`, `infonce`, `reconstruction`, `load_balance`, each [].

        Noise, timesteps and the condition dropout are drawn from `generator` (the global RNG when None)."""
        if FUTURE not in batch:
            raise FinfusionError("training needs `future` [B, H, T] in the batch")
        x0 = batch[FUTURE]
        expected = (self.horizon, len(self.target_index))
        if x0.dim() != 3 or tuple(x0.shape[1:]) != expected:
            raise FinfusionError(
                f"future must be [B, {expected[0]}, {expected[1]}] (horizon, targets), got {list(x0.shape)}"
            )
        mask = batch.get(FUTURE_MASK)
        encoded = self.encode(batch)
        batch_size = x0.shape[0]
        noise = randn_tensor(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        t = self.diffusion.timesteps(batch_size, x0.device, generator)
        condition = encoded.condition
        p_drop = self.config.diffusion.cond_dropout
        if self.training and p_drop > 0:
            draw_on = x0.device if generator is None else generator.device
            drop = torch.rand(batch_size, generator=generator, device=draw_on).to(x0.device) < p_drop
            condition = torch.where(drop[:, None, None], self.null_condition.to(condition.dtype), condition)
        mean = self.mean_path(condition)
        residual = x0 - mean.detach()
        eps, balance = self.predict_noise(self.diffusion.add_noise(residual, noise, t), t, condition)
        last = batch[PAST][:, -1:, :][..., self.target_index]
        recon = self.reconstruction(last, x0, encoded.condition)
        infonce = balance.new_zeros(())
        if self.alignment is not None and encoded.text_pooled is not None and encoded.has_text is not None:
            infonce = self.alignment(encoded.ts_pooled, encoded.text_pooled, encoded.has_text)
        parts = {
            "diffusion": masked_mse(eps, noise, mask),
            "mean": masked_mse(mean, x0, mask) if self.mean_head is not None else balance.new_zeros(()),
            "infonce": infonce,
            "reconstruction": masked_mse(recon, x0, mask),
            "load_balance": balance,
        }
        weights = self.config.losses
        parts["loss"] = (
            parts["diffusion"]
            + weights.mean * parts["mean"]
            + weights.infonce * parts["infonce"]
            + weights.reconstruction * parts["reconstruction"]
            + weights.load_balance * parts["load_balance"]
        )
        return parts

    # -- sampling -------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def sample(
        self,
        batch: Batch,
        num_samples: int | None = None,
        steps: int | None = None,
        guidance_scale: float | None = None,
        generator: torch.Generator | None = None,
        sampler: Sampler | None = None,
    ) -> Tensor:
        """Sampled paths [B, S, H, T] (normalised units of `future`): the conditional mean path plus the sampled
        residuals (see the module docstring); None arguments take the `sampling` config."""
        defaults = self.config.sampling
        paths = num_samples or defaults.num_samples
        scale = defaults.guidance_scale if guidance_scale is None else float(guidance_scale)
        condition = self.encode(batch).condition
        batch_size = condition.shape[0]
        cond = condition.repeat_interleave(paths, dim=0)  # [B * S, Q, D]
        null = self.null_condition.to(cond.dtype).expand_as(cond)

        def denoise(x: Tensor, t: Tensor) -> Tensor:
            if scale == 0.0:
                return self.predict_noise(x, t, null)[0]
            if scale == 1.0:
                return self.predict_noise(x, t, cond)[0]
            both = self.predict_noise(torch.cat([x, x]), torch.cat([t, t]), torch.cat([cond, null]))[0]
            conditional, unconditional = both.chunk(2)
            return unconditional + scale * (conditional - unconditional)

        shape = (batch_size * paths, self.horizon, len(self.target_index))
        x = self.diffusion.sample(
            denoise,
            shape,
            steps or defaults.steps,
            sampler or defaults.sampler,
            generator,
            cond.device,
            self.null_condition.dtype,
        )
        mean = self.mean_path(condition)
        if scale != 1.0:
            unconditional = self.mean_path(null[:batch_size])
            mean = unconditional + scale * (mean - unconditional)
        return x.view(batch_size, paths, *shape[1:]) + mean[:, None]

    # -- explanations ---------------------------------------------------------------------------------------------

    def explained_output(self, batch: Batch) -> Tensor:
        """The guided conditional mean path of the first target summed over the horizon [B]: the deterministic part
        of the forecast (sampled residuals add noise around it), which explanations attribute."""
        if self.mean_head is None:
            raise FinfusionError("the forecaster has no deterministic output to explain (diffusion.residual_of_mean)")
        condition = self.encode(batch).condition
        mean = self.mean_path(condition)
        scale = self.config.sampling.guidance_scale
        if scale != 1.0:
            unconditional = self.mean_path(self.null_condition.to(condition.dtype).expand_as(condition))
            mean = unconditional + scale * (mean - unconditional)
        return mean[..., 0].sum(dim=1)

    def attention_maps(self, batch: Batch) -> dict[str, Tensor]:
        """The Q-Former queries' cross-attention [B, n_layers, Q, K] over [register, price tokens, texts], with
        `ts_tokens` [] and `texts` [] giving the segments' lengths."""
        past = batch[PAST]
        ts_tokens, ts_mask = self.ts_encoder(past, batch.get(PAST_MASK))
        texts = self._texts(batch)
        text, text_mask = (None, None) if texts is None else texts
        weights = self.qformer.attention_maps(ts_tokens, ts_mask, text, text_mask)
        n_texts = 0 if text is None else text.shape[1]
        return {
            "weights": weights,
            "ts_tokens": torch.tensor(ts_tokens.shape[1]),
            "texts": torch.tensor(n_texts),
        }

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        """`samples` [B, S, H, T] with the `sampling` config's defaults and `point` [B, H, T], their median."""
        samples = self.sample(batch)
        return {"samples": samples, "point": samples.median(dim=1).values}
