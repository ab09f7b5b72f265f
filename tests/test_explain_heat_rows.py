"""Named heat-map rows (`Explanation.heat_rows`, e.g. a token window's tokens): the report's heat map labels its rows
with them (each row in its place, a repeated name included) and the results page lists each row's attribution;
without them the rows are lookback steps, and explanations stored before the field existed still render."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from finfusion.evaluation.explain_page import write_page
from finfusion.evaluation.explain_section import EXPLANATIONS_DIR, explanations_section


def decision(heat_rows: list[str] | None) -> dict[str, Any]:
    """A stored explanation of a 3-token window (one channel), its rows named by `heat_rows` (None: the key absent,
    as in explanations stored before rows had names)."""
    stored: dict[str, Any] = {
        "symbol": "AAA", "decision": "2020-01-02T21:00:00+00:00", "model": "token_bert_classifier",
        "explained": "P(up), the probability of the predicted class (direction)", "output": 0.7,
        "baseline_output": 0.5, "completeness_gap": 1e-6, "totals": {"tokens": 0.2}, "channels": ["token"],
        "channel_attributions": [0.2], "heat": [[0.05], [-0.1], [0.25]], "texts": [], "attention": None,
        "permutation": {"position 0": 0.01}, "permutation_measure": "Brier score", "planted_rank_first": None,
    }  # fmt: skip
    return stored if heat_rows is None else {**stored, "heat_rows": heat_rows}


def section_of(tmp_path: Path, stored: dict[str, Any]) -> str:
    folder = tmp_path / EXPLANATIONS_DIR
    folder.mkdir()
    (folder / "AAA_2020-01-02.json").write_text(json.dumps(stored))
    section = explanations_section(tmp_path)
    assert section is not None
    return section


def page_of(tmp_path: Path, stored: dict[str, Any]) -> str:
    page = write_page(tmp_path / "page.md", "finfusion explain run --at AAA:2020-01-02", {"decision": stored}, "x")
    return page.read_text()


def test_named_rows_label_the_heat_map_and_the_page_lists_them(tmp_path: Path) -> None:
    stored = decision(["bull_bar", "doji", "bull_bar"])
    section = section_of(tmp_path, stored)
    assert '"ticktext":["bull_bar","doji","bull_bar"]' in section and '"tickvals":[0,1,2]' in section
    assert "lookback step" not in section
    text = page_of(tmp_path, stored)
    assert "| row | input | IG over the channels |" in text
    assert "| 0 | bull_bar | +0.05 |" in text and "| 1 | doji | -0.1 |" in text and "| 2 | bull_bar | +0.25 |" in text


def test_unnamed_rows_are_lookback_steps(tmp_path: Path) -> None:
    for k, stored in enumerate((decision(None), {**decision(None), "heat_rows": None})):
        folder = tmp_path / str(k)
        folder.mkdir()
        section = section_of(folder, stored)
        assert "lookback step" in section and "ticktext" not in section
        assert "IG over the channels" not in page_of(folder, stored)
