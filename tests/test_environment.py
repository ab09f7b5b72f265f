"""The locked environment: requirements.lock pins every dependency pyproject.toml asks for at a version it allows,
the test suite runs on exactly those versions, and the README's setup path installs from the lock."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]


def locked() -> dict[str, str]:
    pins = re.findall(r"^([A-Za-z0-9_.\-]+)==(\S+)$", (REPO / "requirements.lock").read_text(), flags=re.M)
    return {canonicalize_name(name): version for name, version in pins}


def asked() -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    return [Requirement(text) for text in [*project["dependencies"], *extras["dev"], *extras["hub"], *extras["ray"]]]


def test_the_lock_pins_every_dependency_at_a_version_pyproject_allows() -> None:
    pins = locked()
    for requirement in asked():
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} is not in requirements.lock"
        assert requirement.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} vs {requirement}"
    assert pins["torch"] == "2.13.0+cpu"


def test_the_suite_runs_on_exactly_the_locked_versions() -> None:
    differing = {
        name: (version, metadata.version(name))
        for name, version in locked().items()
        if metadata.version(name) != version
    }
    assert differing == {}


def test_setup_installs_from_the_lock() -> None:
    setup = (REPO / "scripts" / "setup.sh").read_text()
    assert 'uv pip sync --quiet "${compile[@]}" requirements.lock' in setup  # bytecode too for the tests
    assert "COMPILE_BYTECODE=1 bash scripts/setup.sh" in (REPO / "scripts" / "test.sh").read_text()
    assert "bash scripts/setup.sh" in (REPO / "README.md").read_text().split("```")[1]
