"""`finfusion explain RUN --at SYMBOL:DATE`: why the run's model decided what it did (the family's explanation,
stored in RUN/explanations/ and shown in the report's Explanations section, RUN/report/explanations.html)."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from finfusion.commands.common import LakeOption, busy, out, reports_errors

EPILOG = """Example:

  finfusion explain runs/multimodal_synthetic --at SYN003:2021-03-04 --planted
"""


@reports_errors
def explain(
    run: Annotated[Path, typer.Argument(help="A run folder written by `finfusion train`.", show_default=False)],
    at: Annotated[str, typer.Option("--at", help="SYMBOL:YYYY-MM-DD, the decision to explain.", show_default=False)],
    span: Annotated[str, typer.Option("--span", help="Span holding the decision: test, val or train.")] = "test",
    steps: Annotated[int, typer.Option("--steps", help="Integrated Gradients steps.", min=4)] = 64,
    planted: Annotated[
        bool, typer.Option("--planted", help="Also rate, over the span, how often the planted news item ranks first.")
    ] = False,
    markdown: Annotated[
        Path | None, typer.Option("--markdown", help="Also write a results page here (e.g. docs/results/x.md).")
    ] = None,
    lake: LakeOption = None,
) -> None:
    """Explain one decision of a trained run (forecast, movement, portfolio, universal, relevance,
    token_classification and orderbook families): Integrated Gradients per input channel and time step and per
    text, each text's occlusion effect, the model's attention where it has some, permutation importance per feature
    group over the span; stored as RUN/explanations/SYMBOL_DATE.json and rendered in
    RUN/report/explanations.html."""
    from finfusion.data.atomic import write_json_atomic
    from finfusion.evaluation.explain_page import write_page
    from finfusion.evaluation.explain_section import EXPLANATIONS_DIR, PLANTED_FILE
    from finfusion.evaluation.explanation import parse_at
    from finfusion.evaluation.report import write_explanations_report
    from finfusion.families.pipeline import load_run

    symbol, day = parse_at(at)
    if span not in ("test", "val", "train"):
        raise typer.BadParameter(f"'{span}' is not one of test, val, train", param_hint="--span")
    with busy(f"explaining {symbol} on {day}"):
        loaded = load_run(run, [] if lake is None else [f"data.lake={lake}"])
        result = loaded.family.explain(loaded, symbol, day, span, steps, planted)
    folder = run / EXPLANATIONS_DIR
    decision = result["decision"]
    path = folder / f"{symbol}_{day.isoformat()}.json"
    write_json_atomic(path, decision)
    _print(decision)
    if "planted" in result:
        write_json_atomic(folder / PLANTED_FILE, result["planted"])
        rate = result["planted"]
        out.print(
            f"planted news: first by |IG| in {rate['first_by_integrated_gradients']} of {rate['windows']} windows "
            f"({rate['rate_integrated_gradients']:.1%}); by occlusion {rate['first_by_occlusion']} "
            f"({rate['rate_occlusion']:.1%}); by chance {rate['rate_by_chance']:.1%} (p = {rate['p_value']:.4f})"
        )
    out.print(f"explanation: {path}; report: {write_explanations_report(run)}")
    if markdown is not None:
        words = ["finfusion", "explain", str(run), "--at", at, "--span", span, "--steps", str(steps)]
        words += [*(["--planted"] if planted else []), "--markdown", str(markdown)]
        words += ["--lake", str(lake)] if lake is not None else []
        trained = ["finfusion", "train", "--config", str(loaded.cfg.get("name", "RUN/config.yaml")), "--run", str(run)]
        trained += ["--lake", str(lake)] if lake is not None else []
        quoted = (" ".join(shlex.quote(w) for w in words), " ".join(shlex.quote(w) for w in trained))
        out.print(f"results: {write_page(markdown, quoted[0], result, quoted[1])}")


def _print(decision: dict[str, Any]) -> None:
    out.print(
        f"{decision['symbol']} at {decision['decision']}: {decision['explained']} {decision['output']:.4g} "
        f"(baseline {decision['baseline_output']:.4g}; completeness gap {decision['completeness_gap']:.2g})"
    )
    out.print("IG per input: " + ", ".join(f"{name} {value:+.4g}" for name, value in decision["totals"].items()))
    if decision["channels"]:
        channels = Table("channel", "IG (sum over the lookback)", title="inputs")
        pairs = zip(decision["channels"], decision["channel_attributions"], strict=True)
        for name, value in sorted(pairs, key=lambda c: -abs(c[1])):
            channels.add_row(name, f"{value:+.4g}")
        out.print(channels)
    if decision["texts"]:
        texts = Table("published", "text", "IG", "occlusion", "planted", title="texts (largest |IG| first)")
        for text in sorted(decision["texts"], key=lambda t: -abs(t["integrated_gradients"])):
            texts.add_row(
                text["published_at"][:16],
                text["title"][:60],
                f"{text['integrated_gradients']:+.4g}",
                f"{text['occlusion']:+.4g}",
                "yes" if text["planted"] else "",
            )
        out.print(texts)
    measure = f"rise in {decision['permutation_measure']} when shuffled"
    permutation = Table("feature group", measure, title="permutation importance (span)")
    for name, rise in sorted(decision["permutation"].items(), key=lambda kv: -kv[1]):
        permutation.add_row(name, f"{rise:+.4g}")
    out.print(permutation)
    if decision["attention"]:
        out.print("attention: " + json.dumps({k: round(v, 3) for k, v in decision["attention"].items()}))
