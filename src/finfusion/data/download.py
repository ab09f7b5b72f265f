"""`finfusion data download NAME`: fetch a public dataset, check it against published digests, ingest it.

Nothing here runs unless the user asks. Repository archives are checked by the content digest of the folders we
read (see tree_digest.py), taken from the copies the project was built against.
"""

from __future__ import annotations

import shutil
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from finfusion.data.atomic import temporary_sibling
from finfusion.data.commits import remove_staging, staging_folder
from finfusion.data.lake import Lake
from finfusion.data.report import IngestReport
from finfusion.data.sources.archive import data_root, unpack
from finfusion.data.sources.kdd17 import ingest_kdd17
from finfusion.data.sources.stocknet import ingest_stocknet
from finfusion.data.tree_digest import tree_digest
from finfusion.errors import DownloadError
from finfusion.progress import console

CHUNK = 1 << 20


@dataclass(frozen=True)
class RemoteDataset:
    """An archive at `url` whose folders (relative to the archive's data root) must have the given digests."""

    name: str
    url: str
    digests: dict[str, str] = field(default_factory=dict)
    ingest: Callable[[Lake, Path, str], list[IngestReport]] | None = None


REMOTE: dict[str, RemoteDataset] = {
    "stocknet": RemoteDataset(
        name="stocknet",
        url="https://github.com/yumoxu/stocknet-dataset/archive/330708b5ddc359961078bef469f43f48992fd6e4.zip",
        digests={
            "price/raw": "e811ac74ba17e21c556f88bcd33732e1d87ca9aa64f3ce35b82f7ba59b6d6a40",
            "tweet/preprocessed": "38ed1d22f9aa217ee86878131683f7374022072c0615089c861e79245832ec85",
        },
        ingest=ingest_stocknet,
    ),
    "kdd17": RemoteDataset(
        name="kdd17",
        url="https://github.com/fulifeng/Adv-ALSTM/archive/3d6c3dc921f44832dd48734d79dbf60cd832cf5b.zip",
        digests={"data/kdd17/price_long_50": "33c89de3779b6bf382070e4ca9e83ec7ae7497c8713a43eba78cea56a60b0e0d"},
        ingest=ingest_kdd17,
    ),
}


def fetch(url: str, target: Path, timeout: float = 60.0) -> Path:
    """Stream `url` to `target` atomically, with a progress bar."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(target)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as sink:
            total = int(response.headers.get("Content-Length") or 0) or None
            with console.status(f"downloading {url} ({(total or 0) >> 20} MiB)"):
                shutil.copyfileobj(response, sink, CHUNK)
        tmp.replace(target)
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise DownloadError(f"could not download {url}: {exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)
    return target


def verify_tree(root: Path, digests: dict[str, str]) -> None:
    for folder, expected in digests.items():
        if not (root / folder).is_dir():
            raise DownloadError(f"downloaded copy has no folder '{folder}'")
        actual = tree_digest(root / folder)
        if actual != expected:
            raise DownloadError(f"'{folder}' does not match its published digest: expected {expected}, got {actual}")


def download(
    lake: Lake, remote: RemoteDataset, *, url: str | None = None, dataset: str | None = None
) -> list[IngestReport]:
    """Download, unpack, verify and ingest. The lake is only written once every check passed."""
    archive = fetch(url or remote.url, lake.root / "_downloads" / f"{remote.name}.zip")
    staging = staging_folder(lake.root)
    try:
        unpack(archive, staging)
        root = data_root(staging, max_depth=1)  # repo-<commit>/
        verify_tree(root, remote.digests)
        if remote.ingest is None:
            return []
        return remote.ingest(lake, root, dataset or remote.name)
    finally:
        remove_staging(staging)
