"""PatchTST throughput: our `finfusion.models.patchtst.PatchTST` against `transformers.PatchTSTForPrediction`.

Both models have the same shape: context 64, horizon 30, 5 channels, patches of 8 every 8 bars, d_model 128, 3 layers,
4 heads, feed-forward 256, no dropout. Windows come from the seeded synthetic market: daily log returns of 5 symbols
(x100), the first 70% of the timeline for training and the rest held out. Measured in the same run, on 2 threads:

- training windows/s: forward + MSE loss + backward + AdamW step on batches of 64; ours and the reference alternate
  step by step (so both see the same machine load) and the median step time after warm-up is reported;
- inference windows/s: the same, forward only under `torch.no_grad()` in eval mode;
- accuracy: both trained from their seeds for the same steps on the same batches, MSE on the held-out windows.

The last line is one JSON object: {"benchmark": "train_throughput", "ours": ..., "reference": ..., "unit": "windows/s",
"ratio": ours / reference, "inference_ratio": ..., "ours_mse": ..., "hf_mse": ...}.

    python benchmarks/train_throughput.py            # full size
    python benchmarks/train_throughput.py --quick    # few steps, to smoke-test the script
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from transformers import PatchTSTConfig, PatchTSTForPrediction

from finfusion.data.sources.synthetic import SyntheticConfig, generate_market
from finfusion.models.patchtst import PatchTST

CONTEXT, HORIZON, CHANNELS, BATCH = 64, 30, 5, 64
SIZES = {"patch_len": 8, "stride": 8, "d_model": 128, "n_layers": 3, "n_heads": 4, "d_ff": 256}


def market_windows(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """-> train windows [N, L + H, 5] and held-out windows [M, L + H, 5] of daily log returns x100."""
    bars = generate_market(SyntheticConfig(n_symbols=CHANNELS, start="2010-01-01", end="2020-12-31", seed=seed)).bars
    wide = bars.pivot(on="symbol", index="ts", values="adj_close").sort("ts").drop("ts").fill_null(strategy="forward")
    closes = wide.drop_nulls().to_numpy()
    returns = torch.from_numpy(100 * np.diff(np.log(closes), axis=0)).float()
    split = int(0.7 * len(returns))
    span = CONTEXT + HORIZON
    train, test = returns[:split], returns[split:]
    return train.unfold(0, span, 1).transpose(1, 2), test.unfold(0, span, 1).transpose(1, 2)


def build_models(seed: int) -> tuple[PatchTST, PatchTSTForPrediction]:
    torch.manual_seed(seed)
    ours = PatchTST(CHANNELS, CONTEXT, HORIZON, dropout=0.0, **SIZES)
    torch.manual_seed(seed)
    config = PatchTSTConfig(
        num_input_channels=CHANNELS,
        context_length=CONTEXT,
        prediction_length=HORIZON,
        patch_length=8,
        patch_stride=8,
        d_model=128,
        num_hidden_layers=3,
        num_attention_heads=4,
        ffn_dim=256,
        dropout=0.0,
    )
    return ours, PatchTSTForPrediction(config)


def steppers(
    ours: PatchTST, hf: PatchTSTForPrediction, lr: float
) -> tuple[Callable[[torch.Tensor], float], Callable[[torch.Tensor], float]]:
    """Training steps on a window batch [B, L + H, C] -> loss."""
    opt_ours = torch.optim.AdamW(ours.parameters(), lr=lr)
    opt_hf = torch.optim.AdamW(hf.parameters(), lr=lr)

    def step_ours(windows: torch.Tensor) -> float:
        opt_ours.zero_grad(set_to_none=True)
        loss = F.mse_loss(ours({"past": windows[:, :CONTEXT]})["point"], windows[:, CONTEXT:])
        loss.backward()
        opt_ours.step()
        return loss.item()

    def step_hf(windows: torch.Tensor) -> float:
        opt_hf.zero_grad(set_to_none=True)
        loss = hf(past_values=windows[:, :CONTEXT], future_values=windows[:, CONTEXT:]).loss
        loss.backward()
        opt_hf.step()
        return loss.item()

    return step_ours, step_hf


def alternate(ours: Callable[[], object], ref: Callable[[], object], warmup: int, steps: int) -> tuple[float, float]:
    """Median seconds per call of each, calls alternating after `warmup` calls of each."""
    for _ in range(warmup):
        ours()
        ref()
    times_ours, times_ref = [], []
    for _ in range(steps):
        start = time.perf_counter()
        ours()
        times_ours.append(time.perf_counter() - start)
        start = time.perf_counter()
        ref()
        times_ref.append(time.perf_counter() - start)
    return statistics.median(times_ours), statistics.median(times_ref)


def held_out_mse(ours: PatchTST, hf: PatchTSTForPrediction, test: torch.Tensor) -> tuple[float, float]:
    ours.eval()
    hf.eval()
    with torch.no_grad():
        past, future = test[:, :CONTEXT], test[:, CONTEXT:]
        mse_ours = float(F.mse_loss(ours({"past": past})["point"], future))
        mse_hf = float(F.mse_loss(hf(past_values=past).prediction_outputs, future))
    return mse_ours, mse_hf


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30, help="timed steps per model")
    parser.add_argument("--train-steps", type=int, default=300, help="steps of the accuracy check")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    steps, train_steps = (3, 5) if args.quick else (args.steps, args.train_steps)
    torch.set_num_threads(2)
    train, test = market_windows(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    order = torch.randint(len(train), (max(steps, train_steps) + 5, BATCH), generator=gen)
    fixed = train[order[0]]

    ours, hf = build_models(args.seed)
    step_ours, step_hf = steppers(ours, hf, lr=1e-4)
    train_ours, train_hf = alternate(lambda: step_ours(fixed), lambda: step_hf(fixed), 3, steps)
    ours.eval()
    hf.eval()
    with torch.no_grad():
        infer_ours, infer_hf = alternate(
            lambda: ours({"past": fixed[:, :CONTEXT]}), lambda: hf(past_values=fixed[:, :CONTEXT]), 3, steps
        )

    ours, hf = build_models(args.seed)
    ours.train()
    hf.train()
    step_ours, step_hf = steppers(ours, hf, lr=1e-4)
    for i in range(train_steps):
        step_ours(train[order[i]])
        step_hf(train[order[i]])
    mse_ours, mse_hf = held_out_mse(ours, hf, test)
    zero_mse = float(test[:, CONTEXT:].pow(2).mean())

    rows = [
        ("train windows/s", BATCH / train_ours, BATCH / train_hf),
        ("inference windows/s", BATCH / infer_ours, BATCH / infer_hf),
        (f"held-out MSE after {train_steps} steps", mse_ours, mse_hf),
    ]
    print(f"{len(train)} train / {len(test)} held-out windows; zero-forecast MSE {zero_mse:.4f}")
    print(f"{'':38s} {'ours':>12s} {'HF':>12s} {'ratio':>8s}")
    for label, a, b in rows:
        print(f"{label:38s} {a:12.4f} {b:12.4f} {a / b:8.3f}")
    result = {
        "benchmark": "train_throughput",
        "ours": round(BATCH / train_ours, 2),
        "reference": round(BATCH / train_hf, 2),
        "unit": "windows/s",
        "ratio": round(train_hf / train_ours, 4),
        "inference_ratio": round(infer_hf / infer_ours, 4),
        "ours_mse": round(mse_ours, 5),
        "hf_mse": round(mse_hf, 5),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
