"""Parity with the reference: tests/fixtures/moirai holds a small randomly initialised uni2ts 1.1.1 MoiraiModule saved
as the published checkpoints are (config.json + model.safetensors) and its outputs on fixed packed inputs, written by
scripts/moirai_parity_fixtures.sh in a separate environment. Our loader and module must reproduce them. Crafted
checkpoint folders are refused with one line naming the file and field, and nothing in them is imported."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner, Result

from finfusion.cli import app
from finfusion.errors import FinfusionError
from finfusion.models.moirai.published import load_published, read_config
from finfusion.models.registry import build_model

FIXTURES = Path(__file__).parent / "fixtures" / "moirai"
INPUTS = ("target", "observed_mask", "sample_id", "time_id", "variate_id", "prediction_mask", "patch_size")


def test_our_module_reproduces_uni2ts_from_its_saved_checkpoint() -> None:
    expected = load_file(FIXTURES / "expected.safetensors")
    module = load_published(FIXTURES / "checkpoint").eval()
    with torch.no_grad():
        mixture = module(*(expected[f"input.{name}"] for name in INPUTS))
    torch.testing.assert_close(mixture.loc, expected["loc"], rtol=0, atol=1e-5)
    torch.testing.assert_close(mixture.scale, expected["scale"], rtol=0, atol=1e-5)
    torch.testing.assert_close(mixture.log_weights, expected["log_weights"], rtol=0, atol=1e-5)
    for index, params in enumerate(mixture.parameters):
        for name, value in params.items():
            torch.testing.assert_close(value, expected[f"component.{index}.{name}"], rtol=0, atol=1e-5)
    log_prob = mixture.log_prob(expected["input.values"])
    torch.testing.assert_close(log_prob, expected["log_prob"], rtol=1e-5, atol=1e-5)


def test_the_config_is_read_without_importing_its_class_paths() -> None:
    config = read_config(FIXTURES / "checkpoint")
    assert config.components == ("student_t", "normal_fixed_scale", "negative_binomial", "log_normal")
    assert (config.d_model, config.num_layers, config.patch_sizes) == (128, 1, (4, 8))


def crafted(tmp_path: Path, change: dict) -> Path:
    folder = tmp_path / "checkpoint"
    shutil.copytree(FIXTURES / "checkpoint", folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(change)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_a_crafted_component_class_is_refused_not_imported(tmp_path: Path) -> None:
    hostile = {"_target_": "os.system", "command": "touch pwned"}
    folder = crafted(
        tmp_path, {"distr_output": {"_target_": "uni2ts.distribution.mixture.MixtureOutput", "components": [hostile]}}
    )
    with pytest.raises(FinfusionError, match=r"config.json: field 'distr_output.components\[0\]' is 'os.system'"):
        load_published(folder)
    assert not (tmp_path / "pwned").exists() and not Path("pwned").exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"d_model": "128"}, "field 'd_model' is '128', expected an integer"),
        ({"patch_sizes": [4, -8]}, "field 'patch_sizes' is \\[4, -8\\]"),
        ({"num_layers": 2}, "missing tensor 'encoder.layers.1"),
        ({"d_model": 64}, "has shape"),
    ],
)
def test_malformed_configs_name_the_file_and_field(tmp_path: Path, change: dict, message: str) -> None:
    with pytest.raises(FinfusionError, match=message):
        load_published(crafted(tmp_path, change))


def test_a_file_that_is_not_safetensors_is_one_line(tmp_path: Path) -> None:
    folder = crafted(tmp_path, {})
    (folder / "model.safetensors").write_bytes(b"\x80\x04not a checkpoint")
    with pytest.raises(FinfusionError, match=r"model\.safetensors: not a safetensors file"):
        load_published(folder)
    state = load_file(FIXTURES / "checkpoint" / "model.safetensors")
    state["extra.weight"] = torch.zeros(1)
    save_file(state, folder / "model.safetensors")
    with pytest.raises(FinfusionError, match=r"unexpected tensor 'extra\.weight'"):
        load_published(folder)


def test_the_forecaster_starts_from_a_published_checkpoint_and_stores_its_architecture() -> None:
    model = build_model(
        "moirai", n_channels=2, context_length=16, horizon=4, pretrained=str(FIXTURES / "checkpoint"), patch_size=4
    )
    reference = load_published(FIXTURES / "checkpoint")
    for name, tensor in reference.state_dict().items():
        torch.testing.assert_close(model.module.state_dict()[name], tensor, rtol=0, atol=0)
    stored = model.stored_options()
    assert stored["pretrained"] is None and stored["architecture"]["patch_sizes"] == [4, 8]
    rebuilt = build_model("moirai", n_channels=2, context_length=16, horizon=4, patch_size=4, **stored)
    assert rebuilt.module.state_dict().keys() == model.module.state_dict().keys()


def hub_copy(www: Path, name: str, weights: bytes | None = None) -> None:
    """The fixture checkpoint laid out as a hub serves it: <repository>/resolve/main/<file>."""
    folder = www / "Salesforce" / name / "resolve" / "main"
    folder.mkdir(parents=True)
    shutil.copy(FIXTURES / "checkpoint" / "config.json", folder / "config.json")
    if weights is None:
        shutil.copy(FIXTURES / "checkpoint" / "model.safetensors", folder / "model.safetensors")
    else:
        (folder / "model.safetensors").write_bytes(weights)


def cli(*args: str) -> Result:
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def test_models_download_fetches_checks_and_places_a_checkpoint(tmp_path: Path, http_folder: tuple[str, Path]) -> None:
    url, www = http_folder
    hub_copy(www, "moirai-1.1-R-small")
    result = cli("models", "download", "moirai-1.1-R-small", "--to", str(tmp_path / "models"), "--endpoint", url)
    assert result.exit_code == 0, result.output
    folder = tmp_path / "models" / "moirai-1.1-R-small"
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    assert f"model.pretrained={folder}" in result.output
    assert load_published(folder).d_model == 128


def test_a_download_that_does_not_load_leaves_nothing(tmp_path: Path, http_folder: tuple[str, Path]) -> None:
    url, www = http_folder
    hub_copy(www, "moirai-1.1-R-base", weights=b"not weights")
    result = cli("models", "download", "moirai-1.1-R-base", "--to", str(tmp_path / "models"), "--endpoint", url)
    assert result.exit_code != 0
    assert "model.safetensors: not a safetensors file" in result.stderr
    assert list((tmp_path / "models").iterdir()) == []
    missing = cli("models", "download", "moirai-1.1-R-large", "--to", str(tmp_path / "models"), "--endpoint", url)
    assert missing.exit_code != 0 and "could not download" in missing.stderr
    unknown = cli("models", "download", "moirai-9", "--endpoint", url)
    assert unknown.exit_code != 0 and "unknown checkpoint 'moirai-9'" in unknown.stderr
