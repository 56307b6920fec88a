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
cell's k.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import math
from typing import TYPE_CHECKING

import duckdb

from scifed.delivery import MAX_ANSWER_ROWS

if TYPE_CHECKING:  # a node imports pandas only when a job needs it (test_node_imports)
    import pandas as pd
from scifed.errors import UserError, excerpt
from scifed.filters import quote_identifier

AGGREGATES = {"count": "count", "count_star": "count", "sum": "sum", "avg": "avg",
              "mean": "avg", "stddev": "stddev_samp", "stddev_samp": "stddev_samp",
              "variance": "var_samp", "var_samp": "var_samp"}
_N = "__scifed_n"
# The fewest rows an aggregate answer describes, whatever the cell's k: where the cell's
# k is 1 (G1 OPEN) but rows are not allowed (the officer took download away, or an
# embargo runs), a group of one row would still be a row.
MIN_GROUP = 3


def _refuse(why: str) -> UserError:
    return UserError(f"in-node service: {why}; on this dataset a query is an aggregate: "
                     "SELECT group columns and count/sum/avg/stddev/variance of columns "
                     "FROM data GROUP BY those columns")


def sandbox(frame: pd.DataFrame) -> duckdb.DuckDBPyConnection:
    """A database holding only ``data`` (the granted columns), sealed off from files."""
    con = duckdb.connect(":memory:")
    con.register("granted", frame)
    con.execute("CREATE TABLE data AS SELECT * FROM granted")
    con.unregister("granted")
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    return con


def single_select(con: duckdb.DuckDBPyConnection, sql: str) -> dict:
    """The parse tree of ``sql`` if it is exactly one SELECT statement."""
    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as exc:
        raise UserError(f"in-node service: the query does not parse: "
                        f"{excerpt(str(exc).splitlines()[0])}") from None
    if len(statements) != 1 or statements[0].type != duckdb.StatementType.SELECT:
        raise UserError("in-node service: give exactly one read-only SELECT statement")
    tree = json.loads(con.execute("SELECT json_serialize_sql(?)", [sql]).fetchone()[0])
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
                raise _refuse(f"column {name!r} is selected without being a group column "
                              "(that would return rows)")
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
        aggregates.append((AGGREGATES[fn], column, bool(expr.get("distinct")),
                           expr.get("alias") or f"{fn}({column})"))
    if not aggregates:
        raise _refuse("the query computes no aggregate")
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
    return str(value)


def _rows(result: list[tuple]) -> list[list]:
    return [[_plain(v) for v in r] for r in result]


def run(frame: pd.DataFrame, sql: str, *, rows_allowed: bool, k: int) -> dict:
    """The answer to ``sql`` over the granted columns: {columns, rows, withheld, mode}."""
    con = sandbox(frame)
    try:
        node = single_select(con, sql)
        if rows_allowed:
            try:
                result = con.execute(sql).fetchmany(MAX_ANSWER_ROWS + 1)
                columns = [d[0] for d in con.description]
            except duckdb.Error as exc:
                raise UserError(f"in-node service: {excerpt(str(exc).splitlines()[0])}") \
                    from None
            if len(result) > MAX_ANSWER_ROWS:
                raise UserError(f"in-node service: the answer has more than "
                                f"{MAX_ANSWER_ROWS} rows; narrow the query or download")
            return {"columns": columns, "rows": _rows(result), "withheld": 0,
                    "mode": "rows"}
        groups, aggregates = aggregate_plan(node)
        q = quote_identifier
        parts = [q(g) for g in groups]
        guards = [f"count(*) AS {_N}"]
        for i, (fn, column, distinct, alias) in enumerate(aggregates):
            arg = "*" if column is None else ("DISTINCT " if distinct else "") + q(column)
            parts.append(f"{fn}({arg}) AS {q(alias)}")
            if column is not None:
                guards.append(f"count({q(column)}) AS {_N}{i}")
        text = (f"SELECT {', '.join(parts + guards)} FROM data"
                + (f" GROUP BY {', '.join(q(g) for g in groups)}" if groups else ""))
        try:
            result = con.execute(text).fetchall()
            columns = [d[0] for d in con.description]
        except duckdb.Error as exc:
            raise UserError(f"in-node service: {excerpt(str(exc).splitlines()[0])}") from None
        shown = len(parts)
        kept = _rows([r[:shown] for r in result if all(n >= k for n in r[shown:])])
        return {"columns": columns[:shown], "rows": kept, "withheld": len(result) - len(kept),
                "mode": f"aggregates, groups of at least {k}"}
    finally:
        con.close()
