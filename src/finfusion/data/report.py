"""The ingest report: every repair and every anomaly is counted here and shown to the user, never silent."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class IngestReport:
    kind: str
    dataset: str
    source: str
    rows_in: int = 0
    rows_written: int = 0
    new_rows: int = 0
    updated_rows: int = 0
    files_written: int = 0
    files_unchanged: int = 0
    counts: Counter[str] = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)

    def count(self, what: str, n: int) -> None:
        """Record `n` occurrences of a repair or anomaly (zero counts are not recorded)."""
        if n:
            self.counts[what] += int(n)

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def merge(self, other: IngestReport) -> None:
        for name in ("rows_in", "rows_written", "new_rows", "updated_rows", "files_written", "files_unchanged"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.counts.update(other.counts)
        for text in other.notes:
            self.note(text)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["counts"] = dict(sorted(self.counts.items()))
        return data
