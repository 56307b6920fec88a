"""The query auditor (governance §2.5): no exact release, together with every earlier one
on the same dataset version, may determine a statistic of fewer than k rows.

Every exact answer is a sum over row sets — the filter, each column's present values,
each histogram bin, each group, each pair — so every released number is a linear
function of those sets. The auditor keeps, per dataset version (sha256), the partition
of the file's rows into *atoms*: rows that every released row set so far either holds
or not, alike. A linear combination of answers (a difference of two, or a tracker of
three) is then a sum over whole atoms. A query is refused if, added to the history, it
would leave an atom of 1 to k−1 rows; otherwise its row sets refine the partition in
the same transaction that releases the answer. This subsumes the pairwise differencing
rule and also stops trackers built from any number of queries, across researchers and
studies (they are assumed to collude). The whole file is always counted as released
(its row count is public).

The refusal says nothing about counts: it names the rule, never how many rows an atom
would hold.

A release that also holds sums of *non-linear* functions of the rows (a GLM's deviance
and log-likelihood: Σ y·log y, Σ log y!, Σ log y, ...) gives several equations per atom
where a linear release gives one per set: differencing two such releases whose atoms
hold k rows each would give, for those k people, as many equations as unknowns. Such
releases are kept in a second partition of their own (``NONLINEAR``), refined only by
them, whose atoms must hold :data:`NONLINEAR_FACTOR`·k rows: a difference of non-linear
sums then always mixes at least that many people, more than the few functions of one
column a release can add.
"""

from __future__ import annotations

import sqlite3
import zlib

import numpy as np

from scifed.errors import UserError
from scifed.wire import now_ms

_MIX = np.uint64(0x9E3779B97F4A7C15)  # golden-ratio multiplier for the label hash
LINEAR, NONLINEAR = "linear", "nonlinear"
NONLINEAR_FACTOR = 3


def _load(con: sqlite3.Connection, dataset_id: str, sha256: str, rows: int) -> np.ndarray:
    r = con.execute("SELECT labels FROM atom_partitions WHERE dataset_id=? AND sha256=?",
                    (dataset_id, sha256)).fetchone()
    if r is None:
        return np.zeros(rows, dtype=np.uint64)
    labels = np.frombuffer(zlib.decompress(r["labels"]), dtype=np.uint64)
    if labels.size != rows:
        raise UserError("the dataset file changed since it was registered; the officer must "
                        "update the dataset before it is queried again")
    return labels


def refine(labels: np.ndarray, sets: np.ndarray) -> np.ndarray:
    """Atom labels after splitting every atom by membership in each column of ``sets``
    (rows × sets, bool). Labels are 64-bit hashes of the membership history."""
    out = labels.copy()
    with np.errstate(over="ignore"):
        for j in range(sets.shape[1]):
            out = out * _MIX + sets[:, j].astype(np.uint64) + np.uint64(1)
    return out


def smallest_atom(labels: np.ndarray) -> int:
    _, counts = np.unique(labels, return_counts=True)
    return int(counts.min()) if counts.size else 0


def audit_and_record(con: sqlite3.Connection, *, job_id: str, dataset_id: str, sha256: str,
                     sets: np.ndarray, k: int, node: str, partition: str = LINEAR) -> None:
    """Inside the release transaction: refuse the query if, with every earlier release, it
    would leave an atom of fewer than k rows; else keep the refined partition. The
    non-linear partition is kept under the dataset id with a suffix, its atoms held to
    NONLINEAR_FACTOR·k."""
    if k <= 1:
        return
    why = f"k={k}"
    if partition == NONLINEAR:
        dataset_id, k = f"{dataset_id}#{NONLINEAR}", NONLINEAR_FACTOR * k
        why = f"{k} ({NONLINEAR_FACTOR}·k: its fit statistics are non-linear sums)"
    done = con.execute("SELECT 1 FROM atom_releases WHERE job_id=? AND dataset_id=? AND "
                       "sha256=?", (job_id, dataset_id, sha256)).fetchone()
    if done is not None:
        return  # a retried task: its sets are in the partition already
    labels = refine(_load(con, dataset_id, sha256, sets.shape[0]), sets)
    if 0 < smallest_atom(labels) < k:
        raise UserError(f"node {node} refused the query: together with earlier answers on "
                        f"this dataset it would describe fewer than {why} rows "
                        "(query auditing)")
    con.execute("INSERT OR REPLACE INTO atom_partitions VALUES (?,?,?,"
                "coalesce((SELECT releases FROM atom_partitions WHERE dataset_id=? AND "
                "sha256=?), 0) + 1, ?)",
                (dataset_id, sha256, zlib.compress(labels.tobytes()), dataset_id, sha256,
                 now_ms()))
    con.execute("INSERT INTO atom_releases VALUES (?,?,?,?)",
                (job_id, dataset_id, sha256, now_ms()))
