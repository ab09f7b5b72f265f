"""Forward noising and the two reverse samplers, on diffusers' schedulers (no hand-written schedule).

Shapes: B batch, H horizon, T target channels. Training noises a clean path x_0 [B, H, T] to
x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps at timesteps t [B] drawn uniformly from the `train_timesteps` of the
schedule (`DDPMScheduler.add_noise`). Sampling starts from x_T ~ N(0, I) and steps a denoiser eps(x_t, t):

- "ddim": `DDIMScheduler` with eta = 0 (deterministic given x_T) on `steps` trailing timesteps (999, 979, ...), so
  that the first step starts from pure noise even with few steps;
- "ancestral": `DDPMScheduler`'s ancestral sampler, the full chain when `steps` equals `train_timesteps`.

Samples are not clipped (paths are normalised log returns, not bounded pixels). Because an epsilon error at high noise
is amplified by 1 / sqrt(abar_t) in the implied x_0, the denoiser predicts a correction to `prior_noise`, the exact
noise estimate for standard normal data (which normalised returns roughly are): an untrained network then samples
N(0, I) instead of paths blown up by 1 / sqrt(abar_T), and training refines the prior instead of discovering it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from diffusers import DDIMScheduler, DDPMScheduler
from diffusers.utils.torch_utils import randn_tensor
from torch import Tensor

from finfusion.errors import FinfusionError

Sampler = Literal["ddim", "ancestral"]
SAMPLERS: tuple[str, ...] = ("ddim", "ancestral")


class GaussianDiffusion:
    """An epsilon-prediction diffusion process of `train_timesteps` steps on the diffusers `beta_schedule`."""

    def __init__(self, train_timesteps: int = 1000, beta_schedule: str = "linear") -> None:
        self.train_timesteps = train_timesteps
        self.scheduler = DDPMScheduler(
            num_train_timesteps=train_timesteps,
            beta_schedule=beta_schedule,
            prediction_type="epsilon",
            clip_sample=False,
        )

    def timesteps(self, batch: int, device: torch.device, generator: torch.Generator | None = None) -> Tensor:
        """Uniform training timesteps [B] int64."""
        drawn = torch.randint(0, self.train_timesteps, (batch,), generator=generator, device=_device_of(generator))
        return drawn.to(device)

    def add_noise(self, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """x_t [B, H, T] from clean x0 [B, H, T], noise [B, H, T] and timesteps t [B]."""
        return self.scheduler.add_noise(x0, noise, t)

    def prior_noise(self, x_t: Tensor, t: Tensor) -> Tensor:
        """E[eps | x_t] = sqrt(1 - abar_t) x_t [B, H, T] when x_0 ~ N(0, I): the noise estimate of a standard normal
        prior, to which the denoiser adds its learned correction (t [B])."""
        abar = self.scheduler.alphas_cumprod.to(device=x_t.device, dtype=x_t.dtype)[t]
        return (1.0 - abar).sqrt().view(-1, *([1] * (x_t.dim() - 1))) * x_t

    def sample(
        self,
        denoise: Callable[[Tensor, Tensor], Tensor],
        shape: tuple[int, ...],
        steps: int,
        sampler: Sampler,
        generator: torch.Generator | None,
        device: torch.device,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        """Run the reverse chain of `sampler` for `steps` steps: denoise(x_t [*shape], t [shape[0]]) -> eps."""
        if sampler not in SAMPLERS:
            raise FinfusionError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
        if not 1 <= steps <= self.train_timesteps:
            raise FinfusionError(f"sampling steps must lie in 1..{self.train_timesteps}, got {steps}")
        if sampler == "ddim":
            scheduler = DDIMScheduler.from_config(self.scheduler.config, timestep_spacing="trailing")
            options = {"eta": 0.0}
        else:
            scheduler = DDPMScheduler.from_config(self.scheduler.config)
            options = {}
        scheduler.set_timesteps(steps, device=device)
        x = randn_tensor(shape, generator=generator, device=device, dtype=dtype) * scheduler.init_noise_sigma
        for t in scheduler.timesteps:
            eps = denoise(x, t.expand(shape[0]))
            x = scheduler.step(eps, t, x, generator=generator, **options).prev_sample
        return x


def _device_of(generator: torch.Generator | None) -> torch.device:
    return torch.device("cpu") if generator is None else generator.device
