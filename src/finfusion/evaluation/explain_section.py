"""The report's Explanations section: the decisions `finfusion explain` stored in RUN/explanations/ (one JSON file
each) as tables and heat maps, and the planted-news ranking rate when it was measured."""

from __future__ import annotations

import json
from html import escape
from pathlib import Path
from typing import Any

import plotly.graph_objects as go

EXPLANATIONS_DIR = "explanations"
PLANTED_FILE = "planted_rate.json"


def explanation_files(root: Path) -> list[Path]:
    folder = root / EXPLANATIONS_DIR
    return sorted(path for path in folder.glob("*.json") if path.name != PLANTED_FILE) if folder.is_dir() else []


def _rows(headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _heat_html(decision: dict[str, Any]) -> str:
    """The IG heat map [L, C] of the explained symbol's inputs ("" for a model that reads no prices): its rows named
    by `heat_rows` where the explanation names them (e.g. a window's tokens), by their lookback step otherwise (an
    explanation stored before rows had names has no `heat_rows`)."""
    if not decision["channels"]:
        return ""
    heat = go.Figure(
        go.Heatmap(z=decision["heat"], x=decision["channels"], colorscale="RdBu", zmid=0.0, colorbar={"title": "IG"})
    )
    rows = decision.get("heat_rows")
    if rows is None:
        heat.update_layout(
            title="Integrated Gradients per lookback step (0 = oldest) and channel", yaxis_title="lookback step"
        )
    else:  # tick labels rather than categories: names may repeat (a token seen twice) and each row keeps its place
        heat.update_layout(title="Integrated Gradients per input row and channel")
        heat.update_yaxes(tickmode="array", tickvals=list(range(len(rows))), ticktext=rows)
    heat.update_layout(height=420)
    return heat.to_html(full_html=False, include_plotlyjs=False)


def _decision_html(decision: dict[str, Any]) -> str:
    figure = _heat_html(decision)
    totals = ", ".join(f"{escape(name)} {value:+.4g}" for name, value in decision["totals"].items())
    summary = (
        f"<p><strong>{escape(decision['symbol'])}</strong> at {escape(decision['decision'])} "
        f"({escape(decision['model'])}): "
        f"explained output ({escape(decision['explained'])}) {decision['output']:.4g} vs "
        f"{decision['baseline_output']:.4g} at the baseline; IG per input: {totals}; "
        f"completeness gap {decision['completeness_gap']:.2g}.</p>"
    )
    texts = _rows(
        ["published", "text", "IG", "occlusion", "attention", "planted"],
        [
            [t["published_at"], t["title"], f"{t['integrated_gradients']:+.4g}", f"{t['occlusion']:+.4g}",
             "" if t["attention"] is None else f"{t['attention']:.3f}", "yes" if t["planted"] else ""]
            for t in sorted(decision["texts"], key=lambda t: -abs(t["integrated_gradients"]))
        ],
    )  # fmt: skip
    permutation = _rows(
        ["feature group", f"rise in {decision['permutation_measure']} when shuffled"],
        [[name, f"{rise:+.4g}"] for name, rise in sorted(decision["permutation"].items(), key=lambda kv: -kv[1])],
    )
    texts_part = f"<h4>Texts (largest |IG| first)</h4>{texts}" if decision["texts"] else ""
    return f"<article>{summary}{texts_part}{figure}<h4>Permutation importance over the span</h4>{permutation}</article>"


def explanations_section(root: Path) -> str | None:
    """The section's HTML, or None when the run has no stored explanation."""
    files = explanation_files(root)
    planted = root / EXPLANATIONS_DIR / PLANTED_FILE
    if not files and not planted.is_file():
        return None
    parts = []
    if planted.is_file():
        rate = json.loads(planted.read_text(encoding="utf-8"))
        parts.append(
            f"<p>Planted news ({escape(rate['span'])} span): in {rate['first_by_integrated_gradients']} of "
            f"{rate['windows']} windows that saw a planted item beside other texts "
            f"({rate['rate_integrated_gradients']:.1%}) "
            f"the planted item has the largest |Integrated Gradients| among the window's texts; by occlusion "
            f"{rate['first_by_occlusion']} ({rate['rate_occlusion']:.1%}); a random ranking: "
            f"{rate['rate_by_chance']:.1%}.</p>"
        )
    parts += [_decision_html(json.loads(path.read_text(encoding="utf-8"))) for path in files]
    return "".join(parts)
