"""Training and inference windows per second of our Moirai module against uni2ts 1.1.1's, same configuration.

uni2ts cannot be installed beside finfusion (numpy 1.26, gluonts 0.14), so the script sets it up in its own
environment (.uni2ts-env, created with `python3 -m venv` and `pip install torch==2.13.0 uni2ts==1.1.1` the first
time; the same environment scripts/moirai_parity_fixtures.sh uses) and runs the reference there, on the same inputs.

Configuration: Moirai-small (6 layers x 384, patch sizes 8..128, the published mixture), 32 windows of 256 bars of
context and 32 of horizon, 1 target and 2 past covariates, patch size 16 (3 x 16 + 2 = 50 tokens per window), on the
CPU with the same torch thread count. Both modules start from the same weights (ours saved, theirs loaded).

- training: forward, the packed NLL of the forecast values, backward and an AdamW step;
- inference: forward and 100 sampled paths of the forecast values.

uni2ts computes the mixture of every value of every token (its head maps each token to 128 positions) and samples
it whole; ours computes the head on the forecast tokens' own positions only (`MoiraiModule.predictive`), which is
what the NLL and a forecast read, so most of the difference is work uni2ts does and throws away.

Each side runs `--repeats` timed steps after 2 warm-up steps; the median seconds per step are reported. Two JSON
lines, inference last:
{"benchmark": "moirai_train", "ours": windows/s, "reference": windows/s, "unit": "windows/s", "ratio": ours/ref}
{"benchmark": "moirai_inference", ...}

    python benchmarks/moirai_throughput.py              # Moirai-small, 5 repeats
    python benchmarks/moirai_throughput.py --quick      # a 2-layer x 128 model, 3 repeats
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from finfusion.models.moirai.distribution import packed_nll
from finfusion.models.moirai.module import MoiraiModule
from finfusion.models.moirai.tokens import window_tokens

ENV = Path(__file__).resolve().parents[1] / ".uni2ts-env"
ARGUMENTS = ("target", "observed", "sample_id", "time_id", "variate_id", "prediction_mask", "patch_size")

#: Runs in the uni2ts environment: argv = inputs.safetensors weights.safetensors d_model layers repeats.
REFERENCE = """
import statistics, sys, time
import torch
from safetensors.torch import load_file
from uni2ts.distribution import LogNormalOutput, MixtureOutput, NegativeBinomialOutput, NormalFixedScaleOutput
from uni2ts.distribution import StudentTOutput
from uni2ts.loss.packed import PackedNLLLoss
from uni2ts.model.moirai.module import MoiraiModule

inputs, weights = load_file(sys.argv[1]), load_file(sys.argv[2])
d_model, layers, repeats = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
torch.set_num_threads(int(sys.argv[6]))
components = [StudentTOutput(), NormalFixedScaleOutput(), NegativeBinomialOutput(), LogNormalOutput()]
module = MoiraiModule(MixtureOutput(components), d_model, layers, (8, 16, 32, 64, 128), 512, 0.0, 0.0)
module.load_state_dict(weights)
names = ("target", "observed", "sample_id", "time_id", "variate_id", "prediction_mask", "patch_size")
args = [inputs[n] for n in names]
loss_fn = PackedNLLLoss()
optimizer = torch.optim.AdamW(module.parameters(), lr=1e-4)

def train():
    distr = module(*args)
    loss = loss_fn(distr, args[0], args[5], args[1], args[2], args[4])
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()

def infer():
    with torch.no_grad():
        module(*args).sample(torch.Size((100,)))

out = []
for step in (train, infer):
    module.train(step is train)
    times = []
    for i in range(repeats + 2):
        start = time.perf_counter()
        step()
        if i >= 2:
            times.append(time.perf_counter() - start)
    out.append(statistics.median(times))
print(*out)
"""


def ensure_environment() -> Path:
    python = ENV / "bin" / "python"
    if not python.exists():
        print(f"setting up uni2ts 1.1.1 in {ENV} (once)")
        subprocess.run(["python3", "-m", "venv", str(ENV)], check=True)
        subprocess.run([str(ENV / "bin" / "pip"), "install", "--quiet", "torch==2.13.0", "uni2ts==1.1.1"], check=True)
    return python


def inputs(windows: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    past = torch.randn(windows, 256, 3, generator=g).cumsum(1) * 0.01
    future = torch.randn(windows, 32, 1, generator=g) * 0.01
    mask = torch.ones(windows, 256, dtype=torch.bool)
    tokens = window_tokens(past, mask, [0], 32, 16, 128, future)
    return dict(zip(ARGUMENTS, tokens.as_arguments(), strict=True))


def ours(module: MoiraiModule, args: dict[str, torch.Tensor], repeats: int) -> tuple[float, float]:
    batch = [args[name] for name in ARGUMENTS]
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-4)
    keep = args["prediction_mask"]
    rows = torch.arange(keep.shape[0])[:, None].expand_as(keep)[keep]

    def train() -> None:  # the forecaster's training step (models/moirai/forecaster.py)
        mixture = module.predictive(*batch, width=16)
        target, observed = args["target"][keep][None, :, :16], args["observed"][keep][None, :, :16]
        loss = packed_nll(mixture, target, torch.ones_like(rows, dtype=torch.bool)[None], observed, rows[None],
                          args["variate_id"][keep][None])  # fmt: skip
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    def infer() -> None:
        with torch.no_grad():
            module.predictive(*batch, width=16).sample(100)

    medians = []
    for step in (train, infer):
        module.train(step is train)
        times = []
        for i in range(repeats + 2):
            start = time.perf_counter()
            step()
            if i >= 2:
                times.append(time.perf_counter() - start)
        medians.append(statistics.median(times))
    return medians[0], medians[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="a 2-layer x 128 model, 3 repeats")
    args = parser.parse_args()
    d_model, layers = (128, 2) if args.quick else (384, 6)
    repeats = 3 if args.quick else args.repeats
    windows = 32
    python = ensure_environment()
    threads = torch.get_num_threads()
    torch.manual_seed(0)
    module = MoiraiModule(d_model, layers)
    batch = inputs(windows)
    with tempfile.TemporaryDirectory(prefix="finfusion-bench-moirai-") as tmp:
        save_file({k: v.contiguous() for k, v in batch.items()}, f"{tmp}/inputs.safetensors")
        save_file({k: v.contiguous() for k, v in module.state_dict().items()}, f"{tmp}/weights.safetensors")
        command = [str(python), "-c", REFERENCE, f"{tmp}/inputs.safetensors", f"{tmp}/weights.safetensors",
                   str(d_model), str(layers), str(repeats), str(threads)]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(done.stderr)
        reference_train, reference_infer = (float(v) for v in done.stdout.split())
    ours_train, ours_infer = ours(module, batch, repeats)
    print(f"{layers} layers x {d_model}, {windows} windows of 50 tokens, {threads} threads, median of {repeats}")
    for name, mine, theirs in (("train", ours_train, reference_train), ("inference", ours_infer, reference_infer)):
        print(f"{name:<9}  ours {mine * 1e3:8.1f} ms/step   uni2ts {theirs * 1e3:8.1f} ms/step")
    for name, mine, theirs in (("moirai_train", ours_train, reference_train),
                               ("moirai_inference", ours_infer, reference_infer)):  # fmt: skip
        print(json.dumps({"benchmark": name, "ours": round(windows / mine, 1), "reference": round(windows / theirs, 1),
                          "unit": "windows/s", "ratio": round(theirs / mine, 4)}))  # fmt: skip


if __name__ == "__main__":
    main()
