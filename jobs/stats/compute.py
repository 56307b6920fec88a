"""The ``stats`` job: a node's sufficient statistics as one vector, and the release decode.

Every node fills a float64 vector with the same layout, so the coordinator can add the
nodes' encrypted vectors without learning anything; the release node decrypts only the
sum and turns it into tables. The layout is a pure function of the job spec and the
agreed category vocabulary, never of a node's data.

Disclosure control runs twice. Each node applies it to its own contribution (so no
node's small cells reach even the release node, and differencing two jobs over different
node sets cannot recover them), and the release node applies it to the pooled numbers.
A table (a histogram or one group's categories) suppresses every cell with
0 < count < k, and when exactly one cell is suppressed also the smallest other non-zero
cell, because the table's total (non-missing count) is released and would give the lone
cell back by subtraction. Moments of a column with 0 < n < k are withheld, and a node
withholds the moments of a non-negative column where one record exceeds 85 % of the sum
(governance §2.5 dominance rule). Row counts and missing-value counts are released as
they are (the catalog profile publishes missingness already), except that a node with
0 < rows < k contributes nothing but a flag.

Vector layout (offsets in :class:`Layout`), blocks in this order:

* header: ``rows, rows_flag``
* per ``columns`` entry: ``n, missing, Σx, Σx², k_flag, dominance_flag``
* per histogram: one count per bin, ``below, above, missing, flag``
* per group column: one count per vocabulary value, ``missing, flag`` (under DP the
  vocabulary is the declared enumeration, and ``missing`` also counts the rows whose
  value the enumeration does not declare)
* per correlation pair (i ≤ j, the diagonal gives each column's own n):
  ``n, Σx_i, Σx_j, Σx_i², Σx_j², Σx_i·x_j, flag``
* per quantile column: ``n`` (non-missing values, never suppressed: the exact quantile
  search counts the same values and must agree with it)

Flags are 1 where this node suppressed something in the block, so the summed flag is the
number of nodes that did.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from jobs.base import Table, clipped
from jobs.stats import labels
from jobs.stats.spec import StatsSpec
from scifed.errors import UserError

DOMINANCE = 0.85
COUNT_TOLERANCE = 0.01  # pooled counts decode exactly (fixed point); more means corruption

_MAGNITUDES = {"sum", "mean", "variance", "std"}

# offsets inside a column block and a pair block
_N, _MISSING, _SUM, _SUMSQ, _KFLAG, _DOMFLAG = range(6)
_PN, _PSX, _PSY, _PSXX, _PSYY, _PSXY, _PFLAG = range(7)
_COLUMN_BLOCK, _PAIR_BLOCK = 6, 7


@dataclass(frozen=True)
class Layout:
    """Where each block sits in the vector; built only from (spec, vocabulary)."""

    columns: dict[str, slice]
    histograms: dict[str, slice]
    groups: dict[str, slice]
    pairs: dict[tuple[str, str], slice]
    quantile_n: dict[str, int]
    size: int

    ROWS = 0
    ROWS_FLAG = 1

    @classmethod
    def build(cls, spec: StatsSpec, vocab: dict[str, list[str]]) -> Layout:
        offset = 2
        missing = [c for c in spec.group_counts if c not in vocab]
        if missing:
            raise ValueError(f"the vocabulary lacks group column(s) {', '.join(missing)}")

        def take(n: int) -> slice:
            nonlocal offset
            offset += n
            return slice(offset - n, offset)

        columns = {c: take(_COLUMN_BLOCK) for c in spec.columns}
        histograms = {c: take(len(e) + 3) for c, e in spec.histograms.items()}
        groups = {c: take(len(vocab[c]) + 2) for c in spec.group_counts}
        pairs = {p: take(_PAIR_BLOCK) for p in _pairs(spec.correlation)}
        quantile_n = {c: take(1).start for c in spec.quantiles}
        return cls(columns, histograms, groups, pairs, quantile_n, offset)

    def count_positions(self) -> list:
        """Vector positions that hold counts (rows, n, missing, cells, pair n)."""
        out: list = [self.ROWS]
        for sl in self.columns.values():
            out += [sl.start, sl.start + 1]
        out += [slice(sl.start, sl.stop - 1) for sl in self.histograms.values()]
        out += [slice(sl.start, sl.stop - 1) for sl in self.groups.values()]
        out += [sl.start for sl in self.pairs.values()]
        return out


def _pairs(columns: list[str]) -> list[tuple[str, str]]:
    return [(a, b) for i, a in enumerate(columns) for b in columns[i:]]


def vocabulary(data: Table, spec: StatsSpec) -> dict[str, list[str]]:
    """Each group column's sorted distinct non-null values (as text) among filtered rows.

    The union over nodes fixes the group blocks of the layout, so every node reports
    counts for the same categories in the same order.
    """
    if not spec.group_counts:
        return {}
    data.require(spec.group_counts, "stats.group_counts", numeric=False)
    counts = _group_counts(data, spec.group_counts)
    return {c: sorted(v for v in counts[c] if v is not None) for c in spec.group_counts}


def _group_counts(data: Table, columns: list[str]) -> dict[str, dict[str | None, int]]:
    """Counts per value of every group column in one pass (GROUPING SETS)."""
    m = len(columns)
    names = [f"c{i}" for i in range(m)]
    select = (f"SELECT GROUPING({', '.join(names)}), {', '.join(names)}, count(*) FROM d "
              f"GROUP BY GROUPING SETS ({', '.join(f'({n})' for n in names)})")
    rows = data.query([data.category(c) for c in columns], select)
    full = (1 << m) - 1
    index = {full ^ (1 << (m - 1 - i)): i for i in range(m)}  # GROUPING bit 1 = rolled up
    out: dict[str, dict[str | None, int]] = {c: {} for c in columns}
    for row in rows:
        i = index[row[0]]
        out[columns[i]][row[1 + i]] = row[-1]
    return out


Public = Callable[[str, str], str]  # how a node writes (column, label) into the vocabulary


def local_labels(vocab: dict[str, list[str]], held: dict[str, Iterable[str | None]],
                 public: Public) -> dict[str, list[str | None]]:
    """For each vocabulary entry of each group column, the label this node holds behind
    it: a declared label is itself, a tag (jobs/stats/labels.py) is the node's own label
    whose tag it is, or None where this node holds no such label. ``held``: the labels
    this node holds per column."""
    local: dict[str, list[str | None]] = {}
    for col, entries in vocab.items():
        behind = {public(col, label): label for label in held.get(col, ()) if label is not None}
        # a label declared at another node and not here is counted under its tag only
        local[col] = [behind.get(v) if labels.is_tag(v) else v if public(col, v) == v
                      else None for v in entries]
    return local


def compute(data: Table, spec: StatsSpec, vocab: dict[str, list[str]], *, k: int,
            clip: dict[str, tuple[float, float]] | None = None,
            public: Public | None = None) -> np.ndarray:
    """This node's contribution: one float64 vector in :class:`Layout` order.

    Without ``clip``, local disclosure control is applied (``k`` from the node's policy;
    k ≤ 1 means none). With ``clip`` (differential privacy), moments and cross-products
    are summed over values clipped to the bounds, and the k-rules are left to the
    release, on noisy counts: a data-dependent suppression before the noise would break
    the noise's calibration. For the same reason a value of a group column outside the
    vocabulary (the declared enumeration, under DP) is counted with the missing values
    rather than refused: a refusal would say that this node holds an undeclared label.
    ``public``: how this node wrote its labels into the vocabulary, to find the label
    behind each entry (:func:`local_labels`; None: the entries are the labels)."""
    layout = Layout.build(spec, vocab)
    numeric = list(dict.fromkeys([*spec.columns, *spec.histograms, *spec.correlation,
                                  *spec.quantiles]))
    data.require(spec.columns, "stats.columns", numeric=True)
    data.require(spec.histograms, "stats.histograms", numeric=True)
    data.require(spec.correlation, "stats.correlation", numeric=True)
    data.require(spec.quantiles, "stats.quantiles", numeric=True)
    data.require(spec.group_counts, "stats.group_counts", numeric=False)
    alias = {c: f"c{i}" for i, c in enumerate(numeric)}
    exprs = [data.number(c) for c in numeric]
    moments = dict(alias)
    for col, (lo, hi) in (clip or {}).items():
        moments[col] = f"c{len(exprs)}"
        exprs.append(clipped(data.number(col), lo, hi))
    aggs, params = _aggregates(spec, alias, moments)
    row = data.query(exprs, f"SELECT {', '.join(aggs)} FROM d", params)[0]
    groups = _group_counts(data, spec.group_counts) if spec.group_counts else {}
    local = local_labels(vocab, groups, public) if public else None

    vec = np.zeros(layout.size, dtype=np.float64)
    values = iter(0.0 if v is None else float(v) for v in row)
    vec[Layout.ROWS] = next(values)
    extremes: dict[str, tuple[float, float]] = {}
    for col, sl in layout.columns.items():
        vec[sl.start : sl.start + 4] = [next(values) for _ in range(4)]
        extremes[col] = (next(values), next(values))
    for sl in layout.histograms.values():
        vec[sl.start : sl.stop - 1] = [next(values) for _ in range(sl.stop - 1 - sl.start)]
    for sl in layout.pairs.values():
        vec[sl.start : sl.start + 6] = [next(values) for _ in range(6)]
    for start in layout.quantile_n.values():
        vec[start] = next(values)
    for col, sl in layout.groups.items():
        found = groups[col]
        mine = (local or vocab)[col]
        unknown = set(found) - set(mine) - {None}
        if unknown and clip is None:  # the vocabulary came from this data: it changed
            raise UserError(f"stats.group_counts: column {col!r} has {len(unknown)} value(s) "
                            "outside the agreed vocabulary; the data changed during the job")
        missing = found.get(None, 0) + sum(found[v] for v in unknown)
        vec[sl.start : sl.stop - 1] = [*(found.get(v, 0) if v is not None else 0
                                         for v in mine), missing]

    if clip is None:
        _local_control(vec, layout, spec, extremes, k)
    return vec


def _aggregates(spec: StatsSpec, alias: dict[str, str],
                moments: dict[str, str]) -> tuple[list[str], list]:
    """SELECT-list aggregates in vector order (see the module docstring) and their params.
    ``moments`` names the (possibly clipped) values that sums are taken over."""
    aggs = ["count(*)"]
    params: list[float] = []
    for col in spec.columns:
        v, m = alias[col], moments[col]
        aggs += [f"count({v})", f"count(*) - count({v})", f"fsum({m})", f"fsum({m} * {m})",
                 f"min({v})", f"max({v})"]
    for col, edges in spec.histograms.items():
        v = alias[col]
        for i in range(len(edges) - 1):
            upper = "<=" if i == len(edges) - 2 else "<"  # numpy: the last bin is closed
            aggs.append(f"count(*) FILTER (WHERE {v} >= ? AND {v} {upper} ?)")
            params += [edges[i], edges[i + 1]]
        aggs += [f"count(*) FILTER (WHERE {v} < ?)", f"count(*) FILTER (WHERE {v} > ?)",
                 f"count(*) - count({v})"]
        params += [edges[0], edges[-1]]
    for a, b in _pairs(spec.correlation):
        both = f"FILTER (WHERE {alias[a]} IS NOT NULL AND {alias[b]} IS NOT NULL)"
        x, y = moments[a], moments[b]
        aggs += [f"count(*) {both}", f"fsum({x}) {both}", f"fsum({y}) {both}",
                 f"fsum({x} * {x}) {both}", f"fsum({y} * {y}) {both}",
                 f"fsum({x} * {y}) {both}"]
    aggs += [f"count({alias[c]})" for c in spec.quantiles]
    return aggs, params


def row_sets(data: Table, spec: StatsSpec, vocab: dict[str, list[str]],
             public: Public | None = None) -> list[tuple[str, list]]:
    """Every row set the vector sums over, as conditions within the filter, in layout
    order: the selection, each column's present values, each histogram bin (and below,
    above, missing), each group value (and missing), each pair's complete rows.
    ``public`` as for :func:`compute` (an entry this node does not hold is no row)."""
    local = local_labels(vocab, vocabulary(data, spec), public) if public else None
    sets: list[tuple[str, list]] = [("TRUE", [])]
    present = lambda c: f"{data.number(c)} IS NOT NULL"  # noqa: E731
    sets += [(present(c), []) for c in dict.fromkeys([*spec.columns, *spec.quantiles])]
    for col, edges in spec.histograms.items():
        x = data.number(col)
        for i in range(len(edges) - 1):
            upper = "<=" if i == len(edges) - 2 else "<"
            sets.append((f"{x} >= ? AND {x} {upper} ?", [edges[i], edges[i + 1]]))
        sets += [(f"{x} < ?", [edges[0]]), (f"{x} > ?", [edges[-1]]), (f"{x} IS NULL", [])]
    for col in spec.group_counts:
        label = data.category(col)
        sets += [(f"{label} = ?", [v]) if v is not None else ("FALSE", [])
                 for v in (local or vocab).get(col, [])]
        sets.append((f"{label} IS NULL", []))
    sets += [(f"{present(a)} AND {present(b)}", []) for a, b in _pairs(spec.correlation)
             if a != b]
    return sets


def suppress_table(cells: np.ndarray, k: int) -> np.ndarray:
    """Cells to withhold: every 0 < count < k, and, if that is a single cell, also the
    smallest other non-zero cell (the lowest index on a tie) so the released total
    cannot give the lone cell back."""
    hidden = (cells > 0) & (cells < k)
    if hidden.sum() == 1:
        others = np.flatnonzero((cells > 0) & ~hidden)
        if others.size:
            hidden[others[np.argmin(cells[others])]] = True
    return hidden


def _local_control(vec: np.ndarray, layout: Layout, spec: StatsSpec,
                   extremes: dict[str, tuple[float, float]], k: int) -> None:
    """Apply the node-level rules in place (see the module docstring)."""
    rows = vec[Layout.ROWS]
    if 0 < rows < k:
        keep = {i: vec[i] for i in layout.quantile_n.values()}
        vec[:] = 0.0
        vec[Layout.ROWS_FLAG] = 1.0
        for i, value in keep.items():
            vec[i] = value
        return
    magnitudes = k > 1 and bool(_MAGNITUDES & set(spec.measures))
    for col, sl in layout.columns.items():
        block = vec[sl]
        lo, hi = extremes[col]
        if 0 < block[_N] < k:
            block[[_N, _SUM, _SUMSQ]] = 0.0
            block[_KFLAG] = 1.0
        elif magnitudes and block[_N] > 0 and lo >= 0 and hi > DOMINANCE * block[_SUM]:
            block[[_N, _SUM, _SUMSQ]] = 0.0
            block[_DOMFLAG] = 1.0
    for sl in [*layout.histograms.values(), *layout.groups.values()]:
        cells = vec[sl.start : sl.stop - 2]  # bins, below, above / one count per value
        hidden = suppress_table(cells, k)
        if hidden.any():
            cells[hidden] = 0.0
            vec[sl.stop - 1] = 1.0
    for sl in layout.pairs.values():
        block = vec[sl]
        if 0 < block[_PN] < k:
            block[:] = 0.0
            block[_PFLAG] = 1.0


def decode(total: np.ndarray, spec: StatsSpec, vocab: dict[str, list[str]], *,
           k: int, noisy: bool = False) -> dict:
    """The released result (JSON-able) from the sum of all nodes' vectors, after the
    aggregate-level rules: pooled cells with 0 < count < k are withheld (``None``) with
    secondary suppression, a column with 0 < n < k releases only its count, and fewer
    than k matching rows release nothing. ``noisy``: the nodes added DP noise, so counts
    that dipped below zero read as zero (post-processing). Raises ValueError on a
    corrupted aggregate."""
    layout = Layout.build(spec, vocab)
    total = _checked(total, layout)
    if noisy:
        total = total.copy()
        for block in layout.count_positions():
            total[block] = np.maximum(total[block], 0.0)
    rows = pooled_count(total[Layout.ROWS], "rows")
    report = _Report(k)
    report.local("rows", total[Layout.ROWS_FLAG],
                 "had fewer than k matching rows and contributed nothing")
    if 0 < rows < k:
        report.withheld("rows", "fewer than k rows match: nothing is released")
        return {"rows": None, "suppression": report.as_dict()}
    out: dict = {"rows": rows}
    if spec.columns:
        out["columns"] = {c: _column(c, total[sl], spec, report)
                          for c, sl in layout.columns.items()}
    if spec.histograms:
        out["histograms"] = {c: _histogram(c, total[sl], spec.histograms[c], report)
                             for c, sl in layout.histograms.items()}
    if spec.group_counts:
        out["groups"] = {c: _groups(c, total[sl], vocab[c], report)
                         for c, sl in layout.groups.items()}
    if spec.correlation:
        out["correlation"] = _correlation(spec.correlation, total, layout, report)
    out["suppression"] = report.as_dict()
    return out


def pooled_quantile_n(total: np.ndarray, spec: StatsSpec,
                      vocab: dict[str, list[str]]) -> dict[str, int]:
    """Pooled non-missing counts of the quantile columns, to start the quantile search.

    Not part of :func:`decode`'s result: these counts skip local suppression (the search
    must count the same values), so they stay at the release node.
    """
    layout = Layout.build(spec, vocab)
    total = _checked(total, layout)
    return {c: pooled_count(total[i], f"the count of {c}")
            for c, i in layout.quantile_n.items()}


class _Report:
    """Collects what was suppressed where, for the result's ``suppression`` section."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.nodes: dict[str, int] = {}
        self.release: list[str] = []
        self.notes: list[str] = []

    def local(self, block: str, flag: float, what: str) -> None:
        nodes = pooled_count(flag, f"the suppression flag of {block}")
        if nodes:
            self.nodes[block] = nodes
            self.notes.append(f"{block}: {nodes} node(s) {what}")

    def withheld(self, block: str, what: str) -> None:
        self.release.append(block)
        self.notes.append(f"{block}: {what}")

    def as_dict(self) -> dict:
        return {"k": self.k, "local": self.nodes, "release": self.release,
                "notes": self.notes}


def _column(col: str, block: np.ndarray, spec: StatsSpec, report: _Report) -> dict:
    name = f"columns.{col}"
    report.local(name, block[_KFLAG], "had fewer than k values and withheld them")
    report.local(f"{name}.dominance", block[_DOMFLAG],
                 "withheld values where one record exceeded 85% of the sum")
    n = pooled_count(block[_N], f"the count of {col}")
    out: dict = {"count": n} if "count" in spec.measures else {}
    out["missing"] = pooled_count(block[_MISSING], f"the missing count of {col}")
    hide = 0 < n < report.k
    if hide:
        report.withheld(name, "fewer than k values: only the count is released")
    s1, s2 = float(block[_SUM]), float(block[_SUMSQ])
    variance = None if hide else sample_variance(n, s1, s2)
    values = {"sum": None if hide else s1,
              "mean": None if hide or n == 0 else s1 / n,
              "variance": variance,
              "std": None if variance is None else math.sqrt(variance)}
    out.update((m, values[m]) for m in spec.measures if m != "count")
    return out


def _histogram(col: str, block: np.ndarray, edges: list[float], report: _Report) -> dict:
    name = f"histograms.{col}"
    report.local(name, block[-1], "suppressed small cells; those cells count the others only")
    cells = [pooled_count(x, f"a cell of {name}") for x in block[:-2]]
    shown, hidden = _release_table(name, cells, report)
    bins = len(edges) - 1
    return {"edges": list(edges), "counts": shown[:bins], "below": shown[bins],
            "above": shown[bins + 1], "missing": pooled_count(block[-2], f"missing of {name}"),
            "suppressed": hidden[:bins]}


def _groups(col: str, block: np.ndarray, values: list[str], report: _Report) -> dict:
    name = f"groups.{col}"
    report.local(name, block[-1], "suppressed small cells; those cells count the others only")
    cells = [pooled_count(x, f"a cell of {name}") for x in block[:-2]]
    shown, hidden = _release_table(name, cells, report)
    return {"values": list(values), "counts": shown,
            "missing": pooled_count(block[-2], f"missing of {name}"), "suppressed": hidden}


def _release_table(name: str, cells: list[int],
                   report: _Report) -> tuple[list[int | None], list[bool]]:
    hidden = suppress_table(np.array(cells, dtype=np.int64), report.k).tolist()
    if any(hidden):
        report.withheld(name, f"{sum(hidden)} cell(s) under k (or protecting one) withheld")
    return [None if h else c for c, h in zip(cells, hidden, strict=True)], hidden


def _correlation(columns: list[str], total: np.ndarray, layout: Layout,
                 report: _Report) -> dict:
    index = {c: i for i, c in enumerate(columns)}
    matrix: list[list[float | None]] = [[None] * len(columns) for _ in columns]
    counts: list[list[int | None]] = [[None] * len(columns) for _ in columns]
    for (a, b), sl in layout.pairs.items():
        block = total[sl]
        name = f"correlation.{a},{b}"
        report.local(name, block[_PFLAG], "had fewer than k complete pairs and withheld them")
        n = pooled_count(block[_PN], f"the pair count of {name}")
        r: float | None = None
        if 0 < n < report.k:
            report.withheld(name, "fewer than k complete pairs: withheld")
            shown_n: int | None = None
        else:
            shown_n = n
            r = _pearson(n, *(float(x) for x in block[_PSX:_PFLAG]))
        i, j = index[a], index[b]
        matrix[i][j] = matrix[j][i] = r
        counts[i][j] = counts[j][i] = shown_n
    return {"columns": list(columns), "matrix": matrix, "n": counts}


def sample_variance(n: int, s1: float, s2: float) -> float | None:
    """Sample variance (ddof=1, as pandas). The sums are exact binary fractions, so the
    two-term formula is evaluated exactly and only the sums' own rounding remains."""
    if n < 2:
        return None
    exact = (Fraction(s2) - Fraction(s1) ** 2 / n) / (n - 1)
    return max(float(exact), 0.0)


def _pearson(n: int, sx: float, sy: float, sxx: float, syy: float,
             sxy: float) -> float | None:
    """Pearson's r over complete pairs; None where pandas gives NaN."""
    if n < 2:
        return None
    fx, fy = Fraction(sx), Fraction(sy)
    dx = n * Fraction(sxx) - fx * fx
    dy = n * Fraction(syy) - fy * fy
    if dx <= 0 or dy <= 0:
        return None
    r = float(n * Fraction(sxy) - fx * fy) / (math.sqrt(dx) * math.sqrt(dy))
    return min(1.0, max(-1.0, r))


def _checked(total: np.ndarray, layout: Layout) -> np.ndarray:
    total = np.asarray(total, dtype=np.float64)
    if total.shape != (layout.size,):
        raise ValueError(f"the aggregate has shape {total.shape}; this job's layout needs "
                         f"({layout.size},)")
    return total


def pooled_count(value: float, what: str) -> int:
    """A pooled count as an int; anything but a whole count is corruption."""
    x = float(value)
    count = round(x) if math.isfinite(x) else -1
    if count < 0 or abs(x - count) > COUNT_TOLERANCE:
        raise ValueError(f"corrupted aggregate: {what} is {x!r}, not a count")
    return count
