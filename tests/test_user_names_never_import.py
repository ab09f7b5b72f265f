"""Nothing a user sends is imported or called: the serve jobs take their steps from the family (no module path
option), and every registry that imports lazily looks the name up in its own table first."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from typer.testing import Result

from finfusion.errors import FinfusionError
from finfusion.families import family_named
from finfusion.models.registry import model_class
from finfusion.training.tasks import task_class


def test_the_serve_jobs_take_no_module_path(cli: Callable[..., Result], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FINFUSION_STEPS", "os:system")
    result = cli("serve", "job", "train", "--steps", "os:system")
    assert result.exit_code != 0 and "No such option" in (result.stderr or result.output)


@pytest.mark.parametrize(
    ("lookup", "error"),
    [(model_class, KeyError), (task_class, KeyError), (family_named, FinfusionError)],
    ids=["model", "task", "family"],
)
def test_a_module_path_is_not_a_registered_name(lookup: Callable[[str], object], error: type[Exception]) -> None:
    with pytest.raises(error, match="os:system"):
        lookup("os:system")
