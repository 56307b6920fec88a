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
import io
import re
import struct
from dataclasses import dataclass
from pathlib import Path

import duckdb

from scifed.errors import UserError, excerpt
from scifed.limits import (
    MAX_FILE_BYTES,
    MAX_FILE_COLUMNS,
    MAX_HEADER_BYTES,
    MAX_PARQUET_FOOTER_BYTES,
)
from scifed.record import NUMERIC_TYPES as _NUMERIC

MEDIA_TYPES = {
    ".csv": "text/csv",
    ".tsv": "text/tab-separated-values",
    ".parquet": "application/vnd.apache.parquet",
}
CSV_MISSING_VALUES = ["", "NA"]
_DELIMITERS = {".csv": ",", ".tsv": "\t"}
_CHUNK = 1 << 20
# Up to this many columns, the distinct counts join the one aggregate query (one pass over
# the file); wider files count them by unpivoting (see _distinct_counts).
_INLINE_DISTINCT = 32

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
        # imported here: a node validates a schema when its officer registers a dataset,
        # and frictionless (~25 MB) has no other use in a running node
        import frictionless

        frictionless.Schema.from_descriptor(descriptor)
        return descriptor


def schema_type(sql_type: duckdb.typing.DuckDBPyType) -> str:
    """The Table Schema type of a DuckDB column type (``any`` for nested types)."""
    return _TYPE_MAP.get(sql_type.id, "any")


def read_table(path: Path) -> str:
    """A DuckDB table expression for the file, usable as ``SELECT ... FROM {read_table(p)}``."""
    suffix = _check_path(path)
    source = _sql_literal(_escape_glob(str(path.absolute())))
    if suffix == ".parquet":
        return f"read_parquet({source})"
    return _read_csv(source, _DELIMITERS[suffix])


def check_file(path: Path) -> int:
    """Refuse a file beyond the registration limits (:mod:`scifed.limits`) from its size and
    header alone, in bounded memory and time; returns its number of columns.

    CSV/TSV: the header row, read from at most ``MAX_HEADER_BYTES``. Parquet: the footer's
    schema (leaf columns, nested fields included), read by pyarrow from the metadata only."""
    suffix = _check_path(path)
    where = _name(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise UserError(f"{where}: cannot read ({exc.strerror})") from None
    if size == 0:
        raise UserError(f"{where}: file is empty")
    if size > MAX_FILE_BYTES:
        raise UserError(f"{where}: larger than {_size(MAX_FILE_BYTES)} (the limit), "
                        f"got {size} bytes")
    if suffix == ".parquet":
        columns = _parquet_columns(path, size)
    else:
        columns = _header_columns(path, _DELIMITERS[suffix])
    if columns > MAX_FILE_COLUMNS:
        raise UserError(f"{where}: more than {MAX_FILE_COLUMNS} columns (the limit), "
                        f"got {columns}")
    return columns


def _header_columns(path: Path, delimiter: str) -> int:
    """Fields of the header row, reading at most ``MAX_HEADER_BYTES`` (+1) of the file."""
    where = _name(path)
    try:
        with path.open("rb") as f:
            head = f.read(MAX_HEADER_BYTES + 1)
    except OSError as exc:
        raise UserError(f"{where}: cannot read ({exc.strerror})") from None
    if b"\n" not in head and b"\r" not in head and len(head) > MAX_HEADER_BYTES:
        raise UserError(f"{where}: header row longer than {_size(MAX_HEADER_BYTES)} "
                        "(the limit)")
    text = head[:MAX_HEADER_BYTES].decode("utf-8-sig", errors="replace")
    try:
        header = next(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter), [])
    except csv.Error:
        raise UserError(f"{where}: the header row cannot be read (a column name longer "
                        f"than {csv.field_size_limit()} characters?)") from None
    return len(header)


def _parquet_columns(path: Path, size: int) -> int:
    """Leaf columns in the Parquet footer, after checking the footer's magic and length."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    where = _name(path)
    try:
        with path.open("rb") as f:
            f.seek(max(size - 8, 0))
            tail = f.read(8)
    except OSError as exc:
        raise UserError(f"{where}: cannot read ({exc.strerror})") from None
    if len(tail) < 8 or tail[4:] != b"PAR1" or size < 12:
        raise UserError(f"{where}: not a Parquet file (no PAR1 footer)")
    (footer,) = struct.unpack("<I", tail[:4])
    if footer > MAX_PARQUET_FOOTER_BYTES:
        raise UserError(f"{where}: Parquet footer larger than "
                        f"{_size(MAX_PARQUET_FOOTER_BYTES)} (the limit), got {footer} bytes")
    if footer > size - 12:
        raise UserError(f"{where}: not a valid Parquet file (footer longer than the file)")
    try:
        return pq.read_metadata(path).num_columns
    except (pa.ArrowException, OSError, ValueError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"{where}: not a valid Parquet file ({excerpt(first, 120)})") from None


def profile_file(path: Path) -> DataProfile:
    """Hash and profile a CSV/TSV/Parquet file in one streaming read plus one SQL pass
    (files wider than ``_INLINE_DISTINCT`` columns: plus one pass per column type for the
    distinct counts).

    The file is first held to the registration limits (:func:`check_file`), so a file
    with too many columns or bytes is refused before DuckDB reads it."""
    source = read_table(path)
    check_file(path)
    suffix = path.suffix.lower()
    where = _name(path)
    byte_size, sha256, first_line = _digest(path)
    if byte_size == 0:
        raise UserError(f"{where}: file is empty")
    if suffix in _DELIMITERS and not first_line.strip():
        raise UserError(f"{where}: the first line is empty; a header row is required")

    con = duckdb.connect()
    try:
        try:
            relation = con.sql(f"SELECT * FROM {source}")
            names = relation.columns
            types = relation.types
            kinds = [schema_type(t) for t in types]
            if not names:
                raise UserError(f"{where}: no columns")
            if len(names) > MAX_FILE_COLUMNS:  # nested Parquet: checked above by leaves
                raise UserError(f"{where}: more than {MAX_FILE_COLUMNS} columns (the limit), "
                                f"got {len(names)}")
            inline = len(names) <= _INLINE_DISTINCT
            aggregates = ["count(*)"]
            for name, kind in zip(names, kinds, strict=True):
                aggregates += _aggregates(_sql_identifier(name), kind, inline)
            row = con.execute(f"SELECT {', '.join(aggregates)} FROM {source}").fetchone()
            assert row is not None
            width = 6 if inline else 5
            distinct = ({n: row[1 + width * i + 5] for i, n in enumerate(names)} if inline
                        else _distinct_counts(con, source, names, types, kinds))
        except duckdb.Error as exc:
            # "from None": DuckDB's text quotes raw rows, which must not reach logs.
            raise UserError(f"{where}: {_explain(con, path, exc)}") from None
    finally:
        con.close()

    row_count, stats = row[0], row[1:]
    columns = []
    for i, (name, kind) in enumerate(zip(names, kinds, strict=True)):
        present, lo, hi, mean, std = stats[width * i : width * i + 5]
        if kind in _TEMPORAL:
            lo, hi = _iso(lo), _iso(hi)
        columns.append(
            ColumnProfile(
                name=name,
                type=kind,
                missing=row_count - present,
                distinct=None if kind == "any" else distinct.get(name, 0),
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


def _aggregates(col: str, kind: str, distinct: bool) -> list[str]:
    """Five expressions per column: present, min, max, mean, sample std; with
    ``distinct`` a sixth, the distinct count (NULL for nested ``any`` columns)."""
    if kind in _NUMERIC:
        extremes = [f"min({col})::DOUBLE", f"max({col})::DOUBLE"]
        moments = [f"avg({col})::DOUBLE", f"stddev_samp({col}::DOUBLE)"]
    elif kind in _TEMPORAL:
        extremes, moments = [f"min({col})", f"max({col})"], ["NULL", "NULL"]
    else:
        extremes, moments = ["NULL", "NULL"], ["NULL", "NULL"]
    count = ["NULL" if kind == "any" else f"count(DISTINCT {col})"] if distinct else []
    return [f"count({col})", *extremes, *moments, *count]


def _distinct_counts(con: duckdb.DuckDBPyConnection, source: str, names: list[str],
                     types: list, kinds: list[str]) -> dict[str, int]:
    """Distinct present values per column (nested ``any`` columns left out), for files
    wider than ``_INLINE_DISTINCT`` columns.

    One ``count(DISTINCT ...)`` per column in a single query costs DuckDB time and memory
    that grow with the square of the columns (200 s and 2.8 GB at 1,000 columns);
    unpivoting the columns of one type into (column, value) rows and grouping costs one
    pass per type. Columns of the same type are unpivoted together, so no value is cast
    and the counts are those of ``count(DISTINCT column)``."""
    by_type: dict[str, list[str]] = {}
    for name, kind, sql_type in zip(names, kinds, types, strict=True):
        if kind != "any":
            by_type.setdefault(str(sql_type), []).append(name)
    counts: dict[str, int] = {}
    for group in by_type.values():
        cols = ", ".join(_sql_identifier(n) for n in group)
        rows = con.execute(
            f"SELECT _scifed_column, count(DISTINCT _scifed_value) FROM (UNPIVOT "
            f"(SELECT {cols} FROM {source}) ON {cols} "
            f"INTO NAME _scifed_column VALUE _scifed_value) GROUP BY _scifed_column"
        ).fetchall()
        counts.update({name: int(n) for name, n in rows})
    return counts


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale and n % scale == 0:
            return f"{n // scale} {unit}"
    return f"{n} bytes"


def _name(path: Path) -> str:
    """The file as an error message names it (a path is input too)."""
    return excerpt(str(path), 200)


def _iso(value: dt.date | dt.time | None) -> str | None:
    return None if value is None else value.isoformat()


def _check_path(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in MEDIA_TYPES:
        raise UserError(
            f"{_name(path)}: unsupported file type {excerpt(suffix, 40) or '(none)'!r}; "
            f"expected one of {', '.join(MEDIA_TYPES)}"
        )
    try:
        exists, regular = path.exists(), path.is_file()
    except OSError as exc:  # a name too long, a permission denied on the way
        raise UserError(f"{_name(path)}: cannot read ({exc.strerror})") from None
    if not exists:
        raise UserError(f"{_name(path)}: no such file")
    if not regular:
        raise UserError(f"{_name(path)}: not a regular file")
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
        raise UserError(f"{_name(path)}: cannot read ({exc.strerror})") from None
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
    return _csv_error(text) or excerpt(text.splitlines()[0] if text else "DuckDB error", 200)


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
            f"{where}: a value in column {excerpt(convert.group(1), 60)!r} is not "
            f"{excerpt(convert.group(2), 40)} "
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
