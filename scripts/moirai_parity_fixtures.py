"""Write the Moirai parity fixtures with the reference implementation (uni2ts 1.1.1), in its own environment.

Run by scripts/moirai_parity_fixtures.sh, never by the test suite. It builds a small, randomly initialised uni2ts
`MoiraiModule` (seeded), saves it the way the published checkpoints are saved (`save_pretrained`: config.json +
model.safetensors), and runs it on fixed packed inputs (two samples in one row, padding, two patch sizes, missing
values, a forecast horizon): the scaler's loc / scale, every mixture parameter and the log-density of fixed values
go to expected.safetensors. tests/test_moirai_parity.py loads the folder with finfusion's loader and must
reproduce them to 1e-5.

    python scripts/moirai_parity_fixtures.py OUT_FOLDER
"""

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file
from uni2ts.distribution import (
    LogNormalOutput,
    MixtureOutput,
    NegativeBinomialOutput,
    NormalFixedScaleOutput,
    StudentTOutput,
)
from uni2ts.model.moirai.module import MoiraiModule

D_MODEL, LAYERS, PATCH_SIZES, MAX_SEQ_LEN = 128, 1, (4, 8), 64


def inputs() -> dict[str, torch.Tensor]:
    """Two rows of 24 tokens: row 0 packs sample 1 (2 variates x 6 patches of 8, the last 2 forecast) and sample 2
    (3 variates x 4 patches of 4, the last forecast), then 0-padding; row 1 is one sample of 1 variate x 20 patches
    of 4 with missing values."""
    g = torch.Generator().manual_seed(7)
    rows, tokens, width = 2, 24, max(PATCH_SIZES)
    target = torch.randn(rows, tokens, width, generator=g) * 3.0 + 1.5
    observed = torch.ones(rows, tokens, width, dtype=torch.bool)
    sample_id = torch.zeros(rows, tokens, dtype=torch.long)
    time_id = torch.zeros(rows, tokens, dtype=torch.long)
    variate_id = torch.zeros(rows, tokens, dtype=torch.long)
    prediction_mask = torch.zeros(rows, tokens, dtype=torch.bool)
    patch_size = torch.full((rows, tokens), PATCH_SIZES[0], dtype=torch.long)
    position = 0
    for variate in range(2):
        for t in range(6):
            sample_id[0, position], time_id[0, position], variate_id[0, position] = 1, t, variate
            patch_size[0, position] = 8
            prediction_mask[0, position] = t >= 4
            position += 1
    for variate in range(3):
        for t in range(4):
            sample_id[0, position], time_id[0, position], variate_id[0, position] = 2, t, variate
            prediction_mask[0, position] = t == 3
            position += 1
    for t in range(20):
        sample_id[1, t], time_id[1, t], prediction_mask[1, t] = 1, t, t >= 17
    observed[1, 3, 1] = observed[1, 8, :2] = False
    observed[..., 4:] &= (patch_size == 8)[..., None]  # a patch of 4 has no values past 4
    target = target * observed
    counts = target.round().abs()  # values where the negative binomial and log-normal are in support too
    return {
        "target": target,
        "observed_mask": observed,
        "sample_id": sample_id,
        "time_id": time_id,
        "variate_id": variate_id,
        "prediction_mask": prediction_mask,
        "patch_size": patch_size,
        "values": torch.where(torch.rand(target.shape, generator=g) < 0.5, counts, target),
    }


def main() -> None:
    out = Path(sys.argv[1])
    torch.manual_seed(2024)
    components = [StudentTOutput(), NormalFixedScaleOutput(), NegativeBinomialOutput(), LogNormalOutput()]
    module = MoiraiModule(
        MixtureOutput(components), D_MODEL, LAYERS, PATCH_SIZES, MAX_SEQ_LEN, attn_dropout_p=0.0, dropout_p=0.0
    ).eval()
    module.save_pretrained(out / "checkpoint")
    x = inputs()
    with torch.no_grad():
        distr = module(
            *(
                x[k]
                for k in (
                    "target",
                    "observed_mask",
                    "sample_id",
                    "time_id",
                    "variate_id",
                    "prediction_mask",
                    "patch_size",
                )
            )
        )
        mixture = distr.base_dist
        expected = {f"input.{k}": v for k, v in x.items()}
        expected["loc"] = distr.loc
        expected["scale"] = distr.scale
        expected["log_weights"] = mixture.weights.logits
        for index, component in enumerate(mixture.components):
            for name in ("df", "loc", "scale", "total_count", "logits"):
                if name in type(component).arg_constraints and hasattr(component, name):
                    expected[f"component.{index}.{name}"] = getattr(component, name).expand(x["target"].shape)
        expected["log_prob"] = distr.log_prob(x["values"])
    save_file({k: v.contiguous() for k, v in expected.items()}, out / "expected.safetensors")
    (out / "versions.json").write_text(json.dumps({"uni2ts": "1.1.1", "torch": torch.__version__}) + "\n")


if __name__ == "__main__":
    main()
