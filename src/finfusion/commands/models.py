"""`finfusion models ...`: published model weights, fetched only when asked."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from finfusion.commands.common import busy, out, reports_errors

app = typer.Typer(help="Published model weights: list and download them (nothing downloads unless asked).")


@app.command("list", epilog="Example:\n\n  finfusion models list")
@reports_errors
def list_models() -> None:
    """The published checkpoints `finfusion models download` knows."""
    from finfusion.models.moirai.published import PUBLISHED

    for name, repository in PUBLISHED.items():
        out.print(f"{name}  ({repository})")


@app.command(epilog="Example:\n\n  finfusion models download moirai-1.1-R-small --to models")
@reports_errors
def download(
    name: Annotated[str, typer.Argument(help="A published checkpoint (finfusion models list).")],
    to: Annotated[Path, typer.Option(help="Folder to download into (the checkpoint lands in TO/NAME).")] = Path(
        "models"
    ),
    endpoint: Annotated[
        str | None, typer.Option(help="Hub address (default: HF_ENDPOINT, else https://huggingface.co).")
    ] = None,
) -> None:
    """Fetch a published checkpoint (config.json + model.safetensors) and check that it loads; use it with
    `model.pretrained=TO/NAME`."""
    from finfusion.models.moirai.published import HUB, download_published

    hub = endpoint or os.environ.get("HF_ENDPOINT") or HUB
    with busy(f"downloading {name} from {hub}"):
        folder = download_published(name, to / name, hub)
    out.print(f"checkpoint: {folder} (use it with model.pretrained={folder})")
