"""Where the lake lives: its environment variable and default folder (no heavy imports, so the CLI starts fast)."""

from __future__ import annotations

import os
from pathlib import Path

ENV_LAKE = "FINFUSION_LAKE"
DEFAULT_LAKE = "finfusion-data"


def resolve_root(root: str | Path | None = None) -> Path:
    """The lake root: the argument, else $FINFUSION_LAKE, else ./finfusion-data."""
    if root is not None:
        return Path(root)
    return Path(os.environ.get(ENV_LAKE, DEFAULT_LAKE))
