"""Profile a dataset file where it lives, so only the profile (never rows) leaves the node.

Reading goes through :func:`read_table`, which is also what later queries use, so the
profile describes exactly the table that computations will see. CSV is read strictly
(RFC 4180 dialect, header required, ``NA`` and empty fields missing): a ragged file is
refused, never silently repaired.

Min/max are reported for numeric columns (as floats) and temporal columns (as ISO
strings) only. String and boolean columns get none: the lexicographic extremes of free
text are real values from the file (often names or identifiers) and the profile is
published in the catalog.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import duckdb
import frictionless

from scifed.errors import UserError
from scifed.record import NUMERIC_TYPES as _NUMERIC

MEDIA_TYPES = {
    ".csv": "text/csv",
    ".tsv": "text/tab-separated-values",
    ".parquet": "application/vnd.apache.parquet",
}
CSV_MISSING_VALUES = ["", "NA"]
_DELIMITERS = {".csv": ",", ".tsv": "\t"}
_CHUNK = 1 << 20

_INTEGER_TYPES = {
    "tinyint",
    "smallint",
    "integer",
    "bigint",
    "hugeint",
    "utinyint",
    "usmallint",
    "uinteger",
    "ubigint",
    "uhugeint",
}
_TYPE_MAP = {
    **dict.fromkeys(_INTEGER_TYPES, "integer"),
    **dict.fromkeys(("float", "double", "decimal"), "number"),
    **dict.fromkeys(("varchar", "uuid", "enum"), "string"),
    "boolean": "boolean",
    "date": "date",
    **dict.fromkeys(
        ("timestamp", "timestamp with time zone", "timestamp_ns", "timestamp_ms", "timestamp_s"),
        "datetime",
    ),
    **dict.fromkeys(("time", "time with time zone"), "time"),
}
_TEMPORAL = {"date", "datetime", "time"}


@dataclass(frozen=True)
class ColumnProfile:
    """Summary of one column. ``distinct`` is None for nested (``any``) columns."""

    name: str
    type: str
    missing: int
    distinct: int | None
    min: float | str | None
    max: float | str | None
    mean: float | None
    std: float | None


@dataclass(frozen=True)
class DataProfile:
    """What the catalog may say about a file: size, digest, shape and column summaries."""

    media_type: str
    byte_size: int
    sha256: str
    row_count: int
    columns: list[ColumnProfile]

    def table_schema(self) -> dict:
        """The Frictionless Table Schema descriptor, validated by frictionless itself."""
        descriptor = {
            "fields": [{"name": c.name, "type": c.type} for c in self.columns],
            # Parquet has native nulls; only CSV-like text spells missing values.
            "missingValues": [""]
            if self.media_type == MEDIA_TYPES[".parquet"]
            else list(CSV_MISSING_VALUES),
        }
        frictionless.Schema.from_descriptor(descriptor)
        return descriptor


def read_table(path: Path) -> str:
    """A DuckDB table expression for the file, usable as ``SELECT ... FROM {read_table(p)}``."""
    suffix = _check_path(path)
    source = _sql_literal(_escape_glob(str(path.absolute())))
    if suffix == ".parquet":
        return f"read_parquet({source})"
    return _read_csv(source, _DELIMITERS[suffix])


def profile_file(path: Path) -> DataProfile:
    """Hash and profile a CSV/TSV/Parquet file in one streaming read plus one SQL pass."""
    source = read_table(path)
    suffix = path.suffix.lower()
    byte_size, sha256, first_line = _digest(path)
    if byte_size == 0:
        raise UserError(f"{path}: file is empty")
    if suffix in _DELIMITERS and not first_line.strip():
        raise UserError(f"{path}: the first line is empty; a header row is required")

    con = duckdb.connect()
    try:
        try:
            relation = con.sql(f"SELECT * FROM {source}")
            names = relation.columns
            kinds = [_TYPE_MAP.get(t.id, "any") for t in relation.types]
            if not names:
                raise UserError(f"{path}: no columns")
            aggregates = ["count(*)"]
            for name, kind in zip(names, kinds, strict=True):
                aggregates += _aggregates(_sql_identifier(name), kind)
            row = con.execute(f"SELECT {', '.join(aggregates)} FROM {source}").fetchone()
        except duckdb.Error as exc:
            # "from None": DuckDB's text quotes raw rows, which must not reach logs.
            raise UserError(f"{path}: {_explain(con, path, exc)}") from None
    finally:
        con.close()

    assert row is not None
    row_count, stats = row[0], row[1:]
    columns = []
    for i, (name, kind) in enumerate(zip(names, kinds, strict=True)):
        present, distinct, lo, hi, mean, std = stats[6 * i : 6 * i + 6]
        if kind in _TEMPORAL:
            lo, hi = _iso(lo), _iso(hi)
        columns.append(
            ColumnProfile(
                name=name,
                type=kind,
                missing=row_count - present,
                distinct=distinct,
                min=lo,
                max=hi,
                mean=mean,
                std=std,
            )
        )
    return DataProfile(
        media_type=MEDIA_TYPES[suffix],
        byte_size=byte_size,
        sha256=sha256,
        row_count=row_count,
        columns=columns,
    )


def _aggregates(col: str, kind: str) -> list[str]:
    """Six expressions per column: present, distinct, min, max, mean, sample std."""
    distinct = "NULL" if kind == "any" else f"count(DISTINCT {col})"
    if kind in _NUMERIC:
        extremes = [f"min({col})::DOUBLE", f"max({col})::DOUBLE"]
        moments = [f"avg({col})::DOUBLE", f"stddev_samp({col}::DOUBLE)"]
    elif kind in _TEMPORAL:
        extremes, moments = [f"min({col})", f"max({col})"], ["NULL", "NULL"]
    else:
        extremes, moments = ["NULL", "NULL"], ["NULL", "NULL"]
    return [f"count({col})", distinct, *extremes, *moments]


def _iso(value: dt.date | dt.time | None) -> str | None:
    return None if value is None else value.isoformat()


def _check_path(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in MEDIA_TYPES:
        raise UserError(
            f"{path}: unsupported file type {suffix or '(none)'!r}; "
            f"expected one of {', '.join(MEDIA_TYPES)}"
        )
    if not path.exists():
        raise UserError(f"{path}: no such file")
    if not path.is_file():
        raise UserError(f"{path}: not a regular file")
    return suffix


def _digest(path: Path) -> tuple[int, str, bytes]:
    """Size, SHA-256 and first line in one streaming read."""
    digest = hashlib.sha256()
    size = 0
    first = b""
    try:
        with path.open("rb") as f:
            while chunk := f.read(_CHUNK):
                if not size:
                    first = chunk.split(b"\n", 1)[0]
                digest.update(chunk)
                size += len(chunk)
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror})") from None
    return size, digest.hexdigest(), first


def _read_csv(source: str, delimiter: str, columns: int | None = None) -> str:
    """Strict RFC 4180 reading; with ``columns`` the sniffer is off (used to locate errors)."""
    options = [
        "header = true",
        f"delim = {_sql_literal(delimiter)}",
        "quote = '\"'",
        "escape = '\"'",
        f"nullstr = [{', '.join(map(_sql_literal, CSV_MISSING_VALUES))}]",
        "strict_mode = true",
        "ignore_errors = false",
    ]
    if columns is not None:
        spec = ", ".join(f"'c{i}': 'VARCHAR'" for i in range(columns))
        options += ["auto_detect = false", f"columns = {{{spec}}}"]
    return f"read_csv({source}, {', '.join(options)})"


_LINE = re.compile(r"CSV Error on Line: (\d+)")
_COLUMNS = re.compile(r"Expected Number of Columns: (\d+) Found: (\d+)")
_CONVERT = re.compile(r"Error when converting column \"(.*?)\"\. .* to '(.+?)'")


def _explain(con: duckdb.DuckDBPyConnection, path: Path, exc: duckdb.Error) -> str:
    """One line about what is wrong, without quoting the offending row."""
    text = str(exc)
    if "Error when sniffing file" in text and path.suffix.lower() in _DELIMITERS:
        # The sniffer only says it gave up; a header-only read pinpoints the bad line.
        located = _locate_csv_error(con, path)
        return located or "cannot detect a consistent CSV layout (delimiter, quoting, encoding)"
    return _csv_error(text) or text.splitlines()[0]


def _locate_csv_error(con: duckdb.DuckDBPyConnection, path: Path) -> str | None:
    delimiter = _DELIMITERS[path.suffix.lower()]
    with path.open(newline="", encoding="utf-8", errors="replace") as f:
        width = len(next(csv.reader(f, delimiter=delimiter), []))
    source = _sql_literal(_escape_glob(str(path.absolute())))
    try:
        con.execute(f"SELECT count(*) FROM {_read_csv(source, delimiter, width)}").fetchall()
    except duckdb.Error as exc:
        return _csv_error(str(exc))
    return None


def _csv_error(text: str) -> str | None:
    line = _LINE.search(text)
    if line is None:
        return None
    where = f"line {line.group(1)}"
    if columns := _COLUMNS.search(text):
        return f"{where}: expected {columns.group(1)} columns, found {columns.group(2)}"
    if "unterminated quote" in text:
        return f"{where}: unterminated quoted value"
    if "Invalid unicode" in text:
        return f"{where}: not UTF-8 text"
    if convert := _CONVERT.search(text):
        return (
            f"{where}: a value in column {convert.group(1)!r} is not {convert.group(2)} "
            "like the rows before it"
        )
    return f"{where}: malformed row"


def _escape_glob(path: str) -> str:
    # DuckDB expands *, ? and [...] in file names; bracket them so a name is only itself.
    return re.sub(r"([*?\[])", r"[\1]", path)


def _sql_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _sql_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
