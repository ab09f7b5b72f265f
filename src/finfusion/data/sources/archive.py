"""Zip and tar archives: detected by content, SHA-256 checked, unpacked safely into a reproducible staging folder,
then ingested by the layout found inside (StockNet, KDD17 or CSV/Parquet files).

Each ingest unpacks into a staging folder of its own process (`LAKE/_staging/<pid>-<host>-<random>/`), so two
ingests of one archive never share files; the folder is removed when the ingest ends, and one left by a killed
process is removed by the lake's next writer.
"""

from __future__ import annotations

import hashlib
import shutil
import tarfile
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from finfusion.data.commits import remove_staging, staging_folder
from finfusion.data.lake import Lake
from finfusion.data.report import IngestReport
from finfusion.data.sources.kdd17 import ingest_kdd17
from finfusion.data.sources.stocknet import ingest_stocknet, is_stocknet
from finfusion.errors import ArchiveError

CHUNK = 1 << 20
#: Refuse archives that expand beyond this many bytes (zip bombs).
MAX_UNPACKED_BYTES = 64 << 30


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def expected_digest(archive: Path, sha256: str | None, manifest: Path | None) -> str | None:
    """The checksum the user gave, directly or as a line '<hex>  <name>' of a sha256sum-style manifest."""
    if sha256:
        return sha256.strip().lower()
    if manifest is None:
        return None
    for number, line in enumerate(manifest.read_text(encoding="utf-8").splitlines(), start=1):
        parts = line.split()
        if len(parts) == 2 and PurePosixPath(parts[1].lstrip("*")).name == archive.name:
            if len(parts[0]) != 64:
                raise ArchiveError(f"{manifest}, row {number}: '{parts[0]}' is not a SHA-256 hex digest")
            return parts[0].lower()
    raise ArchiveError(f"{manifest}: no checksum listed for '{archive.name}'")


def verify(archive: Path, expected: str | None) -> str:
    """The archive's SHA-256; raises if it differs from `expected`."""
    actual = sha256_file(archive)
    if expected is not None and actual != expected:
        raise ArchiveError(f"{archive}: SHA-256 mismatch: expected {expected}, got {actual}")
    return actual


def unpack(archive: Path, target: Path) -> None:
    """Unpack every member of `archive` into the empty folder `target`, refusing unsafe members."""
    if zipfile.is_zipfile(archive):
        _unzip(archive, target)
    elif _is_tar(archive):
        _untar(archive, target)
    else:
        raise ArchiveError(f"{archive}: not a zip or tar archive (or it is corrupt)")


def _is_tar(archive: Path) -> bool:
    try:
        return tarfile.is_tarfile(archive)
    except OSError:
        return False


def _safe_member(archive: Path, name: str) -> PurePosixPath:
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or name.startswith(("/", "\\")) or ":" in path.parts[0]:
        raise ArchiveError(f"{archive}: member '{name}' would be written outside the staging folder")
    return path


def _unzip(archive: Path, dest: Path) -> None:
    try:
        with zipfile.ZipFile(archive) as zf:
            members = zf.infolist()
            if sum(m.file_size for m in members) > MAX_UNPACKED_BYTES:
                raise ArchiveError(f"{archive}: expands beyond {MAX_UNPACKED_BYTES >> 30} GiB")
            for member in members:
                relative = _safe_member(archive, member.filename)
                if (member.external_attr >> 16) & 0o170000 == 0o120000:
                    raise ArchiveError(f"{archive}: member '{member.filename}' is a symbolic link")
                out = dest.joinpath(*relative.parts)
                if member.is_dir():
                    out.mkdir(parents=True, exist_ok=True)
                    continue
                out.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(member) as source, open(out, "wb") as sink:
                    shutil.copyfileobj(source, sink, CHUNK)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, OSError) as exc:
        raise ArchiveError(f"{archive}: corrupt zip archive ({exc})") from exc


def _untar(archive: Path, dest: Path) -> None:
    try:
        with tarfile.open(archive) as tf:
            members = tf.getmembers()
            if sum(m.size for m in members) > MAX_UNPACKED_BYTES:
                raise ArchiveError(f"{archive}: expands beyond {MAX_UNPACKED_BYTES >> 30} GiB")
            for member in members:
                _safe_member(archive, member.name)
                if not (member.isfile() or member.isdir()):
                    raise ArchiveError(f"{archive}: member '{member.name}' is a link or device, refused")
            tf.extractall(dest, filter="data")
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise ArchiveError(f"{archive}: corrupt tar archive ({exc})") from exc


def data_root(folder: Path, max_depth: int | None = None) -> Path:
    """Archives often wrap everything in one top folder: descend through single folders (at most `max_depth`)."""
    depth = 0
    entries = [p for p in folder.iterdir() if not p.name.startswith(".")]
    while len(entries) == 1 and entries[0].is_dir() and (max_depth is None or depth < max_depth):
        folder, depth = entries[0], depth + 1
        entries = [p for p in folder.iterdir() if not p.name.startswith(".")]
    return folder


def ingest_archive(
    lake: Lake,
    archive: Path,
    *,
    dataset: str | None,
    sha256: str | None = None,
    manifest: Path | None = None,
    ingest_files: Callable[[Path, str], IngestReport],
) -> list[IngestReport]:
    """Check, unpack and ingest an archive; the layout inside picks the reader."""
    if not archive.is_file():
        raise ArchiveError(f"{archive}: no such file")
    verify(archive, expected_digest(archive, sha256, manifest))
    staging = staging_folder(lake.root)
    try:
        unpack(archive, staging)
        root = data_root(staging)
        name = dataset or archive.name.split(".")[0]
        if is_stocknet(root):
            return ingest_stocknet(lake, root, name)
        if (root / "price_long_50").is_dir() or (root / "data" / "kdd17").is_dir():
            return ingest_kdd17(lake, root, name)
        return [ingest_files(root, name)]
    finally:
        remove_staging(staging)
