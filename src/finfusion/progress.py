"""Progress bars on stderr for loops that take more than a couple of seconds (quiet when not a terminal)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.console import Console
from rich.progress import track as rich_track

T = TypeVar("T")
console = Console(stderr=True)


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate with a progress bar when stderr is a terminal (or FINFUSION_PROGRESS=1), plainly otherwise."""
    if console.is_terminal or os.environ.get("FINFUSION_PROGRESS") == "1":
        yield from rich_track(items, description=description, total=total, console=console, transient=True)
    else:
        yield from items
