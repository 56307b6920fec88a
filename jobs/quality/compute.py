"""The ``quality`` job: pooled scorecard metrics of a federated group (governance §3.4).

As in ``stats``, every node fills one float64 vector whose layout is a pure function of
the job spec and the agreed vocabulary; the coordinator adds the encrypted vectors and the
release node decodes only the sum into pooled completeness (Q1a, Q1c), duplicate rate
(Q3b), class balance (Q5a–c), cross-node schema compatibility (Q4c) and label shift
across nodes (Q4d), with the statuses of the scorecard's thresholds.

Vocabulary: the union over nodes of each node's :func:`vocabulary` (every key a sorted
list). ``nodes`` (contributing node names; a node's position is its index) and
``schema_hashes`` are also known to the coordinator from the catalog; ``columns``,
``numeric``, ``target`` and ``labels`` (the target's declared classes and observed
values, as text) come from the nodes.

Vector layout (offsets in :class:`QualityLayout`), blocks in this order:

* header: ``rows, rows_flag, duplicates``
* one missing-value count per vocabulary column (a column a shard lacks is missing in all
  of its rows); then ``target_missing`` when there is a target
* per numeric column: ``n, Σx, Σx², flag``
* one slot per schema hash: a node puts 1 at its own, so the sum counts nodes per hash
* one slot per node: a node puts 1 at its own position (who contributed)
* with a categorical target, a (nodes × labels) block in which a node fills only its
  own row with its class counts, then one suppression flag per node

Disclosure. Label shift compares each node's class distribution with the pooled one,
which a plain sum cannot give, so the per-node rows reveal each node's class counts to
the release node — only there; the researcher receives one JS distance per node. Each
node suppresses the cells of its row with 0 < count < k, and a second cell when only one
is suppressed (``jobs.stats.compute.suppress_table``). Pooled class counts are the column sums of
those rows, never a separate unsuppressed sum that would give a suppressed cell back by
differencing; at release, pooled cells with 0 < count < k are withheld, and so are the
balance values computed from them (their statuses are released). A node with
0 < rows < k sends only its flag, its position and its schema hash. Moments are withheld
under k values or where one value exceeds 85 % of a non-negative sum, as in ``stats``.
Missing-value and duplicate counts are released as they are, like the catalog profile's
missingness.

What sums cannot give: duplicates across nodes (the pooled rate counts duplicates within
nodes, a lower bound), Q3b's low-cardinality rule, Q6 (quantiles), Q9 (training), and the
vocabulary Jaccard of Q4c beyond the declared enums inside ``schema_hash``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from jobs.base import Table
from jobs.quality.spec import QualitySpec
from jobs.stats.compute import DOMINANCE, pooled_count, sample_variance, suppress_table
from scifed.errors import UserError
from scifed.record import NUMERIC_TYPES as _NUMERIC
from scifed.record import CatalogRecord
from scifed.scorecard import (
    BANDS,
    METRICS,
    MetricResult,
    checked,
    labels_of,
    mask_missing_codes,
    measured,
    not_applicable,
    target_task,
)

VOCABULARY_KEYS = ("nodes", "schema_hashes", "columns", "numeric", "target", "labels")
_MOMENT_BLOCK = 4
_N, _SUM, _SUMSQ, _FLAG = range(_MOMENT_BLOCK)

Count = Callable[[int, str], int]  # a checked pooled count at an offset of the aggregate


@dataclass(frozen=True)
class QualityLayout:
    """Where each block sits in the vector; built only from (spec, vocabulary)."""

    columns: list[str]
    target: str | None
    labels: list[str]
    node_names: list[str]
    schema_hashes: list[str]
    missing: slice
    target_missing: int | None
    moments: dict[str, slice]
    schemas: slice
    nodes: slice
    classes: slice | None
    class_flags: slice | None
    size: int

    ROWS = 0
    ROWS_FLAG = 1
    DUPLICATES = 2

    @classmethod
    def build(cls, spec: QualitySpec, vocab: dict[str, list[str]]) -> QualityLayout:
        absent = [key for key in VOCABULARY_KEYS if key not in vocab]
        if absent:
            raise ValueError(f"the vocabulary lacks {', '.join(absent)}")
        targets = vocab["target"]
        if len(targets) > 1:
            raise UserError(f"the nodes' records name different targets ({', '.join(targets)}); "
                            "choose one with quality.target")
        target = targets[0] if targets else None
        if spec.target is not None and target != spec.target:
            raise ValueError(f"the vocabulary's target is {target!r}, the spec's "
                             f"{spec.target!r}")
        labels = list(vocab["labels"]) if target is not None else []
        nodes, columns = list(vocab["nodes"]), list(vocab["columns"])
        if spec.columns and sorted(spec.columns) != columns:
            raise ValueError(f"the vocabulary's columns {columns} are not the spec's")
        offset = 3

        def take(n: int) -> slice:
            nonlocal offset
            offset += n
            return slice(offset - n, offset)

        missing = take(len(columns))
        target_missing = take(1).start if target is not None else None
        moments = {c: take(_MOMENT_BLOCK) for c in vocab["numeric"]}
        schemas = take(len(vocab["schema_hashes"]))
        node_slots = take(len(nodes))
        classes = take(len(nodes) * len(labels)) if labels else None
        class_flags = take(len(nodes)) if labels else None
        return cls(columns, target, labels, nodes, list(vocab["schema_hashes"]), missing,
                   target_missing, moments, schemas, node_slots, classes, class_flags, offset)


def _target(spec: QualitySpec, record: CatalogRecord) -> str | None:
    """The spec's target, else the record's first; it must be a column of the record."""
    target = spec.target or (record.targets[0] if record.targets else None)
    if target is not None and target not in {f.name for f in record.fields}:
        raise UserError(f"quality.target: unknown column {target!r} in {record.id}")
    return target


def _columns(spec: QualitySpec, record: CatalogRecord) -> list[str]:
    names = [f.name for f in record.fields]
    unknown = [c for c in spec.columns if c not in names]
    if unknown:
        raise UserError(f"quality.columns: unknown column(s) {', '.join(map(repr, unknown))} "
                        f"in {record.id} (columns: {', '.join(names)})")
    return list(spec.columns) or names


def vocabulary(data: Table, record: CatalogRecord, spec: QualitySpec) -> dict[str, list[str]]:
    """This node's part of the vocabulary; the union over nodes fixes the layout."""
    frame = mask_missing_codes(data.frame(), record)
    fields = {f.name: f for f in record.fields}
    columns = _columns(spec, record)
    target = _target(spec, record)
    labels: set[str] = set()
    if target is not None and target_task(fields[target], frame[target]) == "classification":
        labels = set(labels_of(frame[target]))
        constraints = fields[target].constraints
        if constraints is not None and constraints.enum:
            labels |= {str(v) for v in constraints.enum}
    return {
        "nodes": [record.node_id],
        "schema_hashes": [record.schema_hash],
        "columns": sorted(columns),
        "numeric": sorted(c for c in columns
                          if fields[c].type in _NUMERIC and fields[c].role != "id"),
        "target": [target] if target is not None else [],
        "labels": sorted(labels),
    }


def compute(data: Table, record: CatalogRecord, spec: QualitySpec,
            vocab: dict[str, list[str]], *, k: int) -> np.ndarray:
    """This node's contribution in :class:`QualityLayout` order, with local disclosure
    control (``k`` from the node's policy; k ≤ 1 means none)."""
    layout = QualityLayout.build(spec, vocab)
    _columns(spec, record)
    if _target(spec, record) != layout.target:
        raise UserError(f"quality.target: {record.id} names {_target(spec, record)!r}, the "
                        f"job {layout.target!r}")
    if record.node_id not in layout.node_names:
        raise ValueError(f"node {record.node_id!r} is not among the job's nodes")
    if record.schema_hash not in layout.schema_hashes:
        raise ValueError(f"schema hash of {record.id} is not in the job's vocabulary")
    frame = mask_missing_codes(data.frame(), record)
    position = layout.node_names.index(record.node_id)
    vec = np.zeros(layout.size, dtype=np.float64)
    vec[layout.nodes.start + position] = 1.0
    vec[layout.schemas.start + layout.schema_hashes.index(record.schema_hash)] = 1.0
    rows = len(frame)
    if 0 < rows < k:
        vec[QualityLayout.ROWS_FLAG] = 1.0
        return vec

    vec[QualityLayout.ROWS] = rows
    vec[QualityLayout.DUPLICATES] = int(frame.duplicated().sum())
    vec[layout.missing] = [int(frame[c].isna().sum()) if c in frame else rows
                           for c in layout.columns]
    types = {f.name: f.type for f in record.fields}
    for column, sl in layout.moments.items():
        if column in frame and types.get(column) in _NUMERIC:
            vec[sl] = _moments(frame[column], k)
    if layout.target is not None:
        vec[layout.target_missing] = int(frame[layout.target].isna().sum())
    if layout.classes is not None and layout.class_flags is not None:
        found = labels_of(frame[layout.target]).value_counts()
        unknown = set(found.index) - set(layout.labels)
        if unknown:
            raise UserError(f"quality.target: {len(unknown)} value(s) of {layout.target!r} lie "
                            "outside the agreed vocabulary; the data changed during the job")
        cells = np.array([found.get(label, 0) for label in layout.labels], dtype=np.float64)
        hidden = suppress_table(cells, k)
        cells[hidden] = 0.0
        width = len(layout.labels)
        start = layout.classes.start + position * width
        vec[start : start + width] = cells
        vec[layout.class_flags.start + position] = float(hidden.any())
    return vec


def _moments(column: pd.Series, k: int) -> list[float]:
    """n, Σx, Σx², flag — withheld (flag 1) under k values or when one value dominates."""
    x = column.dropna().astype(float).to_numpy()
    n, total = len(x), float(x.sum())
    if 0 < n < k or (k > 1 and n and x.min() >= 0 and x.max() > DOMINANCE * total):
        return [0.0, 0.0, 0.0, 1.0]
    return [float(n), total, float((x * x).sum()), 0.0]


def js_distance(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen–Shannon distance in bits (0 for equal distributions, at most 1)."""
    p, q = p / p.sum(), q / q.sum()
    m = (p + q) / 2

    def kl(a: np.ndarray) -> float:
        present = a > 0
        return float((a[present] * np.log2(a[present] / m[present])).sum())

    return float(np.sqrt(max((kl(p) + kl(q)) / 2, 0.0)))


def decode(total: np.ndarray, spec: QualitySpec, vocab: dict[str, list[str]], *,
           k: int) -> dict:
    """The released result (JSON-able) from the sum of all nodes' vectors; ValueError on a
    corrupted aggregate."""
    layout = QualityLayout.build(spec, vocab)
    total = np.asarray(total, dtype=np.float64)
    if total.shape != (layout.size,):
        raise ValueError(f"the aggregate has shape {total.shape}; this job's layout needs "
                         f"({layout.size},)")

    def count(i: int, what: str) -> int:
        return pooled_count(total[i], what)

    present = [count(layout.nodes.start + i, f"the presence of node {name}")
               for i, name in enumerate(layout.node_names)]
    if any(p > 1 for p in present):
        raise ValueError("corrupted aggregate: a node contributed twice")
    nodes = [name for name, p in zip(layout.node_names, present, strict=True) if p]
    rows = count(QualityLayout.ROWS, "rows")
    small = count(QualityLayout.ROWS_FLAG, "the small-node flag")
    missing = {c: count(layout.missing.start + i, f"missing values of {c}")
               for i, c in enumerate(layout.columns)}
    metrics: dict[str, MetricResult] = {}
    suppression: dict = {"k": k, "small_nodes": small, "class_rows": [], "classes": [],
                         "moments": []}
    if rows:
        cells = rows * len(layout.columns)
        metrics["Q1a"] = measured("Q1a", 1 - sum(missing.values()) / cells if cells else 0.0,
                                  f"{sum(missing.values())} missing of {cells} cells over "
                                  f"{len(nodes)} nodes")
        duplicates = count(QualityLayout.DUPLICATES, "duplicates")
        metrics["Q3b"] = measured("Q3b", duplicates / rows, f"{duplicates} rows repeat another "
                                  "row of the same node; duplicates across nodes are not seen")
    else:
        metrics["Q1a"] = not_applicable("Q1a", "no rows released")
        metrics["Q3b"] = not_applicable("Q3b", "no rows released")
    if layout.target is None:
        metrics["Q1c"] = not_applicable("Q1c", "no target declared")
    elif rows:
        target_missing = count(layout.target_missing, "missing target values")
        metrics["Q1c"] = measured("Q1c", 1 - target_missing / rows,
                                  f"target {layout.target}: {target_missing} missing of {rows}")
    else:
        metrics["Q1c"] = not_applicable("Q1c", "no rows released")

    hashes = {h: count(layout.schemas.start + i, "a schema count")
              for i, h in enumerate(layout.schema_hashes)}
    used = {h: c for h, c in hashes.items() if c}
    metrics["Q4c"] = checked("Q4c", len(used) == 1, (
        f"all {sum(used.values())} nodes share schema_hash {next(iter(used))[:12]}…"
        if len(used) == 1 else f"{len(used)} different schema_hash values: " + ", ".join(
            f"{h[:12]}… ({c} node(s))" for h, c in used.items())))

    out: dict = {"nodes": nodes, "rows": rows, "target": layout.target,
                 "completeness": {c: (1 - m / rows if rows else None)
                                  for c, m in missing.items()},
                 "schemas": used}
    if layout.classes is not None and layout.class_flags is not None:
        out["classes"], out["label_shift"] = _classes(
            layout, layout.classes, layout.class_flags, k, count, metrics, suppression)
    else:
        reason = ("no target declared" if layout.target is None else
                  f"target {layout.target} is not categorical")
        for metric in ("Q5a", "Q5b", "Q5c", "Q4d"):
            metrics[metric] = not_applicable(metric, reason)
    out["moments"] = _pooled_moments(total, layout, k, count, suppression)
    out["metrics"] = {m: metrics[m].model_dump() for m in METRICS if m in metrics}
    out["suppression"] = suppression
    return out


def _classes(layout: QualityLayout, classes: slice, flags: slice, k: int, count: Count,
             metrics: dict[str, MetricResult], suppression: dict) -> tuple[dict, dict]:
    """Pooled class counts with balance metrics (Q5a–c), and label shift per node (Q4d)."""
    width = len(layout.labels)
    matrix = np.array([count(classes.start + i, "a class count")
                       for i in range(len(layout.node_names) * width)],
                      dtype=np.int64).reshape(len(layout.node_names), width)
    for i, name in enumerate(layout.node_names):
        if count(flags.start + i, f"the class flag of {name}"):
            suppression["class_rows"].append(name)
    pooled = matrix.sum(axis=0)
    hidden = suppress_table(pooled, k)
    suppression["classes"] = [label for label, h in zip(layout.labels, hidden, strict=True)
                              if h]
    seen = pooled[pooled > 0]
    withheld = bool(hidden.any())
    if seen.size:
        p = seen / seen.sum()
        kinds = len(seen)
        entropy = float(-(p * np.log(p)).sum() / np.log(kinds)) if kinds > 1 else 0.0
        values = {"Q5a": entropy, "Q5b": float(seen.max() / seen.min()),
                  "Q5c": float(seen.min())}
        for metric, value in values.items():
            result = measured(metric, value, f"{kinds} classes pooled over "
                              f"{int((matrix.sum(axis=1) > 0).sum())} nodes")
            if withheld:
                result = result.amended(value=None, detail=result.detail + "; value "
                                        "withheld: a pooled class count is under "
                                        f"k={k} (the status is released)")
            metrics[metric] = result
    else:
        for metric in ("Q5a", "Q5b", "Q5c"):
            metrics[metric] = not_applicable(metric, "no class counts released")

    distances: dict[str, float | None] = {}
    for i, name in enumerate(layout.node_names):
        row = matrix[i]
        distances[name] = js_distance(row.astype(float), pooled.astype(float)) \
            if row.sum() and pooled.sum() else None
    known = {n: d for n, d in distances.items() if d is not None}
    if known:
        worst = max(known, key=lambda n: known[n])
        metrics["Q4d"] = measured("Q4d", known[worst], f"largest at {worst}; Jensen–Shannon "
                                  "distance (base 2) of each node's labels to the pooled ones"
                                  + ("; non-IID (informational)" if known[worst] >
                                     BANDS["Q4d"].good else ""))
    else:
        metrics["Q4d"] = not_applicable("Q4d", "no node released class counts")
    released = {"labels": list(layout.labels),
                "counts": [None if h else int(c) for c, h in zip(pooled, hidden, strict=True)],
                "suppressed": hidden.tolist()}
    return released, {"max": max(known.values()) if known else None, "per_node": distances}


def _pooled_moments(total: np.ndarray, layout: QualityLayout, k: int, count: Count,
                    suppression: dict) -> dict:
    out = {}
    for column, sl in layout.moments.items():
        block = total[sl]
        if count(sl.start + _FLAG, f"the moment flag of {column}"):
            suppression["moments"].append(column)
        n = count(sl.start + _N, f"the count of {column}")
        if 0 < n < k:
            out[column] = {"n": n, "mean": None, "std": None}
            continue
        s1, s2 = float(block[_SUM]), float(block[_SUMSQ])
        variance = sample_variance(n, s1, s2)
        out[column] = {"n": n, "mean": s1 / n if n else None,
                       "std": None if variance is None else float(np.sqrt(variance))}
    return out
