"""The one door to a node's dataset files.

Every read of a registered file goes through :class:`DataFile`: statistics and quality
queries, the differencing guard's row mask, the rows a training grant hands to the
node's ClientApp, and the scorecard's frame. It opens the file read-only in DuckDB with
the strict reader of :func:`node.profiling.read_table` (so every job sees exactly the
table the profile describes), applies the job's compiled filter in one place, and words
every read error the same way — the first line of DuckDB's message only, because later
lines of a CSV error quote raw rows.

A file is parsed once per version, not once per task: :class:`_Loaded` keeps it as a
table in an in-memory DuckDB database of its own (one per file, so a reader sees no
other dataset), keyed by path, inode, size, modification time and the registered sha256,
and each :class:`DataFile` reads it through a cursor of that database. A changed file
has a new key and is read afresh. A job of many rounds (exact quantiles) would
otherwise parse the CSV a dozen times.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import numpy as np

from node.profiling import read_table
from node.running import RunningJobs, Stopped
from scifed.errors import UserError
from scifed.filters import quote_identifier

if TYPE_CHECKING:  # DuckDB imports pandas when a frame is asked for (~45 MB a node
    import pandas as pd  # that never builds one does without)

_NUMERIC_TYPES = {
    "tinyint", "smallint", "integer", "bigint", "hugeint", "utinyint", "usmallint",
    "uinteger", "ubigint", "uhugeint", "float", "double", "decimal",
}
_FLOAT_TYPES = {"float", "double"}


# Files kept parsed in memory, by their size on disk: least recently used dropped past this.
CACHE_FILE_BYTES = 512 * 1024 * 1024
_TABLE = "rows"


class _Loaded:
    """Parsed files, each in its own in-memory DuckDB database as table ``rows`` (types
    exactly as the strict reader gives them, rows in file order). A file is loaded once
    per version; concurrent first reads of one file wait for one load."""

    def __init__(self, budget: int = CACHE_FILE_BYTES) -> None:
        self.budget = budget
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple, tuple[duckdb.DuckDBPyConnection, int]] = \
            OrderedDict()
        self._loading: dict[tuple, threading.Lock] = {}

    def cursor(self, path: Path, source: str, version: str) -> tuple[
            duckdb.DuckDBPyConnection, str]:
        """(a new connection that reads the file, the table expression to read it by)."""
        st = path.stat()
        if st.st_size > self.budget:  # too large to keep: read from the file each time
            return duckdb.connect(), source
        key = (str(path.absolute()), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns,
               version)
        with self._lock:
            found = self._entries.get(key)
            if found is not None:
                self._entries.move_to_end(key)
                return found[0].cursor(), _TABLE
            loading = self._loading.setdefault(key, threading.Lock())
        with loading:
            with self._lock:
                found = self._entries.get(key)
            if found is None:
                db = duckdb.connect()
                try:
                    db.execute(f"CREATE TABLE {_TABLE} AS SELECT * FROM {source}")
                except BaseException:
                    db.close()
                    with self._lock:
                        self._loading.pop(key, None)
                    raise
                found = (db, st.st_size)
                with self._lock:
                    self._entries[key] = found
                    self._loading.pop(key, None)
                    self._evict()
        return found[0].cursor(), _TABLE

    def _evict(self) -> None:
        """Drop the least recently used files past the budget (readers that hold a
        cursor keep their database until they close)."""
        total = sum(size for _, size in self._entries.values())
        while total > self.budget and len(self._entries) > 1:
            _, (_, size) = self._entries.popitem(last=False)
            total -= size

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


_LOADED = _Loaded()


class DataFile:
    """One dataset file opened read-only, its rows narrowed by ``filter_sql`` (SQL and
    parameters from :func:`scifed.filters.compile_filter`). Implements
    :class:`jobs.base.Table`. Use as a context manager."""

    def __init__(self, path: Path, filter_sql: tuple[str, list] | None = None,
                 name: str | None = None,
                 job: tuple[RunningJobs, str] | None = None, version: str = "") -> None:
        """``job``: the node's running jobs and the id of the job this read serves, so
        that the job's end interrupts it (node/running.py). ``version``: the sha256 the
        dataset was registered with, part of the key of the parsed copy."""
        self.path = Path(path)
        self.name = name or self.path.name
        self.source = read_table(self.path)
        self.where, self.where_params = filter_sql or ("TRUE", [])
        self.con: duckdb.DuckDBPyConnection | None = None
        self._job = job
        self._stopped: str | None = None
        try:
            if job is not None:
                job[0].opened(job[1], self)
            try:
                self.con, self.source = _LOADED.cursor(self.path, self.source, version)
            except OSError as exc:
                raise UserError(f"{self.name}: cannot read ({exc.strerror})") from None
            if self._stopped is not None:
                raise Stopped(f"{self.name}: stopped: {self._stopped}")
            relation = self.con.sql(f"SELECT * FROM {self.source} LIMIT 0")
            self.types = dict(zip(relation.columns, relation.types, strict=True))
        except duckdb.Error as exc:
            self.close()
            raise self._error(exc) from None
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> DataFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._job is not None:
            self._job[0].closed(self._job[1], self)
        if self.con is not None:
            self.con.close()

    def interrupt(self, why: str) -> None:
        """Stop the running query (from another thread) and refuse every later one."""
        self._stopped = why
        if self.con is not None:
            self.con.interrupt()

    # -- columns -----------------------------------------------------------------------
    @property
    def columns(self) -> list[str]:
        return list(self.types)

    def require(self, names: Iterable[str], field: str, *, numeric: bool) -> None:
        """Refuse unknown columns, and non-numeric ones where a number is needed."""
        for name in names:
            if name not in self.types:
                raise UserError(f"{field}: unknown column {name!r} (columns: "
                                f"{', '.join(self.types)})")
            if numeric and not self.is_numeric(name):
                raise UserError(f"{field}: column {name!r} has type "
                                f"{self.types[name]}, not a numeric type")

    def is_numeric(self, name: str) -> bool:
        return self.types[name].id in _NUMERIC_TYPES

    def is_float(self, name: str) -> bool:
        return self.types[name].id in _FLOAT_TYPES

    def number(self, name: str) -> str:
        """The column as DOUBLE, NaN read as missing (as pandas does)."""
        return f"nullif(CAST({quote_identifier(name)} AS DOUBLE), 'NaN'::DOUBLE)"

    def category(self, name: str) -> str:
        """The column as text labels, NaN read as missing."""
        col = quote_identifier(name)
        if self.is_float(name):
            return f"CASE WHEN isnan({col}) THEN NULL ELSE CAST({col} AS VARCHAR) END"
        if str(self.types.get(name)) == "BOOLEAN":
            # DuckDB may push a plain cast into the CSV reader and give the file's text
            # ('yes') in one query and 'true' in another: the released labels and the
            # query auditor's row sets must read the same label
            return f"CASE WHEN {col} THEN 'true' WHEN NOT {col} THEN 'false' END"
        return f"CAST({col} AS VARCHAR)"

    # -- reads -------------------------------------------------------------------------
    def query(self, exprs: list[str], select: str, params: Sequence = ()) -> list[tuple]:
        """Run ``select`` over CTE ``d`` holding ``exprs`` as ``c0, c1, ...`` of the
        filtered rows. Filter parameters come first: the CTE precedes ``select``."""
        cols = ", ".join(f"{e} AS c{i}" for i, e in enumerate(exprs)) or "NULL AS c0"
        sql = f"WITH d AS (SELECT {cols} FROM {self.source} WHERE {self.where}) {select}"
        return self._fetch(sql, [*self.where_params, *params], "fetchall")

    def sorted_numbers(self, name: str) -> np.ndarray:
        """The filtered non-missing values of numeric column ``name`` (as :meth:`number`
        reads them), sorted, for order statistics: counts at a thousand thresholds are
        then one ``searchsorted``, ~7x quicker than a window query over values and
        thresholds together (measured on 33k rows, 1,000 thresholds: 2.8 ms vs 19 ms)."""
        self.require([name], "stats.quantiles", numeric=True)
        sql = (f"SELECT {self.number(name)} AS v FROM {self.source} WHERE ({self.where}) "
               f"AND {self.number(name)} IS NOT NULL")
        values = np.asarray(self._fetch(sql, self.where_params, "fetchnumpy")["v"],
                            dtype=np.float64)
        return np.sort(values)

    def arrays(self, columns: list[str],
               conditions: Sequence[tuple[str, list]] = ()) -> dict[str, np.ndarray]:
        """The filtered rows where every listed column is present; with each condition
        (SQL and parameters, from :func:`scifed.filters.compile_filter`) as a boolean
        array under the key ``?0``, ``?1``, …, which no column is called here."""
        self.require(columns, "columns", numeric=False)
        present = " AND ".join(f"{quote_identifier(c)} IS NOT NULL" for c in columns)
        cols = ", ".join([*(quote_identifier(c) for c in columns),
                          *(f"coalesce(({c}), false) AS \"?{i}\""
                            for i, (c, _) in enumerate(conditions))])
        sql = f"SELECT {cols} FROM {self.source} WHERE ({self.where}) AND {present}"
        params = [p for _, ps in conditions for p in ps]
        data = self._fetch(sql, [*params, *self.where_params], "fetchnumpy")
        out = {c: np.asarray(data[c]) for c in columns}
        out.update({f"?{i}": np.asarray(data[f"?{i}"], dtype=bool)
                    for i in range(len(conditions))})
        return out

    def frame(self) -> pd.DataFrame:
        """The whole file (no filter) as pandas."""
        return self._fetch(f"SELECT * FROM {self.source}", [], "df")

    def masks(self, conditions: list[tuple[str, list]]) -> np.ndarray:
        """Rows × conditions, in file order: which rows the filter selects and each
        condition (SQL over the file's columns, with its parameters) holds for. The
        query auditor refines its atoms with them."""
        self.con.execute("SET preserve_insertion_order = true")
        if not conditions:
            conditions = [("TRUE", [])]
        cols = ", ".join(f"coalesce(({self.where}) AND ({c}), false) AS m{i}"
                         for i, (c, _) in enumerate(conditions))
        params = [p for _, ps in conditions for p in [*self.where_params, *ps]]
        data = self._fetch(f"SELECT {cols} FROM {self.source}", params, "fetchnumpy")
        return np.column_stack([np.asarray(data[f"m{i}"], dtype=bool)
                                for i in range(len(conditions))])

    def _fetch(self, sql: str, params: Sequence, how: str):
        """Run and fetch (``how``: a DuckDB fetch method) as one interruptible step."""
        if self._stopped is not None:
            raise Stopped(f"{self.name}: stopped: {self._stopped}")
        try:
            return getattr(self.con.execute(sql, list(params)), how)()
        except duckdb.Error as exc:
            if self._stopped is not None:
                raise Stopped(f"{self.name}: stopped: {self._stopped}") from None
            raise self._error(exc) from None

    def _error(self, exc: duckdb.Error) -> UserError:
        return UserError(f"{self.name}: {str(exc).splitlines()[0]}")
