"""`finfusion tokenize ...`: turn the bars of a lake dataset into token sequences stored beside them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from finfusion.commands.common import LakeOption, busy, out, reports_errors
from finfusion.errors import FinfusionError

if TYPE_CHECKING:
    from finfusion.features.transitions import TransitionStats
    from finfusion.features.vocabulary import Vocabulary

app = typer.Typer(help="Turn bars into token sequences for language-model style training.", no_args_is_help=True)


@app.callback()
def tokenize() -> None:
    """Tokenizers of bars: each writes a tokens dataset and its vocabulary into the lake."""


def parse_components(text: str) -> tuple[str, ...]:
    """'core', 'all' or a comma list of component names -> the components of the composite token."""
    from finfusion.features.brooks import COMPONENTS, CORE_COMPONENTS

    if text == "core":
        return CORE_COMPONENTS
    if text == "all":
        return COMPONENTS
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in COMPONENTS]
    if unknown or not names:
        raise FinfusionError(
            f"unknown token component(s) {', '.join(unknown) or '(none given)'}: use core, all or names among "
            f"{', '.join(COMPONENTS)}"
        )
    return names


@app.command(
    epilog="Examples:\n\n"
    "  finfusion tokenize brooks synthetic --freq 1d --min-freq 5\n\n"
    "  finfusion tokenize brooks intraday --freq 5m --out intraday_pa --components all --swing-k 3"
)
@reports_errors
def brooks(
    dataset: Annotated[str, typer.Argument(help="Bars dataset to tokenize.")],
    freq: Annotated[str, typer.Option(help="Bar frequency of the dataset (1d, 5m, ...).")] = "1d",
    out_name: Annotated[
        str | None, typer.Option("--out", help="Tokens dataset name (default: DATASET_brooks).", show_default=False)
    ] = None,
    min_freq: Annotated[int, typer.Option(help="Tokens seen fewer times map to <unk>.", min=1)] = 5,
    components: Annotated[
        str, typer.Option(help="Composite token parts: core (trend,bar,swing,context,event), all, or a comma list.")
    ] = "core",
    swing_k: Annotated[
        int, typer.Option(help="Bars on each side of a swing pivot (its confirmation delay).", min=1)
    ] = 2,
    ema_length: Annotated[int, typer.Option(help="EMA span for the trend direction and the EMA magnet.", min=1)] = 20,
    top: Annotated[int, typer.Option(help="Most frequent tokens to print.", min=0)] = 15,
    lake: LakeOption = None,
) -> None:
    """Brooks-style price-action tokens (grammar: docs/tokenizer.md): one composite token per bar, its components
    as columns, and a vocabulary with frequency and entropy statistics."""
    from finfusion.data.lake import Lake
    from finfusion.data.schema import TOKENS
    from finfusion.features.brooks import BrooksConfig, tokenize_bars
    from finfusion.features.transitions import transition_stats
    from finfusion.features.vocabulary import Vocabulary, vocabulary_path

    store = Lake(lake)
    name = out_name or f"{dataset}_brooks"
    config = BrooksConfig(swing_k=swing_k, ema_length=ema_length, token_components=parse_components(components))
    bars = store.read("bars", dataset, freq=freq)
    with busy(f"tokenizing {bars.height:,} bars of {dataset}"):
        tokens = tokenize_bars(bars, config)
        metadata = {"source": "brooks", "bars": dataset, "tokenizer": "brooks", "config": config.as_dict()}
        result = store.write(TOKENS, name, tokens, freq=freq, metadata=metadata)
        vocabulary = Vocabulary.build(tokens["token"], min_freq=min_freq)
        path = vocabulary_path(store, name, freq)
        vocabulary.to_json(path)
    stats = vocabulary.entropy_stats()
    out.print(
        f"[bold]tokens[/bold] {name} ({freq}): {result.rows:,} bars of {tokens['symbol'].n_unique():,} symbols, "
        f"{stats.n_types:,} distinct tokens, {len(vocabulary):,} ids (min-freq {min_freq}), "
        f"{result.files_written} files written, {result.files_unchanged} unchanged"
    )
    out.print(f"vocabulary: {path}")
    _print_top(vocabulary, top)
    _print_entropy(vocabulary)
    _print_transitions(transition_stats(vocabulary.export_sequences(tokens), vocabulary, top=min(top, 10)))


def _print_top(vocabulary: Vocabulary, top: int) -> None:
    if top == 0:
        return
    table = Table("rank", "token", "count", "share", "id", title="most frequent tokens", title_justify="left")
    for row in vocabulary.frequency_table().head(top).iter_rows(named=True):
        ident = "" if row["id"] is None else str(row["id"])
        table.add_row(str(row["rank"]), escape(row["token"]), f"{row['count']:,}", f"{row['share']:.2%}", ident)
    out.print(table)


def _print_transitions(stats: TransitionStats) -> None:
    table = Table("statistic", "value", title="transitions (within each symbol)", title_justify="left")
    table.add_row("transitions", f"{stats.n_transitions:,}")
    table.add_row("H(next) (bits)", f"{stats.next_entropy_bits:.3f}")
    table.add_row("H(next | current) (bits)", f"{stats.conditional_entropy_bits:.3f}")
    table.add_row("mutual information (bits)", f"{stats.mutual_information_bits:.3f}")
    for current, following, count, probability in stats.top:
        table.add_row(f"  {escape(current)} -> {escape(following)}", f"{count:,} (P = {probability:.2f})")
    out.print(table)


def _print_entropy(vocabulary: Vocabulary) -> None:
    stats = vocabulary.entropy_stats()
    table = Table("statistic", "value", title="entropy", title_justify="left")
    table.add_row("entropy (bits)", f"{stats.entropy_bits:.3f}")
    table.add_row("perplexity", f"{stats.perplexity:.1f}")
    table.add_row("max entropy log2(types) (bits)", f"{stats.max_entropy_bits:.3f}")
    table.add_row("entropy with <unk> (bits)", f"{stats.kept_entropy_bits:.3f}")
    table.add_row("coverage of kept tokens", f"{stats.coverage:.2%}")
    for component, bits in stats.components.items():
        table.add_row(f"  {component} (bits)", f"{bits:.3f}")
    out.print(table)
