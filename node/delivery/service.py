"""In-node service queries: one read-only SELECT over a view of the granted columns.

The query runs in a DuckDB database of its own that holds only table ``data`` (the
granted columns, copied in), with external access switched off and the configuration
locked before the researcher's text is parsed: no file, extension or other dataset is
reachable from it, and exactly one SELECT statement is accepted.

Where the cell lets the researcher download without approval (``rules.rows_allowed``),
the answer may hold rows (at most :data:`scifed.delivery.MAX_ANSWER_ROWS`). Elsewhere
a query must be an aggregate, checked on DuckDB's own parse tree: ``SELECT`` group
columns and ``count / sum / avg / stddev / variance`` of granted columns, ``FROM data``,
``GROUP BY`` plain columns; no WHERE, HAVING, joins, subqueries, set operations, window
functions, ordering or limits, and none of min / max / median / quantile / first / list,
which name one row's value. The node does not run the researcher's text: it builds the
query again from the checked parts, adds the count of every group and of every
aggregated column's values, and withholds each group in which any of them is below the
cell's k. DISTINCT is accepted in ``count`` only: the sum, mean or spread of a group's
distinct values is a statistic of those few values, whatever the group's size (two
distinct salaries among fifty rows are each one person's). The groups it answers are
returned as row sets for the node's query auditor (:mod:`node.guard`): withholding
small groups one answer at a time does not stop the total of one answer minus the shown
groups of another from being a withheld group's.

Whatever the mode, a query is at most :data:`MAX_QUERY_CHARS` long, runs under a time
limit and a memory limit, sees no path of the node's host in DuckDB's settings, and an
answer holds at most :data:`scifed.delivery.MAX_ANSWER_BYTES`. An error raised while the query
*runs* may quote the data (a failed cast names the value, ``error()`` says what it is
given) and a refusal travels in clear through the coordinator: only errors found before
any row is read (parsing, binding) are passed on with DuckDB's words.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import math
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

import duckdb
import numpy as np

from scifed.delivery import MAX_ANSWER_BYTES, MAX_ANSWER_ROWS
from scifed.errors import UserError, excerpt
from scifed.filters import quote_identifier
from scifed.sentences import say

if TYPE_CHECKING:  # a node imports pandas only when a job needs it (test_node_imports)
    import pandas as pd

AGGREGATES = {"count": "count", "count_star": "count", "sum": "sum", "avg": "avg",
              "mean": "avg", "stddev": "stddev_samp", "stddev_samp": "stddev_samp",
              "variance": "var_samp", "var_samp": "var_samp"}
_N = "__scifed_n"
# The fewest rows an aggregate answer describes, whatever the cell's k: where the cell's
# k is 1 (G1 OPEN) but rows are not allowed (the officer took download away, or an
# embargo runs), a group of one row would still be a row.
MIN_GROUP = 3
QUERY_SECONDS = 60.0  # the longest one query may run in the node
QUERY_MEMORY_BYTES = 512 * 1024 * 1024  # what a query may use beyond its table
QUERY_THREADS = 1  # a service query shares the node with its federated jobs
_ROWS = "__scifed_rows"
_NOWHERE = "/nonexistent"  # where DuckDB would look for extensions (never loaded)
MAX_QUERY_CHARS = 20_000  # a query longer than this is refused before it is parsed
# Errors DuckDB raises before it reads a row: their text quotes only the query.
_BEFORE_ROWS = (duckdb.ParserException, duckdb.SyntaxException, duckdb.BinderException,
                duckdb.CatalogException, duckdb.PermissionException)


@dataclass(frozen=True)
class Answer:
    """What the researcher receives (``body``), and for an aggregate answer the row sets
    it describes (rows × sets, in the order of table ``data``) for the query auditor."""

    body: dict
    sets: np.ndarray | None


def _refuse(why: str) -> UserError:
    """A query that is not an aggregate the service answers, and what one looks like."""
    return UserError(say("svc.aggregate_only", why=why))


def sandbox(frame: pd.DataFrame) -> duckdb.DuckDBPyConnection:
    """A database holding only ``data`` (the granted columns), sealed off from files,
    with a memory limit above the table's own size and no spilling to disk."""
    con = duckdb.connect(":memory:")
    con.register("granted", frame)
    con.execute("CREATE TABLE data AS SELECT * FROM granted")
    con.unregister("granted")
    table = int(frame.memory_usage(deep=True).sum())
    con.execute(f"SET memory_limit = '{2 * table + QUERY_MEMORY_BYTES}B'")
    con.execute(f"SET threads = {QUERY_THREADS}")
    # nothing on disk, and no path of the node's host in a setting or a message
    for setting in ("temp_directory = ''", "secret_directory = ''", "home_directory = ''",
                    f"extension_directory = '{_NOWHERE}'",
                    "autoinstall_known_extensions = false",
                    "autoload_known_extensions = false"):
        con.execute(f"SET {setting}")
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    return con


def single_select(con: duckdb.DuckDBPyConnection, sql: str) -> dict:
    """The parse tree of ``sql`` if it is exactly one SELECT statement."""
    if len(sql) > MAX_QUERY_CHARS:
        raise UserError(f"in-node service: the query has {len(sql)} characters, more than "
                        f"the {MAX_QUERY_CHARS} the node parses")
    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as exc:
        raise UserError(f"in-node service: the query does not parse: "
                        f"{excerpt(str(exc).splitlines()[0])}") from None
    if len(statements) != 1 or statements[0].type != duckdb.StatementType.SELECT:
        raise UserError("in-node service: give exactly one read-only SELECT statement")
    tree = json.loads(con.execute("SELECT json_serialize_sql(?)", [sql]).fetchall()[0][0])
    if tree.get("error") or len(tree.get("statements", [])) != 1:
        raise UserError("in-node service: give exactly one read-only SELECT statement")
    return tree["statements"][0]["node"]


def _column(expr: dict) -> str | None:
    if expr.get("class") == "COLUMN_REF" and len(expr.get("column_names", [])) == 1:
        return expr["column_names"][0]
    return None


def aggregate_plan(node: dict) -> tuple[list[str], list[tuple[str, str | None, bool, str]]]:
    """The group columns and aggregates (function, column or None for ``*``, distinct,
    alias) of an aggregate-only query; anything else refused with what it has."""
    if node.get("type") != "SELECT_NODE":
        raise _refuse("set operations (UNION, INTERSECT, EXCEPT) are not accepted")
    if node.get("cte_map", {}).get("map"):
        raise _refuse("WITH clauses are not accepted")
    source = node.get("from_table") or {}
    if source.get("type") != "BASE_TABLE" or source.get("table_name") != "data" \
            or source.get("schema_name") or source.get("catalog_name"):
        raise _refuse("the query reads FROM data only (no joins, subqueries or functions)")
    for clause in ("where_clause", "having", "qualify", "sample"):
        if node.get(clause) is not None or source.get("sample") is not None:
            raise _refuse(f"{clause.replace('_clause', '').upper()} is not accepted")
    if node.get("modifiers"):
        raise _refuse("ORDER BY, LIMIT and DISTINCT are not accepted (sort the answer "
                      "yourself)")
    if node.get("aggregate_handling") != "STANDARD_HANDLING":
        raise _refuse("GROUP BY ALL is not accepted: name the group columns")
    groups = []
    for expr in node.get("group_expressions", []):
        name = _column(expr)
        if name is None:
            raise _refuse("GROUP BY takes plain column names")
        groups.append(name)
    if len(node.get("group_sets", [])) > 1:
        raise _refuse("GROUPING SETS, ROLLUP and CUBE are not accepted")
    aggregates: list[tuple[str, str | None, bool, str]] = []
    for expr in node.get("select_list", []):
        name = _column(expr)
        if name is not None:
            if name not in groups:
                raise _refuse(say("svc.not_grouped", column=repr(name)))
            continue
        fn = str(expr.get("function_name", "")).lower()
        if expr.get("class") != "FUNCTION" or fn not in AGGREGATES or expr.get("schema") \
                or expr.get("filter") is not None or expr.get("order_bys", {}).get("orders"):
            what = fn or str(expr.get("class", "expression")).lower()
            raise _refuse(f"{what!r} is not an accepted aggregate")
        args = expr.get("arguments", [])
        if fn == "count_star" or (fn == "count" and not args):
            aggregates.append(("count", None, False, expr.get("alias") or "count_star()"))
            continue
        column = _column(args[0].get("expression", args[0])) if len(args) == 1 else None
        if column is None:
            raise _refuse(f"{fn}() takes one plain column")
        if expr.get("distinct") and AGGREGATES[fn] != "count":
            raise _refuse(f"DISTINCT is accepted in count() only, not in {fn}(): the "
                          "distinct values of a group may be few people's")
        aggregates.append((AGGREGATES[fn], column, bool(expr.get("distinct")),
                           expr.get("alias") or f"{fn}({column})"))
    if not aggregates:
        raise _refuse(say("svc.no_aggregate"))
    return groups, aggregates


def _plain(value: object) -> object:
    """A DuckDB value as JSON carries it: dates and times as ISO text, decimals and
    non-finite floats as numbers or null, anything else exotic as its text."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dt.date | dt.time | dt.datetime):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return str(value)


def _rows(result: list[tuple]) -> list[list]:
    return [[_plain(v) for v in r] for r in result]


def _failed(exc: duckdb.Error) -> UserError:
    """A query's error as the researcher (and the relaying coordinator) may read it."""
    if isinstance(exc, duckdb.InterruptException):
        return UserError(f"in-node service: the query ran past the node's time limit of "
                         f"{QUERY_SECONDS:g} s; ask for less")
    if isinstance(exc, duckdb.OutOfMemoryException):
        return UserError("in-node service: the query needs more memory than the node "
                         "gives one query; ask for less")
    if isinstance(exc, _BEFORE_ROWS):
        return UserError(f"in-node service: {excerpt(str(exc).splitlines()[0])}")
    kind = type(exc).__name__.removesuffix("Exception")
    return UserError(f"in-node service: the query failed while it ran ({kind} error); "
                     "its message may quote the data, so the node does not send it")


def _fetch(con: duckdb.DuckDBPyConnection, sql: str, max_rows: int,
           max_bytes: int | None = MAX_ANSWER_BYTES) -> tuple[list, list]:
    """Rows (as JSON values) and column names of ``sql``, within the time limit, at most
    ``max_rows`` + 1 rows and ``max_bytes`` of JSON."""
    timer = threading.Timer(QUERY_SECONDS, con.interrupt)
    timer.start()
    try:
        con.execute(sql)
        columns = [d[0] for d in con.description]
        rows: list[list] = []
        size = 0
        while len(rows) <= max_rows and (batch := con.fetchmany(1024)):
            batch = _rows(batch)
            size += len(json.dumps(batch)) if max_bytes is not None else 0
            if max_bytes is not None and size > max_bytes:
                raise UserError(f"in-node service: the answer is larger than "
                                f"{MAX_ANSWER_BYTES // 2**20} MiB; narrow the query or "
                                "download")
            rows += batch
        return rows, columns
    except duckdb.Error as exc:
        raise _failed(exc) from None
    finally:
        timer.cancel()


def run(frame: pd.DataFrame, sql: str, *, rows_allowed: bool, k: int) -> Answer:
    """The answer to ``sql`` over the granted columns: {columns, rows, withheld, mode},
    with the row sets of the groups it shows where it is an aggregate."""
    con = sandbox(frame)
    try:
        node = single_select(con, sql)
        if rows_allowed:
            rows, columns = _fetch(con, sql, MAX_ANSWER_ROWS)
            if len(rows) > MAX_ANSWER_ROWS:
                raise UserError(f"in-node service: the answer has more than "
                                f"{MAX_ANSWER_ROWS} rows; narrow the query or download")
            return Answer({"columns": columns, "rows": rows, "withheld": 0,
                           "mode": "rows"}, None)
        groups, aggregates = aggregate_plan(node)
        q = quote_identifier
        # each row's place in the table, in a column no granted column is named like
        # (DuckDB's rowid gives way to a column of that name)
        place = _ROWS
        while place in frame.columns:
            place += "_"
        con.register("numbered", frame.assign(**{place: np.arange(len(frame))}))
        parts = [q(g) for g in groups]
        guards = [f"count(*) AS {_N}"]
        members = [f"list({q(place)}) AS {_ROWS}"]
        for i, (fn, column, distinct, alias) in enumerate(aggregates):
            arg = "*" if column is None else ("DISTINCT " if distinct else "") + q(column)
            parts.append(f"{fn}({arg}) AS {q(alias)}")
            if column is not None:
                guards.append(f"count({q(column)}) AS {_N}{i}")
                members.append(f"list({q(place)}) FILTER (WHERE {q(column)} IS NOT NULL) "
                               f"AS {_ROWS}{i}")
        text = (f"SELECT {', '.join(parts + guards + members)} FROM numbered"
                + (f" GROUP BY {', '.join(q(g) for g in groups)}" if groups else ""))
        result, columns = _fetch(con, text, len(frame) + 1, None)  # at most a group a row
        shown, counted = len(parts), len(parts) + len(guards)
        kept = [r for r in result if all(n >= k for n in r[shown:counted])]
        sets = np.zeros((len(frame), len(kept) * len(members)), dtype=bool)
        for g, r in enumerate(kept):
            for j, ids in enumerate(r[counted:]):
                sets[np.asarray(ids or [], dtype=np.int64), g * len(members) + j] = True
        return Answer({"columns": columns[:shown], "rows": [r[:shown] for r in kept],
                       "withheld": len(result) - len(kept),
                       "mode": f"aggregates, groups of at least {k}", "k": k}, sets)
    finally:
        con.close()
