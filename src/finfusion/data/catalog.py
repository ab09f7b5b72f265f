"""The catalog: DuckDB queries over the lake's Parquet files.

It lists datasets (frequency, symbols, date range, row counts) and serves point-in-time reads: the bars and texts
known at an instant t (a bar is known at its close `ts`, a text at `published_at`).
"""

from __future__ import annotations

from datetime import datetime

import duckdb
import polars as pl

from finfusion.data.lake import Lake
from finfusion.data.schema import BARS, SCHEMAS, TEXT, TableSchema
from finfusion.errors import LakeError

#: DuckDB types of the optional columns that older files may lack.
_SQL_TYPES = {pl.Float64: "DOUBLE", pl.Int64: "BIGINT", pl.Boolean: "BOOLEAN", pl.String: "VARCHAR"}


class Catalog:
    """Read-only SQL view of a lake. Every method returns a polars frame with UTC timestamps."""

    def __init__(self, lake: Lake) -> None:
        self.lake = lake
        self.con = duckdb.connect()
        self.con.execute("SET TimeZone = 'UTC'")

    def _source(self, kind: str, dataset: str, freq: str | None = None) -> str:
        files = self.lake.files(kind, dataset, freq)
        if not files:
            raise LakeError(f"no {kind} dataset '{dataset}'{f' at {freq}' if freq else ''} in {self.lake.root}")
        listed = ", ".join(f"'{_quote(path.as_posix())}'" for path in files)
        # union_by_name: files written before an optional column existed lack it (read as NULL)
        return f"read_parquet([{listed}], hive_partitioning = true, hive_types_autocast = false, union_by_name = true)"

    def _query(self, sql: str, params: list | None = None) -> pl.DataFrame:
        frame = pl.from_arrow(self.con.sql(sql, params=params or None).to_arrow_table())
        return frame.with_columns(
            pl.col(c).dt.convert_time_zone("UTC")
            for c, t in frame.schema.items()
            if isinstance(t, pl.Datetime) and t.time_zone
        )

    def _columns(self, schema: TableSchema, source: str) -> str:
        """The schema's columns as a select list; an optional column none of the files has yet is a typed NULL."""
        present = set(self.con.sql(f"SELECT * FROM {source} LIMIT 0").columns)
        return ", ".join(
            c.name if c.name in present or c.required else f"CAST(NULL AS {_SQL_TYPES[c.dtype]}) AS {c.name}"
            for c in schema.columns
        )

    def datasets(self) -> pl.DataFrame:
        """One row per (kind, dataset, freq): symbols, rows, first, last, source and fields."""
        rows = []
        for kind, dataset, freq in self.lake.datasets():
            meta = self.lake.metadata(kind, dataset)
            schema = SCHEMAS[kind]
            src = self._source(kind, dataset, freq)
            time_col = schema.time_column
            span = f"min({time_col}) AS first, max({time_col}) AS last" if time_col else "NULL AS first, NULL AS last"
            stats = self._query(f"SELECT count(*) AS n, {span} FROM {src}").row(0, named=True)
            symbols = self._symbol_count(kind, src)
            rows.append(
                {
                    "kind": kind,
                    "dataset": dataset,
                    "freq": freq,
                    "symbols": int(symbols),
                    "rows": int(stats["n"]),
                    "first": stats["first"],
                    "last": stats["last"],
                    "source": meta.get("source"),
                    "fields": ",".join(meta.get("fields", [])) or None,
                }
            )
        schema = {
            "kind": pl.String, "dataset": pl.String, "freq": pl.String, "symbols": pl.Int64, "rows": pl.Int64,
            "first": pl.Datetime("us", "UTC"), "last": pl.Datetime("us", "UTC"),
            "source": pl.String, "fields": pl.String,
        }  # fmt: skip
        return pl.DataFrame(rows, schema=schema)

    def _symbol_count(self, kind: str, src: str) -> int:
        """Distinct symbols (for a series dataset: distinct series)."""
        names = SCHEMAS[kind].names
        if "symbol" not in names and "symbols" not in names and "series" not in names:
            return 0
        expr = "unnest(symbols)" if "symbols" in names else "symbol" if "symbol" in names else "series"
        return int(self._query(f"SELECT count(DISTINCT s) AS n FROM (SELECT {expr} AS s FROM {src})").item())

    def symbols(self, kind: str, dataset: str, freq: str | None = None) -> pl.DataFrame:
        """Per symbol: rows, first and last instant (for texts, per symbol mentioned; for series, per series)."""
        src = self._source(kind, dataset, freq)
        time_col = SCHEMAS[kind].time_column
        grouping = {"text": "unnest(symbols)", "series": "series"}.get(kind, "symbol")
        inner = f"SELECT {grouping} AS symbol, {time_col} FROM {src}"
        return self._query(
            f"SELECT symbol, count(*) AS rows, min({time_col}) AS first, max({time_col}) AS last "
            f"FROM ({inner}) GROUP BY symbol ORDER BY symbol"
        )

    def bars_asof(
        self,
        dataset: str,
        t: datetime,
        *,
        freq: str = "1d",
        symbols: list[str] | None = None,
        start: datetime | None = None,
    ) -> pl.DataFrame:
        """Bars closed at or before `t` (optionally from `start`), sorted by (symbol, ts)."""
        where, params = ["ts <= ?"], [t]
        if start is not None:
            where.append("ts >= ?")
            params.append(start)
        if symbols is not None:
            where.append("list_contains(?, symbol)")
            params.append(symbols)
        source = self._source("bars", dataset, freq)
        columns = self._columns(BARS, source)
        sql = f"SELECT {columns} FROM {source} WHERE {' AND '.join(where)} ORDER BY symbol, ts"
        return self._query(sql, params)

    def texts_asof(
        self, dataset: str, t: datetime, *, symbols: list[str] | None = None, start: datetime | None = None
    ) -> pl.DataFrame:
        """Texts published at or before `t` (optionally from `start`) that mention any of `symbols`."""
        where, params = ["published_at <= ?"], [t]
        if start is not None:
            where.append("published_at >= ?")
            params.append(start)
        if symbols is not None:
            where.append("len(list_intersect(symbols, ?)) > 0")
            params.append(symbols)
        source = self._source("text", dataset)
        columns = self._columns(TEXT, source)
        sql = f"SELECT {columns} FROM {source} WHERE {' AND '.join(where)} ORDER BY published_at, id"
        return self._query(sql, params)


def _quote(text: str) -> str:
    return text.replace("'", "''")
