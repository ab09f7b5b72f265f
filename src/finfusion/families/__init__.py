"""Model families: one module per family stating its config, samples, task, predictions and scoring
(`families/base.py`), all run by one pipeline (`families/pipeline.py`).

`FAMILIES` is the one table of families ("name": "module:instance"); a config's family is the one whose `tasks` name
its `task.name`. Adding a family is one module and one line here. Family modules import their heavy libraries inside
the functions that use them, so finding a config's family is cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from omegaconf import DictConfig

from finfusion.errors import FinfusionError

if TYPE_CHECKING:
    from finfusion.families.base import Family

FAMILIES: dict[str, str] = {
    "forecast": "finfusion.families.forecast:FAMILY",
    "movement": "finfusion.families.movement:FAMILY",
    "portfolio": "finfusion.families.portfolio:FAMILY",
    "universal": "finfusion.families.universal:FAMILY",
    "relevance": "finfusion.families.relevance:FAMILY",
    "tokens": "finfusion.families.tokens:FAMILY",
    "token_classification": "finfusion.families.token_classification:FAMILY",
    "orderbook": "finfusion.families.orderbook:FAMILY",
}


def family_named(name: str) -> Family:
    """The family registered as `name`."""
    if name not in FAMILIES:
        raise FinfusionError(f"unknown family '{name}'; known: {', '.join(FAMILIES)}")
    module, attribute = FAMILIES[name].split(":")
    return getattr(importlib.import_module(module), attribute)


def family_of(cfg: DictConfig) -> Family:
    """The family whose tasks include the config's `task.name`."""
    task = cfg.get("task")
    name = None if task is None else task.get("name")
    if name is None:
        raise FinfusionError("config: the task part has no 'name' (it names the family's task, e.g. forecast)")
    families = [family_named(family) for family in FAMILIES]
    for family in families:
        if str(name) in family.tasks:
            return family
    known = sorted(task for family in families for task in family.tasks)
    raise FinfusionError(f"config: task.name '{name}' belongs to no family; known tasks: {', '.join(known)}")
