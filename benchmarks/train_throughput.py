"""PatchTST throughput: our `finfusion.models.patchtst.PatchTST` against `transformers.PatchTSTForPrediction`.

Both models have the same shape: context 64, horizon 30, 5 channels, patches of 8 every 8 bars, d_model 128, 3 layers,
4 heads, feed-forward 256, no dropout, and the same flatten head (P * D -> H, shared by the channels, as in the paper;
the reference's default `pooling_type="mean"` head is switched off so that both models compute the same thing). One
difference stays by default: the reference normalises with its default BatchNorm, ours with LayerNorm;
`--reference-norm layernorm` gives the reference our norm too (it is then faster, and a little more accurate).
Windows come from the seeded synthetic market with price-predictable structure (by default that of
configs/data/synthetic_structured: AR(1) momentum 0.5 of the daily shocks, no news; `--autocorrelation 0.9` plants
stronger structure), so that accuracy is compared where there is something to learn: daily log returns of 5 symbols
(x100), the first 70% of the timeline for training and the rest held out.

Measured in one process on `--threads` threads: by default torch's own default (one per physical core), which is
what a user's training run gets; `--threads 1` measures single-core efficiency, where both models are bound by the
same fp32 matrix products and the gap is narrower (docs/results/throughput.md):

- training windows/s: forward + MSE loss + backward + AdamW step on batches of 64, both models in train mode; ours and
  the reference alternate call by call (so both see the same machine load) and the median wall time after warm-up
  is reported;
- inference windows/s: the same for the forward pass alone, both in eval mode under `torch.inference_mode()`;
- accuracy: for each of `--seeds` seeds both models start from that seed and take the same number of AdamW steps on
  the same batches; MSE and MASE (scaled by each window's in-sample naive error) on the held-out windows, averaged.

The last line is one JSON object: {"benchmark": "train_throughput", "ours": train windows/s, "reference": ...,
"unit": "windows/s", "ratio": min(train_ratio, inference_ratio), "train_ratio": ..., "inference_ratio": ...,
"ours_inference": ..., "reference_inference": ..., "ours_mse": ..., "hf_mse": ..., "ours_mase": ..., "hf_mase": ...,
"mse_seed_spread": ..., "threads": ..., "reference_norm": ..., "autocorrelation": ..., "zero_mse": ...} (the spread is
the standard deviation over seeds of the difference ours - HF in MSE, the yardstick for "equal accuracy"; zero_mse is
the held-out MSE of forecasting zero returns, the floor a model has to beat to have learnt anything).

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
from finfusion.evaluation.metrics import mase
from finfusion.models.patchtst import PatchTST

CONTEXT, HORIZON, CHANNELS, BATCH = 64, 30, 5, 64
SIZES = {"patch_len": 8, "stride": 8, "d_model": 128, "n_layers": 3, "n_heads": 4, "d_ff": 256}


def market_windows(seed: int, autocorrelation: float) -> tuple[torch.Tensor, torch.Tensor]:
    """-> train windows [N, L + H, 5] and held-out windows [M, L + H, 5] of daily log returns x100."""
    config = SyntheticConfig(
        n_symbols=CHANNELS,
        start="2010-01-01",
        end="2020-12-31",
        seed=seed,
        return_autocorrelation=autocorrelation,
        news_rate=0.0,
        noise_news_rate=0.0,
    )
    bars = generate_market(config).bars
    wide = bars.pivot(on="symbol", index="ts", values="adj_close").sort("ts").drop("ts").fill_null(strategy="forward")
    closes = wide.drop_nulls().to_numpy()
    returns = torch.from_numpy(100 * np.diff(np.log(closes), axis=0)).float()
    split = int(0.7 * len(returns))
    span = CONTEXT + HORIZON
    train, test = returns[:split], returns[split:]
    return train.unfold(0, span, 1).transpose(1, 2), test.unfold(0, span, 1).transpose(1, 2)


def build_models(seed: int, reference_norm: str = "batchnorm") -> tuple[PatchTST, PatchTSTForPrediction]:
    torch.manual_seed(seed)
    ours = PatchTST(CHANNELS, CONTEXT, HORIZON, dropout=0.0, **SIZES)
    torch.manual_seed(seed)
    config = PatchTSTConfig(
        num_input_channels=CHANNELS,
        context_length=CONTEXT,
        prediction_length=HORIZON,
        patch_length=SIZES["patch_len"],
        patch_stride=SIZES["stride"],
        d_model=SIZES["d_model"],
        num_hidden_layers=SIZES["n_layers"],
        num_attention_heads=SIZES["n_heads"],
        ffn_dim=SIZES["d_ff"],
        dropout=0.0,
        pooling_type=None,
        norm_type=reference_norm,
    )
    return ours, PatchTSTForPrediction(config)


def steppers(
    ours: PatchTST, hf: PatchTSTForPrediction, lr: float
) -> tuple[Callable[[torch.Tensor], float], Callable[[torch.Tensor], float]]:
    """Training steps on a window batch [B, L + H, C] -> loss (MSE in the input's units for both)."""
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
    """Median wall seconds per call of each, calls alternating after `warmup` calls of each."""
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


def held_out_scores(model: Callable[[torch.Tensor], torch.Tensor], test: torch.Tensor) -> tuple[float, float]:
    """model: past [M, L, C] -> forecast [M, H, C]; test windows [M, L + H, C] -> (MSE, MASE) over all channels."""
    past, future = test[:, :CONTEXT], test[:, CONTEXT:]
    with torch.inference_mode():
        forecast = model(past)
    rows = past.shape[0] * past.shape[2]
    per_row = (t.transpose(1, 2).reshape(rows, -1).numpy() for t in (future, forecast, past))
    return float(F.mse_loss(forecast, future)), mase(*per_row)


def accuracy(
    seed: int, train: torch.Tensor, test: torch.Tensor, steps: int, lr: float, reference_norm: str
) -> tuple[tuple[float, float], tuple[float, float]]:
    """Both models from `seed`, `steps` AdamW steps on the same batches -> ((MSE, MASE) ours, (MSE, MASE) HF)."""
    ours, hf = build_models(seed, reference_norm)
    step_ours, step_hf = steppers(ours, hf, lr)
    order = torch.randint(len(train), (steps, BATCH), generator=torch.Generator().manual_seed(seed))
    for batch in order:
        step_ours(train[batch])
        step_hf(train[batch])
    ours.eval()
    hf.eval()
    return (
        held_out_scores(lambda past: ours({"past": past})["point"], test),
        held_out_scores(lambda past: hf(past_values=past).prediction_outputs, test),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50, help="timed calls per model and mode")
    parser.add_argument("--train-steps", type=int, default=300, help="AdamW steps of the accuracy check")
    parser.add_argument("--seeds", type=int, default=3, help="model seeds of the accuracy check, averaged")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="default: torch's default")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic market")
    parser.add_argument(
        "--reference-norm",
        choices=["batchnorm", "layernorm"],
        default="batchnorm",
        help="the reference's norm_type: its default BatchNorm, or LayerNorm like ours",
    )
    parser.add_argument(
        "--autocorrelation", type=float, default=0.5, help="AR(1) coefficient of the synthetic market's daily shocks"
    )
    args = parser.parse_args()
    steps, train_steps, seeds = (3, 5, 1) if args.quick else (args.steps, args.train_steps, args.seeds)
    torch.set_num_threads(args.threads)
    train, test = market_windows(args.seed, args.autocorrelation)
    fixed = train[torch.randint(len(train), (BATCH,), generator=torch.Generator().manual_seed(args.seed))]

    ours, hf = build_models(args.seed, args.reference_norm)
    step_ours, step_hf = steppers(ours, hf, lr=1e-4)
    train_ours, train_hf = alternate(lambda: step_ours(fixed), lambda: step_hf(fixed), 3, steps)
    ours.eval()
    hf.eval()
    past = fixed[:, :CONTEXT]
    with torch.inference_mode():
        infer_ours, infer_hf = alternate(lambda: ours({"past": past}), lambda: hf(past_values=past), 3, steps)

    scores = [accuracy(args.seed + i, train, test, train_steps, 1e-4, args.reference_norm) for i in range(seeds)]
    (mse_ours, mase_ours), (mse_hf, mase_hf) = (np.mean([s[k] for s in scores], axis=0) for k in (0, 1))
    mse_gaps = [s[0][0] - s[1][0] for s in scores]
    zero_mse, zero_mase = held_out_scores(lambda past: past.new_zeros(len(past), HORIZON, CHANNELS), test)
    rows = [
        ("train windows/s", BATCH / train_ours, BATCH / train_hf),
        ("inference windows/s", BATCH / infer_ours, BATCH / infer_hf),
        (f"held-out MSE, {train_steps} steps, {seeds} seeds", mse_ours, mse_hf),
        (f"held-out MASE, {train_steps} steps, {seeds} seeds", mase_ours, mase_hf),
    ]
    print(f"{len(train)} train / {len(test)} held-out windows; zero forecast MSE {zero_mse:.4f} MASE {zero_mase:.4f}")
    print(f"{'':40s} {'ours':>12s} {'HF':>12s} {'ratio':>8s}")
    for label, a, b in rows:
        print(f"{label:40s} {a:12.4f} {b:12.4f} {a / b:8.3f}")
    print("held-out MSE per seed, ours / HF: " + ", ".join(f"{s[0][0]:.4f} / {s[1][0]:.4f}" for s in scores))
    train_ratio, inference_ratio = train_hf / train_ours, infer_hf / infer_ours
    result = {
        "benchmark": "train_throughput",
        "ours": round(BATCH / train_ours, 2),
        "reference": round(BATCH / train_hf, 2),
        "unit": "windows/s",
        "ratio": round(min(train_ratio, inference_ratio), 4),
        "train_ratio": round(train_ratio, 4),
        "inference_ratio": round(inference_ratio, 4),
        "ours_inference": round(BATCH / infer_ours, 2),
        "reference_inference": round(BATCH / infer_hf, 2),
        "ours_mse": round(float(mse_ours), 5),
        "hf_mse": round(float(mse_hf), 5),
        "ours_mase": round(float(mase_ours), 5),
        "hf_mase": round(float(mase_hf), 5),
        "mse_seed_spread": round(float(np.std(mse_gaps, ddof=1)) if seeds > 1 else 0.0, 5),
        "threads": args.threads,
        "reference_norm": args.reference_norm,
        "autocorrelation": args.autocorrelation,
        "zero_mse": round(float(zero_mse), 5),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
