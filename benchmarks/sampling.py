"""Diffusion sampling speed: DDIM at 50 steps against the full 1,000-step ancestral (DDPM) sampler, same model.

One tiny `MultimodalDiffusionForecaster` (the price-only twin, `tiny` preset, lookback 30, horizon 30 as in seed 000)
is trained briefly on windows of the seeded synthetic market: daily log returns of 8 symbols, z-scored per symbol on
the first 70% of the timeline (the training span, through `WindowDataset`); the held-out windows start after it.
Then, in the same run and on the same held-out windows, each sampler draws `--paths` paths per window:

- speed: paths per second of one `model.sample` call over the `--windows` held-out windows; the two samplers
  alternate call by call (so both see the same machine load), after one warm-up call of DDIM, and the median of
  `--repeats` calls each is reported;
- accuracy: CRPS of the sampled distribution against the realised normalised returns, mean over windows and steps.

Target: DDIM >= 15x the paths/s of the ancestral sampler with a CRPS within 5% of its CRPS.
The last line is one JSON object: {"benchmark": "sampling", "ours": ..., "reference": ..., "unit": "paths/s",
"ratio": ours / reference, "crps_ours": ..., "crps_reference": ...}.

    python benchmarks/sampling.py            # full size
    python benchmarks/sampling.py --quick    # few steps, to smoke-test the script
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from datetime import timedelta

import numpy as np
import torch

from finfusion.data.sources.synthetic import SyntheticConfig, generate_market
from finfusion.evaluation.metrics import crps_from_samples
from finfusion.models.multimodal.forecaster import MultimodalDiffusionForecaster
from finfusion.samples.contract import FUTURE, PAST, PAST_MASK
from finfusion.samples.windows import EPOCH, WindowConfig, WindowDataset, build_panel, collate
from finfusion.training.schedule import warmup_cosine_schedule

LOOKBACK, HORIZON, SYMBOLS, BATCH = 30, 30, 8, 64


def datasets(seed: int) -> tuple[WindowDataset, WindowDataset]:
    """Training windows (future inside the first 70% of sessions) and held-out windows (origin after it)."""
    bars = generate_market(SyntheticConfig(n_symbols=SYMBOLS, start="2012-01-01", end="2020-12-31", seed=seed)).bars
    panel = build_panel(bars)
    sessions = np.unique(np.concatenate(panel.ts))
    train_end = int(sessions[int(0.7 * len(sessions))])
    config = WindowConfig(LOOKBACK, HORIZON, train_end=EPOCH + timedelta(microseconds=train_end))
    everything = WindowDataset(panel, config)
    train = everything.subset(everything.future_end_us < train_end)
    return train, everything.subset(everything.origins_us >= train_end)


def train_model(train: WindowDataset, steps: int, seed: int) -> MultimodalDiffusionForecaster:
    torch.manual_seed(seed)
    model = MultimodalDiffusionForecaster(1, LOOKBACK, HORIZON, use_text=False, preset="tiny")
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.01)
    schedule = warmup_cosine_schedule(optimizer, steps, warmup_fraction=0.05)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        rows = torch.randint(len(train), (BATCH,), generator=gen).tolist()
        optimizer.zero_grad(set_to_none=True)
        model.training_losses(collate([train[i] for i in rows]))["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
    return model.eval()


def alternate(
    ours: Callable[[], torch.Tensor], ref: Callable[[], torch.Tensor], repeats: int
) -> tuple[float, float, torch.Tensor, torch.Tensor]:
    """Median seconds per call of each, calls alternating after one warm-up call of `ours`, and the last outputs
    (both callables draw from a fixed seed, so every call returns the same paths)."""
    ours()
    times_ours, times_ref = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        out_ours = ours()
        times_ours.append(time.perf_counter() - start)
        start = time.perf_counter()
        out_ref = ref()
        times_ref.append(time.perf_counter() - start)
    return statistics.median(times_ours), statistics.median(times_ref), out_ours, out_ref


def crps(samples: torch.Tensor, future: torch.Tensor) -> float:
    """Mean CRPS of samples [B, S, H, T] against future [B, H, T]."""
    return float(np.mean(crps_from_samples(future.numpy(), samples.permute(0, 2, 3, 1).numpy())))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-steps", type=int, default=400)
    parser.add_argument("--windows", type=int, default=8, help="held-out windows sampled per call")
    parser.add_argument("--paths", type=int, default=16, help="paths per window")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ddim-steps", type=int, default=50)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if args.quick:
        args.train_steps, args.windows, args.paths, args.repeats = 20, 2, 4, 1
    torch.set_num_threads(args.threads)
    train, test = datasets(args.seed)
    model = train_model(train, args.train_steps, args.seed)
    picks = np.linspace(0, len(test) - 1, args.windows).round().astype(int)
    batch = collate([test[int(i)] for i in picks])
    inputs = {key: batch[key] for key in (PAST, PAST_MASK)}
    full = model.diffusion.train_timesteps

    def ddim() -> torch.Tensor:
        return model.sample(inputs, args.paths, args.ddim_steps, 1.0, torch.Generator().manual_seed(1), "ddim")

    def ancestral() -> torch.Tensor:
        return model.sample(inputs, args.paths, full, 1.0, torch.Generator().manual_seed(1), "ancestral")

    seconds_ddim, seconds_ancestral, paths_ddim, paths_ancestral = alternate(ddim, ancestral, args.repeats)
    crps_ddim, crps_ancestral = crps(paths_ddim, batch[FUTURE]), crps(paths_ancestral, batch[FUTURE])
    crps_zero = float(batch[FUTURE].abs().mean())
    paths = args.windows * args.paths
    print(f"{len(train)} train / {len(test)} held-out windows; {args.train_steps} training steps; {paths} paths a call")
    print(f"CRPS of a point mass at 0 (the MAE of a zero forecast): {crps_zero:.4f}")
    print(f"{'':24s} {'paths/s':>10s} {'CRPS':>8s}")
    print(f"{f'DDIM {args.ddim_steps} steps':24s} {paths / seconds_ddim:10.1f} {crps_ddim:8.4f}")
    print(f"{f'ancestral {full} steps':24s} {paths / seconds_ancestral:10.1f} {crps_ancestral:8.4f}")
    result = {
        "benchmark": "sampling",
        "ours": round(paths / seconds_ddim, 2),
        "reference": round(paths / seconds_ancestral, 2),
        "unit": "paths/s",
        "ratio": round(seconds_ancestral / seconds_ddim, 3),
        "crps_ours": round(crps_ddim, 5),
        "crps_reference": round(crps_ancestral, 5),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
