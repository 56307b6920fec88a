"""Disclosure rules of ``survival``.

A survival curve is a table of counts over time: each step is the events of one bin,
each drop of the at-risk count the events and censorings of the bin before. With the
declared bins alone, a bin holding one event dates that person's event to the bin, and a
filter or group that leaves one patient gives the patient's time and status away. The
rules:

At each node, before its counts leave it:

* **rows**: a node with 0 < n < k complete rows refuses (without saying how many).
* **levels**: the group column is a category, not an identifier (role ``id``, a direct
  or quasi identifier), not numeric unless its values are a declared enumeration, with
  at most :data:`MAX_LEVELS` levels; each level the dictionary does not declare (an
  enumeration, or true / false) is held by 0 or at least k of the node's complete rows
  (else the other nodes would learn a rare label), refused without naming it.

At the release node, on the pooled counts (:func:`widen`): adjacent declared bins are
merged until, in every released bin and for every group, the events are 0 or at least k
**and** the censorings are 0 or at least k. The released at-risk counts are cumulative
sums, so the difference of two adjacent ones is a bin's events plus its censorings:
bounding both bounds every number a researcher can form from one release. Merging runs
left to right, closing a bin as soon as it meets the rule; a remainder at the end is
merged into the bins before it. Where no merge can meet it (a group whose events or
censorings in total are between 1 and k − 1), the job is refused, naming no group and no
count. The grid that results depends on the pooled counts only: which declared edges
were dropped says that a bin held 1 to k − 1 of something, as a suppression pattern
does, never how many.

Across releases (differencing two filters, or a group and the whole), the node's query
auditor sees every (group, declared bin, status) cell as a row set (``row_sets``), where
policy audits queries.

Differential privacy: where a node's policy requires it, the node refuses the job with
one message before it reads a row (noisy counts are not implemented yet).
"""

from __future__ import annotations

import numpy as np

from scifed.errors import UserError
from scifed.record import NUMERIC_TYPES

MAX_LEVELS = 10
_IDENTIFIER_KINDS = {"direct_identifier", "quasi_identifier"}


def _field(record: dict, column: str | None) -> dict | None:
    return next((f for f in record.get("fields", []) if f.get("name") == column), None)


def declared_levels(record: dict, column: str | None) -> set[str]:
    """The labels the column dictionary makes public: a declared enumeration, or true /
    false for a boolean column (as the node reads them: text)."""
    f = _field(record, column) or {}
    if f.get("type") == "boolean":
        return {"true", "false"}
    return {str(v) for v in (f.get("constraints") or {}).get("enum") or ()}


def check_group_column(column: str | None, record: dict) -> None:
    """Refuse, from the column dictionary, a group column whose labels could be a
    person's value."""
    f = _field(record, column)
    if column is None or f is None:
        return  # the data check names unknown columns
    if f.get("role") == "id" or f.get("pi_kind") in _IDENTIFIER_KINDS:
        raise UserError(f"survival.groups: column {column!r} identifies people or records "
                        "and cannot group the curves")
    if f.get("type") in NUMERIC_TYPES and not declared_levels(record, column):
        raise UserError(f"survival.groups: column {column!r} is numeric without a declared "
                        "enumeration and cannot group the curves")


def check_node(node: str, k: int, levels: dict[str, int], declared: set[str] | None) -> None:
    """The node-level rules above, on this node's complete rows per level (``declared``:
    the labels the dictionary makes public, exempt from the level rule; None: the job
    has no group column)."""
    n = sum(levels.values())
    if n == 0:
        return
    if n < k:
        raise UserError(f"node {node}: survival: fewer than k={k} complete rows here; this "
                        "node does not contribute")
    if declared is None:
        return
    if len(levels) > MAX_LEVELS:
        raise UserError(f"node {node}: survival: the group column has more than "
                        f"{MAX_LEVELS} levels here")
    if any(c < k for v, c in levels.items() if v not in declared):
        raise UserError(f"node {node}: survival: a level of the group column that its "
                        f"metadata does not declare is held by fewer than k={k} rows here; "
                        "merge rare levels or filter them out")


def _ok(cells: np.ndarray, k: int) -> bool:
    return bool(np.all((cells == 0) | (cells >= k)))


def widen(events: np.ndarray, censored: np.ndarray, k: int) -> list[int]:
    """The declared bins at which released bins end (0-based, the last always included):
    a merge of adjacent bins in which every group's events and censorings per released
    bin are 0 or at least k, closing each released bin at the first declared edge where
    it meets the rule. ``events``, ``censored``: levels × declared bins. Refuses where no
    merge meets it."""
    bins = events.shape[1]
    if k <= 1:
        return list(range(bins))

    def fits(first: int, last: int) -> bool:
        return _ok(events[:, first:last + 1].sum(axis=1), k) and \
            _ok(censored[:, first:last + 1].sum(axis=1), k)

    ends: list[int] = []
    for j in range(bins):
        if fits(ends[-1] + 1 if ends else 0, j):
            ends.append(j)
    # a remainder that never met the rule joins the released bins before it
    while not ends or ends[-1] != bins - 1:
        if fits(ends[-1] + 1 if ends else 0, bins - 1):
            ends.append(bins - 1)
        elif ends:
            ends.pop()
        else:
            raise UserError(f"survival: no merge of the declared bins meets the disclosure "
                            f"rules: a group (or the selection) holds between 1 and k-1 "
                            f"(k={k}) events or censorings in all; merge or filter out "
                            "small groups")
    return ends
