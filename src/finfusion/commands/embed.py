"""`finfusion embed`: embed a text dataset of the lake once per encoder (texts already embedded are skipped)."""

from __future__ import annotations

from typing import Annotated

import typer

from finfusion.commands.common import LakeOption, busy, out, reports_errors
from finfusion.features.default_encoder import DEFAULT_ENCODER

EPILOG = (
    "Examples:\n\n"
    "  finfusion embed stocknet\n\n"
    "  finfusion embed news --encoder ./models/finbert --batch-size 32\n\n"
    "  finfusion embed news --encoder ProsusAI/finbert   (only if it is in the local Hugging Face cache)"
)


@reports_errors
def embed(
    dataset: Annotated[str, typer.Argument(help="Text dataset in the lake.")],
    encoder: Annotated[
        str | None,
        typer.Option(
            help="Encoder: a local model folder or a hub name in the local Hugging Face cache "
            f"(default: {DEFAULT_ENCODER}, shipped with finfusion).",
            show_default=False,
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Texts per forward pass.")] = 64,
    lake: LakeOption = None,
) -> None:
    """Embed every text of DATASET not yet embedded with the encoder; stored in the lake by (encoder, text hash).

    Long texts are split into overlapping chunks and their chunk vectors pooled (see docs/embeddings.md).

    Example: finfusion embed stocknet --lake ./finfusion-data
    """
    from finfusion.data.lake import Lake
    from finfusion.features.text import embed_texts, load_encoder

    store = Lake(lake)
    with busy(f"reading text dataset {dataset}"):
        texts = store.read("text", dataset).select("title", "body")
    with busy(f"loading encoder {encoder or DEFAULT_ENCODER}"):
        model = load_encoder(encoder)
    report = embed_texts(store, texts, model, batch_size=batch_size)
    out.print(
        f"[bold]embeddings[/bold] {report.dataset} ({report.encoder}, {report.dimension} dims) of text {dataset}: "
        f"{report.texts:,} texts, {report.unique:,} distinct, {report.cached:,} already stored, "
        f"{report.embedded:,} embedded now ({report.chunked:,} long texts in {report.chunks:,} pieces), "
        f"{report.files_written} files written"
    )
