"""Malformed input is refused with a clear error (file, row, field), a non-zero exit, and an untouched lake.

Every test first ingests a good file into the dataset `prices`, snapshots the lake byte for byte, feeds the bad
input to `finfusion data ingest` into the same dataset, and checks the message, the exit code and the snapshot.
Rows are 1-based data rows (the header is not counted); fields are named as the user wrote them.
"""

from __future__ import annotations

import io
import json
import re
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest
from typer.testing import Result

from finfusion.errors import DataValidationError
from tests.conftest import GOOD_BARS, snapshot, write_text

Cli = Callable[..., Result]

HEADER, *GOOD_LINES = GOOD_BARS.strip().splitlines()
COLUMNS = HEADER.split(",")
GOOD_NEWS = "Date,Headline,Body\n2014-11-24 10:00,Up,Shares rose\n2014-11-25 10:00,Down,Shares fell\n"
FIXED_TIME = (2014, 11, 24, 12, 0, 0)


# ----------------------------------------------------------------------------------------------------------- helpers


def cells() -> list[list[str]]:
    """GOOD_BARS as a mutable grid of data rows (header excluded)."""
    return [line.split(",") for line in GOOD_LINES]


def to_csv(rows: list[list[str]], header: list[str] = COLUMNS) -> str:
    return "\n".join(",".join(row) for row in [header, *rows]) + "\n"


def with_value(row: int, column: str, value: str) -> str:
    """GOOD_BARS with the cell at data row `row` (1-based) and `column` replaced."""
    rows = cells()
    rows[row - 1][COLUMNS.index(column)] = value
    return to_csv(rows)


def swapped(first: int, second: int) -> str:
    rows = cells()
    rows[first - 1], rows[second - 1] = rows[second - 1], rows[first - 1]
    return to_csv(rows)


def without_column(column: str) -> str:
    index = COLUMNS.index(column)
    return to_csv([r[:index] + r[index + 1 :] for r in cells()], COLUMNS[:index] + COLUMNS[index + 1 :])


def with_symbol_column(row: int, symbol: str) -> str:
    rows = [["AAA", *r] for r in cells()]
    rows[row - 1][0] = symbol
    return to_csv(rows, ["Symbol", *COLUMNS])


def message_of(result: Result) -> str:
    return result.stderr or result.output


def assert_rejected(
    result: Result,
    lake_root: Path,
    before: dict[str, bytes],
    *,
    file: str,
    row: int | None = None,
    field: str | None = None,
    says: str = "",
) -> None:
    """Non-zero exit, the message names file / row / field, and the lake is byte-identical to `before`."""
    message = message_of(result)
    assert result.exit_code != 0, result.output
    assert file in message, message
    if row is not None:
        assert re.search(rf"\brow {row}\b", message), f"expected 'row {row}' in: {message}"
    assert snapshot(lake_root) == before, "a rejected input changed the lake"
    if field is not None:
        assert f"field '{field}'" in message, f"expected field '{field}' in: {message}"
    assert says.lower() in message.lower(), f"expected {says!r} in: {message}"


@pytest.fixture
def seeded(tmp_path: Path, cli: Cli, lake_root: Path) -> dict[str, bytes]:
    """Ingest GOOD_BARS as dataset `prices`; returns the lake's snapshot afterwards."""
    good = write_text(tmp_path / "good" / "AAA.csv", GOOD_BARS)
    result = cli("data", "ingest", "csv", str(good), "--dataset", "prices")
    assert result.exit_code == 0, result.output
    before = snapshot(lake_root)
    assert any(name.endswith(".parquet") for name in before)
    return before


@pytest.fixture
def seeded_text(tmp_path: Path, cli: Cli, lake_root: Path, seeded: dict[str, bytes]) -> dict[str, bytes]:
    """The seeded lake plus good texts in the dataset `prices`."""
    good = write_text(tmp_path / "good" / "news.csv", GOOD_NEWS)
    result = cli("data", "ingest", "csv", str(good), "--kind", "text", "--dataset", "prices")
    assert result.exit_code == 0, result.output
    return snapshot(lake_root)


def ingest_csv(cli: Cli, path: Path, *args: str) -> Result:
    return cli("data", "ingest", "csv", str(path), "--dataset", "prices", *args)


# -------------------------------------------------------------------------------------------- bad values in CSV bars

VALUE_CASES = [
    pytest.param(with_value(3, "Close", "abc"), 3, "Close", "is not a number", id="mistyped-close"),
    pytest.param(with_value(2, "Close", "nan"), 2, "Close", "not finite", id="nan-close"),
    pytest.param(with_value(4, "Open", "NaN"), 4, "Open", "not finite", id="nan-open"),
    pytest.param(with_value(2, "High", "inf"), 2, "High", "not finite", id="inf-high"),
    pytest.param(with_value(3, "Low", "-inf"), 3, "Low", "not finite", id="minus-inf-low"),
    pytest.param(with_value(2, "Low", "-9.8"), 2, "Low", "must be > 0", id="negative-price"),
    pytest.param(with_value(4, "Open", "0"), 4, "Open", "must be > 0", id="zero-price"),
    pytest.param(with_value(3, "Adj Close", "-1"), 3, "Adj Close", "must be > 0", id="negative-adj-close"),
    pytest.param(with_value(3, "Volume", "-5"), 3, "Volume", "negative", id="negative-volume"),
    pytest.param(with_value(2, "Volume", "nan"), 2, "Volume", "not finite", id="nan-volume"),
    pytest.param(with_value(3, "Close", ""), 3, "Close", "missing", id="empty-close"),
    pytest.param(with_value(2, "Volume", "NA"), 2, "Volume", "missing", id="na-volume"),
    pytest.param(
        to_csv([*cells()[:1], ["2014-11-25", "10.2", "9.9", "10.1", "10.0", "10.0", "1200"], *cells()[2:]]),
        2,
        "High",
        "below low",
        id="high-below-low",
    ),
    pytest.param(with_value(3, "Date", "2014-11-25"), 3, "Date", "duplicate timestamp", id="duplicate-date"),
    pytest.param(swapped(2, 3), 3, "Date", "unsorted", id="unsorted-dates"),
    pytest.param(with_value(2, "Date", "2014-13-45"), 2, "Date", "is not a date", id="unparseable-date"),
    pytest.param(
        with_value(4, "Date", "2014-11-27"),
        4,
        "Date",
        "is not a XNYS session",
        id="thanksgiving-not-a-session",
    ),
    pytest.param(
        with_value(2, "Close", "[/x]"),
        2,
        "Close",
        "is not a number",
        id="value-looking-like-rich-markup",
    ),
]


@pytest.mark.parametrize(("content", "row", "field", "says"), VALUE_CASES)
def test_bad_bar_value_is_refused(
    tmp_path: Path, cli: Cli, lake_root: Path, seeded: dict[str, bytes], content: str, row: int, field: str, says: str
) -> None:
    bad = write_text(tmp_path / "bad" / "AAA.csv", content)
    result = ingest_csv(cli, bad)
    assert_rejected(result, lake_root, seeded, file=bad.name, row=row, field=field, says=says)


def test_mapped_column_is_named_as_the_user_wrote_it(
    tmp_path: Path, cli: Cli, lake_root: Path, seeded: dict[str, bytes]
) -> None:
    bad = write_text(tmp_path / "bad" / "AAA.csv", with_value(2, "Close", "12.3x").replace(",Close,", ",Px,"))
    result = ingest_csv(cli, bad, "--map", "Px=close")
    assert_rejected(result, lake_root, seeded, file=bad.name, row=2, field="Px", says="is not a number")


# ------------------------------------------------------------------------------------------------ broken CSV files

FILE_CASES = [
    pytest.param(b"", None, None, "file is empty", id="empty-file"),
    pytest.param(HEADER + "\n", None, None, "no data rows", id="header-only"),
    pytest.param(
        (HEADER + "\n" + GOOD_LINES[0] + "\n").encode() + GOOD_LINES[1].encode().replace(b"10.6", b"10\xff\xfe.6"),
        2,
        None,
        "UTF-8",
        id="non-utf8-row-2",
    ),
    pytest.param(
        (HEADER + "\n").encode().replace(b"Volume", b"Vol\xe9") + "\n".join(GOOD_LINES).encode(),
        None,
        None,
        "UTF-8",
        id="non-utf8-header",
    ),
    pytest.param(
        to_csv([*cells()[:2], [*cells()[2], "99"], *cells()[3:]]), 3, None, "has 8 fields", id="ragged-extra-field"
    ),
    pytest.param(without_column("Close"), None, "close", "missing required column", id="missing-close-column"),
    pytest.param(without_column("Volume"), None, "volume", "missing required column", id="missing-volume-column"),
    pytest.param(with_symbol_column(2, "A/B"), 2, "Symbol", "has characters other than", id="symbol-with-slash"),
    pytest.param(with_symbol_column(3, "../x"), 3, "Symbol", "has characters other than", id="symbol-traversal"),
    pytest.param(with_symbol_column(4, ""), 4, "Symbol", "symbol is empty", id="symbol-empty"),
]


@pytest.mark.parametrize(("content", "row", "field", "says"), FILE_CASES)
def test_broken_csv_file_is_refused(
    tmp_path: Path,
    cli: Cli,
    lake_root: Path,
    seeded: dict[str, bytes],
    content: str | bytes,
    row: int | None,
    field: str | None,
    says: str,
) -> None:
    bad = write_text(tmp_path / "bad" / "AAA.csv", content)
    result = ingest_csv(cli, bad)
    assert_rejected(result, lake_root, seeded, file=bad.name, row=row, field=field, says=says)


def test_missing_column_message_lists_the_users_column_names(
    tmp_path: Path, cli: Cli, lake_root: Path, seeded: dict[str, bytes]
) -> None:
    bad = write_text(tmp_path / "bad" / "AAA.csv", without_column("Close"))
    result = ingest_csv(cli, bad)
    assert_rejected(result, lake_root, seeded, file=bad.name, says="missing required column")
    assert "'Adj Close'" in message_of(result) and "'Date'" in message_of(result), message_of(result)


# ---------------------------------------------------------------------------------------------------------- Parquet


def good_frame() -> pl.DataFrame:
    return pl.read_csv(io.StringIO(GOOD_BARS), infer_schema_length=0).with_columns(
        pl.col("Date").str.to_date(), pl.exclude("Date").cast(pl.Float64)
    )


PARQUET_CASES = [
    pytest.param(pl.col("Date").alias("Close"), None, "Close", "column has type Date", id="close-as-date"),
    pytest.param((pl.col("Close") > 0).alias("Close"), None, "Close", "column has type Boolean", id="close-as-bool"),
    pytest.param(pl.lit(True).alias("Date"), None, "Date", "expected dates or timestamps", id="date-as-bool"),
    pytest.param(
        pl.Series("Volume", ["1000", "abc", "900", "400"]), 2, "Volume", "is not a number", id="volume-text-row-2"
    ),
    pytest.param(pl.Series("Close", [10.2, 10.4, float("nan"), 10.9]), 3, "Close", "not finite", id="nan-close-row-3"),
]


@pytest.mark.parametrize(("change", "row", "field", "says"), PARQUET_CASES)
def test_mistyped_parquet_column_is_refused(
    tmp_path: Path,
    cli: Cli,
    lake_root: Path,
    seeded: dict[str, bytes],
    change: pl.Expr | pl.Series,
    row: int | None,
    field: str,
    says: str,
) -> None:
    bad = tmp_path / "bad" / "AAA.parquet"
    bad.parent.mkdir()
    good_frame().with_columns(change).write_parquet(bad)
    result = cli("data", "ingest", "parquet", str(bad), "--dataset", "prices")
    assert_rejected(result, lake_root, seeded, file=bad.name, row=row, field=field, says=says)


@pytest.mark.parametrize(
    ("content", "says"),
    [
        pytest.param(bytes(range(256)) * 4, "not a readable Parquet file", id="random-bytes"),
        pytest.param(b"PAR1" + bytes(100) + b"PAR1", "not a readable Parquet file", id="bad-footer"),
    ],
)
def test_corrupt_parquet_is_refused(
    tmp_path: Path, cli: Cli, lake_root: Path, seeded: dict[str, bytes], content: bytes, says: str
) -> None:
    bad = write_text(tmp_path / "bad" / "AAA.parquet", content)
    result = cli("data", "ingest", "parquet", str(bad), "--dataset", "prices")
    assert_rejected(result, lake_root, seeded, file=bad.name, says=says)


def test_empty_parquet_is_refused(tmp_path: Path, cli: Cli, lake_root: Path, seeded: dict[str, bytes]) -> None:
    bad = tmp_path / "bad" / "AAA.parquet"
    bad.parent.mkdir()
    good_frame().head(0).write_parquet(bad)
    result = cli("data", "ingest", "parquet", str(bad), "--dataset", "prices")
    assert_rejected(result, lake_root, seeded, file=bad.name, says="no data rows")


# ------------------------------------------------------------------------------------------------------------- text

TEXT_CASES = [
    pytest.param(
        "Date,Headline,Body\n2014-11-24 10:00,a,b\nsometime soon,c,d\n", 2, "Date", "is not a date", id="bad-date"
    ),
    pytest.param(
        "Date,Headline,Body\n2014-11-24 10:00,a,b\n2014-11-24 11:00,c,d\n2014-11-24 12:00, ,\n",
        3,
        "Headline",
        "text is empty",
        id="empty-title-and-body",
    ),
    pytest.param(
        "Date,Headline,Tickers\n2014-11-24 10:00,a,AAA\n2014-11-24 11:00,b,AAA;A/B\n",
        2,
        "Tickers",
        "has characters other than",
        id="bad-symbol",
    ),
    pytest.param("Headline,Body\na,b\n", None, "published_at", "missing required column", id="no-date-column"),
    pytest.param("Date,Author\n2014-11-24 10:00,me\n", None, "title", "missing required column", id="no-text-column"),
]


@pytest.mark.parametrize(("content", "row", "field", "says"), TEXT_CASES)
def test_bad_text_is_refused(
    tmp_path: Path,
    cli: Cli,
    lake_root: Path,
    seeded_text: dict[str, bytes],
    content: str,
    row: int | None,
    field: str,
    says: str,
) -> None:
    bad = write_text(tmp_path / "bad" / "news.csv", content)
    result = ingest_csv(cli, bad, "--kind", "text", "--symbol-separator", ";")
    assert_rejected(result, lake_root, seeded_text, file=bad.name, row=row, field=field, says=says)


# --------------------------------------------------------------------------------------------------------- archives


def zip_bytes(members: dict[str, str], *, compression: int = zipfile.ZIP_STORED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, text in members.items():
            info = zipfile.ZipInfo(name, date_time=FIXED_TIME)
            info.compress_type = compression
            zf.writestr(info, text)
    return buffer.getvalue()


def zip_with_symlink() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr(zipfile.ZipInfo("data/AAA.csv", date_time=FIXED_TIME), GOOD_BARS)
        link = zipfile.ZipInfo("data/BBB.csv", date_time=FIXED_TIME)
        link.external_attr = (0o120777 << 16) | 0x20
        zf.writestr(link, "/etc/passwd")
    return buffer.getvalue()


def tar_bytes(extra: tarfile.TarInfo | None = None, *, name: str = "data/AAA.csv") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tf:
        data = GOOD_BARS.encode()
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
        if extra is not None:
            tf.addfile(extra)
    return buffer.getvalue()


def link_member(kind: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo("data/BBB.csv")
    info.type = kind
    info.linkname = "/etc/passwd" if kind == tarfile.SYMTYPE else "data/AAA.csv"
    return info


def truncated_zip() -> bytes:
    whole = zip_bytes({"data/AAA.csv": GOOD_BARS * 20}, compression=zipfile.ZIP_DEFLATED)
    return whole[: len(whole) // 2]


def bad_crc_zip() -> bytes:
    whole = bytearray(zip_bytes({"data/AAA.csv": GOOD_BARS}))
    whole[60] ^= 0x01  # a byte of the stored member's data
    return bytes(whole)


def corrupt_deflate_zip() -> bytes:
    whole = bytearray(zip_bytes({"data/AAA.csv": GOOD_BARS * 20}, compression=zipfile.ZIP_DEFLATED))
    for i in range(60, 90):  # inside the compressed stream (local header + name end at byte 42)
        whole[i] ^= 0xFF
    return bytes(whole)


ARCHIVE_CASES = [
    pytest.param("dump.zip", truncated_zip(), "not a zip or tar archive", id="truncated-zip"),
    pytest.param("dump.zip", bad_crc_zip(), "corrupt zip archive", id="zip-bad-crc"),
    pytest.param(
        "dump.zip",
        corrupt_deflate_zip(),
        "corrupt zip archive",
        id="zip-corrupt-deflate-stream",
    ),
    pytest.param("dump.zip", zip_bytes({"../evil.csv": GOOD_BARS}), "outside the staging folder", id="zip-traversal"),
    pytest.param(
        "dump.zip", zip_bytes({"/tmp/evil.csv": GOOD_BARS}), "outside the staging folder", id="zip-absolute-member"
    ),
    pytest.param("dump.zip", zip_with_symlink(), "is a symbolic link", id="zip-symlink"),
    pytest.param("dump.tar", tar_bytes(link_member(tarfile.SYMTYPE)), "is a link or device", id="tar-symlink"),
    pytest.param("dump.tar", tar_bytes(link_member(tarfile.LNKTYPE)), "is a link or device", id="tar-hardlink"),
    pytest.param("dump.tar", tar_bytes(name="../evil.csv"), "outside the staging folder", id="tar-traversal"),
    pytest.param("dump.tar", tar_bytes()[:700], "corrupt tar archive", id="truncated-tar"),
    pytest.param("dump.zip", b"not an archive at all\n" * 10, "not a zip or tar archive", id="not-an-archive"),
]


@pytest.mark.parametrize(("name", "content", "says"), ARCHIVE_CASES)
def test_bad_archive_is_refused(
    tmp_path: Path, cli: Cli, lake_root: Path, seeded: dict[str, bytes], name: str, content: bytes, says: str
) -> None:
    archive = write_text(tmp_path / "in" / name, content)
    result = cli("data", "ingest", "archive", str(archive), "--dataset", "prices")
    assert_rejected(result, lake_root, seeded, file=archive.name, says=says)
    assert not list(tmp_path.rglob("evil.csv")), "an unsafe member was written"


@pytest.fixture
def good_zip(tmp_path: Path) -> Path:
    return write_text(tmp_path / "in" / "dump.zip", zip_bytes({"data/AAA.csv": GOOD_BARS}))


def test_archive_with_wrong_sha256_is_refused(
    cli: Cli, lake_root: Path, seeded: dict[str, bytes], good_zip: Path
) -> None:
    result = cli("data", "ingest", "archive", str(good_zip), "--dataset", "prices", "--sha256", "0" * 64)
    assert_rejected(result, lake_root, seeded, file=good_zip.name, says="SHA-256 mismatch")


@pytest.mark.parametrize(
    ("manifest_text", "row", "says"),
    [
        pytest.param("{zeros}  other.zip\n", None, "no checksum listed for 'dump.zip'", id="archive-not-listed"),
        pytest.param("{zeros}  other.zip\nabc123  dump.zip\n", 2, "not a SHA-256 hex digest", id="malformed-digest"),
        pytest.param("{zeros}  *dump.zip\n", None, "SHA-256 mismatch", id="wrong-digest"),
    ],
)
def test_archive_with_bad_manifest_is_refused(
    tmp_path: Path,
    cli: Cli,
    lake_root: Path,
    seeded: dict[str, bytes],
    good_zip: Path,
    manifest_text: str,
    row: int | None,
    says: str,
) -> None:
    manifest = write_text(tmp_path / "in" / "SHA256SUMS", manifest_text.format(zeros="0" * 64))
    result = cli("data", "ingest", "archive", str(good_zip), "--dataset", "prices", "--manifest", str(manifest))
    named = good_zip.name if says == "SHA-256 mismatch" else manifest.name
    assert_rejected(result, lake_root, seeded, file=named, row=row, says=says)


def test_archive_with_bad_content_leaves_the_lake_untouched(
    tmp_path: Path, cli: Cli, lake_root: Path, seeded: dict[str, bytes]
) -> None:
    archive = write_text(tmp_path / "in" / "dump.zip", zip_bytes({"data/AAA.csv": with_value(2, "Close", "abc")}))
    result = cli("data", "ingest", "archive", str(archive), "--dataset", "prices")
    assert_rejected(result, lake_root, seeded, file="AAA.csv", row=2, field="Close", says="is not a number")


# --------------------------------------------------------------------------------------------------------- StockNet

GOOD_TWEET = json.dumps(
    {"text": ["$bbb", "is", "up"], "created_at": "Mon Nov 24 15:00:00 +0000 2014", "user_id_str": "42"}
)


def stocknet_copy(root: Path, tweet_lines: list[bytes], *, prices: str = GOOD_BARS, ticker: str = "BBB") -> Path:
    """A minimal StockNet layout: price/raw/<ticker>.csv and tweet/preprocessed/<ticker>/2014-11-24."""
    write_text(root / "price" / "raw" / f"{ticker}.csv", prices)
    write_text(root / "tweet" / "preprocessed" / ticker / "2014-11-24", b"\n".join(tweet_lines) + b"\n")
    return root


def tweet(**fields: object) -> bytes:
    post: dict[str, object] = {"text": ["x"], "created_at": "Mon Nov 24 16:00:00 +0000 2014", "user_id_str": "7"}
    post.update(fields)
    return json.dumps({k: v for k, v in post.items() if v is not None}).encode()


STOCKNET_CASES = [
    pytest.param(b'{"text": ["x"], "created_at": ', None, "not a JSON object", id="bad-json-line"),
    pytest.param(tweet(created_at=None), "created_at", "missing key", id="missing-created_at"),
    pytest.param(tweet(text=None), "text", "missing key", id="missing-text"),
    pytest.param(tweet(created_at="2014-11-24 16:00"), "created_at", "bad created_at", id="bad-created_at"),
    pytest.param(tweet(text="not a list"), "text", "list of tokens", id="text-not-a-list"),
    pytest.param(b'{"text": ["caf\xe9"]}', None, "UTF-8", id="non-utf8-line"),
]


@pytest.mark.parametrize(("line", "field", "says"), STOCKNET_CASES)
def test_bad_stocknet_tweet_is_refused(
    tmp_path: Path, cli: Cli, lake_root: Path, seeded: dict[str, bytes], line: bytes, field: str | None, says: str
) -> None:
    root = stocknet_copy(tmp_path / "stocknet", [GOOD_TWEET.encode(), line])
    result = cli("data", "ingest", "stocknet", str(root), "--dataset", "prices")
    assert_rejected(result, lake_root, seeded, file="2014-11-24", row=2, field=field, says=says)


def test_bad_stocknet_price_is_refused(tmp_path: Path, cli: Cli, lake_root: Path, seeded: dict[str, bytes]) -> None:
    root = stocknet_copy(tmp_path / "stocknet", [GOOD_TWEET.encode()], prices=with_value(3, "Close", "abc"))
    result = cli("data", "ingest", "stocknet", str(root), "--dataset", "prices")
    assert_rejected(result, lake_root, seeded, file="BBB.csv", row=3, field="Close", says="is not a number")


def test_stocknet_empty_tweet_leaves_the_lake_untouched(
    tmp_path: Path, cli: Cli, lake_root: Path, seeded: dict[str, bytes]
) -> None:
    root = stocknet_copy(tmp_path / "stocknet", [GOOD_TWEET.encode(), tweet(text=[])])
    result = cli("data", "ingest", "stocknet", str(root), "--dataset", "prices")
    assert_rejected(result, lake_root, seeded, file="2014-11-24", row=2, says="non-empty list of tokens")


# ---------------------------------------------------------------------------------------------- explicit repairs


@pytest.mark.parametrize(
    ("content", "reported"),
    [
        pytest.param(with_value(3, "Date", "2014-11-25"), "duplicate rows dropped", id="duplicate"),
        pytest.param(swapped(2, 3), "unsorted rows sorted", id="unsorted"),
        pytest.param(with_value(4, "Date", "2014-11-27"), "bars outside sessions dropped", id="off-session"),
    ],
)
def test_repair_fixes_order_problems_and_reports_them(
    tmp_path: Path, cli: Cli, seeded: dict[str, bytes], content: str, reported: str
) -> None:
    path = write_text(tmp_path / "in" / "AAA.csv", content)
    assert ingest_csv(cli, path).exit_code != 0
    result = ingest_csv(cli, path, "--repair", "--update")  # the repaired rows also change stored values
    assert result.exit_code == 0, result.output
    assert re.search(rf"{reported}\s*│\s*1\b", result.output), result.output


def test_missing_value_is_an_error_unless_dropped(
    tmp_path: Path, cli: Cli, lake_root: Path, seeded: dict[str, bytes]
) -> None:
    path = write_text(tmp_path / "in" / "AAA.csv", with_value(3, "Close", ""))
    refused = ingest_csv(cli, path)
    assert_rejected(refused, lake_root, seeded, file=path.name, row=3, field="Close", says="value is missing")
    dropped = ingest_csv(cli, path, "--missing-bars", "drop")
    assert dropped.exit_code == 0, dropped.output
    assert re.search(r"rows with missing values dropped\s*│\s*1\b", dropped.output), dropped.output


def test_a_row_number_is_printed_as_an_integer() -> None:
    error = DataValidationError("date is not a session", file="prices.csv", row=43.0, field="Date")
    assert str(error).startswith("prices.csv, row 43, field 'Date'")
