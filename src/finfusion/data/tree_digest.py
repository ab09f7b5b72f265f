"""A content digest of a folder: SHA-256 over the sorted lines '<relative path>\\t<sha256 of the file>\\n'.

Public datasets fetched from a repository archive are checked this way: the archive's own bytes are not stable
(its compression and timestamps can change) but the files inside are.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from finfusion.data.sources.archive import sha256_file


def tree_digest(folder: Path) -> str:
    lines = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")):
        lines.append(f"{path.relative_to(folder).as_posix()}\t{sha256_file(path)}\n")
    return hashlib.sha256("".join(lines).encode("utf-8")).hexdigest()
