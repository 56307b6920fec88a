"""The column dictionary checked against the data: rows breaking each declared constraint.

One place for the check, used by registration (which refuses a file that breaks its own
dictionary, node/datasets.py) and by the scorecard's validity metric Q2a. It is one
DuckDB pass over the file as every job reads it (:class:`node.data.DataFile`), with the
column's declared missing-value codes read as missing, so memory does not grow with the
file. Only counts come out, never a value: the counts are what an officer may be shown
whatever the dataset's grade.

Table Schema semantics (governance §1.5.1): ``type`` counts present cells that are not
of the record's type (which the node measured at registration, so only a file read
differently since breaks it); ``required`` counts missing cells; ``enum``,
``minimum``, ``maximum``, ``pattern`` (a whole-value Python regex over the value's text,
as frictionless matches it) and ``unique`` (each repeat after the first) count present
cells that break them.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from node.data import DataFile
from node.profiling import schema_type
from scifed.errors import excerpt, excerpt_repr
from scifed.filters import quote_identifier
from scifed.record import NUMERIC_TYPES, Constraints, Field

_TEMPORAL = {"date": dt.date.fromisoformat, "datetime": dt.datetime.fromisoformat,
             "time": dt.time.fromisoformat}
_SQL_TYPES = {"date": "DATE", "datetime": "TIMESTAMP", "time": "TIME", "integer": "BIGINT",
              "number": "DOUBLE", "boolean": "BOOLEAN", "string": "VARCHAR"}


@dataclass(frozen=True)
class Violation:
    """``rows`` of the column's ``of`` rows (all rows for ``required``, present ones
    otherwise) break ``constraint``."""

    column: str
    constraint: str
    rows: int
    of: int

    def describe(self) -> str:
        return (f"column {excerpt(self.column, 60)}: {self.rows} of {self.of} rows break "
                f"constraints.{self.constraint}")


@dataclass
class ConstraintCheck:
    """What the data says about its dictionary: the violations, the cells (present
    values) breaking any constraint per column, the present cells checked, and the
    problems of the dictionary itself (a bound that is not a number, say)."""

    violations: list[Violation] = field(default_factory=list)
    bad_cells: dict[str, int] = field(default_factory=dict)
    present_cells: int = 0
    problems: list[str] = field(default_factory=list)


def _bound(f: Field, value: float | str) -> object | None:
    """The bound as the column's type, or None when it cannot be one (a problem)."""
    if f.type in NUMERIC_TYPES:
        try:
            return float(value)
        except ValueError:
            return None
    parse = _TEMPORAL.get(f.type)
    if parse is not None and isinstance(value, str):
        try:
            return parse(value)
        except ValueError:
            return None
    return None


def _matcher(regex: re.Pattern[str]):
    """A DuckDB vectorised (Arrow) function: does each text match ``regex`` whole? Each
    distinct value of a batch is matched once."""

    def matches(values: pa.Array) -> pa.Array:
        distinct = pc.unique(values).drop_null().to_pylist()
        hits = pa.array([v for v in distinct if regex.fullmatch(v)], type=pa.string())
        return pc.is_in(values, value_set=hits)

    return matches


def check_constraints(path: Path, fields: Sequence[Field]) -> ConstraintCheck:
    """Count, per column of ``fields`` (a record's columns, with the types the node
    measured), the rows breaking each declared constraint, in one pass over ``path``."""
    out = ConstraintCheck()
    with DataFile(path) as data:
        present = [f for f in fields if f.name in data.types]
        values: list[str] = []  # each column, missing codes read as NULL
        params: list = []
        for f in present:
            col = quote_identifier(f.name)
            if f.missing_values:
                if f.type in NUMERIC_TYPES:
                    codes = []
                    for code in f.missing_values:
                        try:
                            codes.append(float(code))
                        except ValueError:
                            pass
                    values.append(f"CASE WHEN list_contains(?::DOUBLE[], "
                                  f"TRY_CAST({col} AS DOUBLE)) THEN NULL ELSE {col} END")
                    params.append(codes)
                else:
                    values.append(f"CASE WHEN list_contains(?::VARCHAR[], {col}::VARCHAR) "
                                  f"THEN NULL ELSE {col} END")
                    params.append(list(f.missing_values))
            else:
                values.append(col)
        base = ", ".join(f"{v} AS v{i}" for i, v in enumerate(values)) or "NULL AS v0"
        windows = []
        aggregates = ["count(*)"]
        agg_params: list = []
        checks: list[tuple[Field, str]] = []  # (column, constraint) per aggregate after 0
        anys: list[Field] = []
        for i, f in enumerate(present):
            v = f"v{i}"
            aggregates.append(f"count({v})")
            c = f.constraints
            # (constraint, SQL true where a present value breaks it, parameters)
            breaks: list[tuple[str, str, list]] = []
            reads_as = schema_type(data.types[f.name])
            if reads_as != f.type and not (f.type == "number" and reads_as == "integer"):
                # The file reads differently since registration: a value that is not of
                # the record's type breaks it, and the other constraints see the rest as
                # that type.
                if f.type == "integer":  # TRY_CAST would round 1.5; it is no integer
                    number = f"TRY_CAST({v} AS DOUBLE)"
                    breaks.append(("type", f"{number} IS NULL OR {number} <> round({number})",
                                   []))
                    v = number
                else:
                    v = f"TRY_CAST({v} AS {_SQL_TYPES.get(f.type, 'VARCHAR')})"
                    breaks.append(("type", f"{v} IS NULL", []))
            if c is None:
                c = Constraints()
            where = f"fields.{excerpt(f.name, 60)}.constraints"
            if c.required:
                aggregates.append(f"count(*) FILTER (WHERE v{i} IS NULL)")
                checks.append((f, "required"))
            if c.enum is not None:
                if f.type in NUMERIC_TYPES:
                    try:
                        allowed: list = [float(e) for e in c.enum]
                    except (TypeError, ValueError):
                        out.problems.append(f"{where}.enum: the column holds numbers, so every "
                                            "allowed value must be a number")
                        allowed = []
                    if allowed:
                        breaks.append(("enum", f"NOT list_contains(?::DOUBLE[], {v}::DOUBLE)",
                                       [allowed]))
                else:
                    text = ("CASE WHEN {v} THEN 'true' ELSE 'false' END"
                            if f.type == "boolean" else "{v}::VARCHAR").format(v=v)
                    allowed = [str(e).lower() if f.type == "boolean" else str(e)
                               for e in c.enum]
                    breaks.append(("enum", f"NOT list_contains(?::VARCHAR[], {text})",
                                   [allowed]))
            for key, op in (("minimum", "<"), ("maximum", ">")):
                bound = getattr(c, key)
                if bound is None:
                    continue
                typed = _bound(f, bound)
                if typed is None:
                    out.problems.append(
                        f"{where}.{key}: {excerpt_repr(bound, 60)} is not a bound for a "
                        f"{f.type} column (bounds apply to numbers, dates and times)")
                    continue
                cast = "DOUBLE" if f.type in NUMERIC_TYPES else _SQL_TYPES[f.type]
                breaks.append((key, f"{v}::{cast} {op} ?::{cast}", [typed]))
            if c.pattern is not None:
                name = f"scifed_pattern_{i}"
                data.con.create_function(name, _matcher(re.compile(c.pattern)), [str], bool,
                                         type="arrow")
                breaks.append(("pattern", f"NOT {name}({v}::VARCHAR)", []))
            if c.unique:
                windows.append(f"row_number() OVER (PARTITION BY v{i}) > 1 AS dup{i}")
                breaks.append(("unique", f"dup{i}", []))
            for key, sql, ps in breaks:
                checks.append((f, key))
                # A value of another type breaks "type" only, not the other constraints.
                value = f"v{i}" if key == "type" else v
                aggregates.append(f"count(*) FILTER (WHERE {value} IS NOT NULL AND ({sql}))")
                agg_params += ps
            if breaks:
                anys.append(f)
                union = " OR ".join(f"coalesce({sql}, false)" for _, sql, _ in breaks)
                aggregates.append(f"count(*) FILTER (WHERE v{i} IS NOT NULL AND ({union}))")
                agg_params += [p for _, _, ps in breaks for p in ps]
        rows_sql = f"SELECT {base} FROM {data.source}"
        if windows:
            rows_sql = f"SELECT *, {', '.join(windows)} FROM ({rows_sql})"
        sql = f"WITH d AS ({rows_sql}) SELECT {', '.join(aggregates)} FROM d"
        (row,) = data._fetch(sql, [*params, *agg_params], "fetchall")
    n, counts = row[0], iter(row[1:])
    # Walk the aggregates in the order they were added.
    by_column: dict[str, int] = {}
    for f in present:
        by_column[f.name] = next(counts)
        mine = [k for g, k in checks if g is f]
        for key in mine:
            broken = next(counts)
            of = n if key == "required" else by_column[f.name]
            if broken:
                out.violations.append(Violation(f.name, key, int(broken), int(of)))
        if f in anys:
            out.bad_cells[f.name] = int(next(counts))
    out.present_cells = sum(by_column.values())
    return out
