"""Errors that reach the user: each names where the problem is (file, row, field) and maps to an exit code."""

from __future__ import annotations

from pathlib import Path


class FinfusionError(Exception):
    """Base class for every error finfusion reports to a user. The CLI prints it and exits with `exit_code`."""

    exit_code = 2


class DataValidationError(FinfusionError):
    """Input data broke the schema. `row` is the 1-based data row (the header is not counted)."""

    def __init__(
        self,
        message: str,
        *,
        file: str | Path | None = None,
        row: int | None = None,
        field: str | None = None,
    ) -> None:
        self.message = message
        self.file = str(file) if file is not None else None
        self.row = None if row is None else int(row)  # a provenance column may arrive as a float after a join
        self.field = field
        super().__init__(str(self))

    def __str__(self) -> str:
        where = []
        if self.file:
            where.append(self.file)
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.field:
            where.append(f"field '{self.field}'")
        prefix = ", ".join(where)
        return f"{prefix}: {self.message}" if prefix else self.message


class ArchiveError(FinfusionError):
    """A zip/tar archive is corrupt, unsafe (path traversal, links) or fails its checksum."""


class LakeError(FinfusionError):
    """The lake is missing, locked, or a requested dataset does not exist."""


class DownloadError(FinfusionError):
    """A requested download failed or its content did not match the published checksums."""
