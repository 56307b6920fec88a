"""Disclosure rules of ``psi``. What is released is one number, the size of the
intersection of the nodes' identifier sets; never an identifier, a hash of one, or which
rows matched. The rules:

Before any identifier leaves a node (exchange step 0, the node's own rows):

* **identifier column**: the column must be one the catalog record marks as identifying
  records (role ``id``, or a direct or quasi identifier). Counting distinct values of
  another column would count values, not records, and its k-rule would mean nothing.
* **set size**: where k > 1, an exact node whose selection holds fewer than k distinct
  identifiers — none included — refuses (a filter that isolates one person would make
  the count that person's membership). An empty selection is refused in the same words:
  otherwise which nodes refused a one-person filter would say which nodes hold that
  person. The refusal says "fewer than k", never how many, and depends on this node's
  rows only, so it says nothing about any other node's set. (The node's query auditor
  runs after this rule, so it cannot word the refusal differently either.)
* the node's query auditor (where policy audits queries) checks the selection and the
  rows that hold an identifier against every earlier exact release on the file: the
  count is a sum over those rows, so two selections differing in one row are refused.

At the release node, on the pooled count:

* **k**: where k > 1, an exact count below k — zero included — is refused with one
  message that does not say which. Zero is refused too: otherwise "refused" would mean
  "1 to k−1" and a probe set of one suspect among known non-members would answer the
  membership. (k = 1 sets no threshold: every count, 0 too, is released.)
* where every contributor added DP noise the noisy count is released (rounded, at
  least 0) whatever its size: DP, not the threshold, bounds what it reveals.

PSI as a filter (``values``: sums of columns at node A over the intersection) keeps the
rules above at every node (A's set is its distinct identifiers with a row selected), and:

* it is exact only: where a node's policy requires DP, that node refuses before it reads
  a row (:func:`refuse_dp`); the spec refuses ``dp`` with ``values``;
* the values node's query auditor sees, besides the selection and the rows holding an
  identifier, the rows holding an identifier and each value column: the sums run over
  subsets of those. The intersection is no row set any auditor can see — but it changes
  only when some node's selection does, and that node's auditor sees that change;
* at the release node: where k > 1, fewer than k identifiers in the intersection, or
  fewer than k values of any column there, refuses the whole result in one message that
  says neither which nor how many (:func:`check_pooled_values`). Nothing per row or per
  identifier is released: a count, and per column n, sum, mean, variance.
"""

from __future__ import annotations

from scifed.errors import UserError

IDENTIFIER_KINDS = {"direct_identifier", "quasi_identifier"}


def identifier_field(record: dict, column: str, node: str) -> dict:
    """The column's catalog entry, refused unless it marks an identifier."""
    fields = {f["name"]: f for f in record.get("fields", [])}
    f = fields.get(column)
    if f is None:
        raise UserError(f"node {node}: psi.on: unknown column {column!r} (columns: "
                        f"{', '.join(fields)})")
    if f.get("role") != "id" and f.get("pi_kind") not in IDENTIFIER_KINDS:
        raise UserError(f"node {node}: psi.on: column {column!r} is not marked as an "
                        "identifier in the dataset's catalog record (role: id, or pi_kind "
                        "direct_identifier / quasi_identifier); psi counts records by "
                        "identifier")
    return f


def check_node(node: str, k: int, distinct: int, exact: bool) -> None:
    if exact and k > 1 and distinct < k:
        raise UserError(f"node {node}: psi: the selection holds fewer than k={k} distinct "
                        "identifiers here; this node does not take part")


def refuse_exact_where_audited(params, limits) -> None:
    """Where a node audits exact queries, no exact ``psi``: the size of an intersection
    (and a sum over it) is not a sum over one node's own row sets, so its auditor cannot
    bound what several answers give — the same selections over two node sets, or two
    complementary filters, differ by one person whom no node's partition isolates."""
    if not limits.audited or (limits.epsilon is not None and params.values is None):
        return
    if params.values is not None:
        raise UserError(f"node {limits.node}: psi with values is not available where the "
                        "node audits exact queries: sums over an intersection are not "
                        "sums over this node's own rows, so its auditor cannot bound them")
    raise UserError(f"node {limits.node}: psi: this node audits exact queries, and the size "
                    "of an intersection is not a sum over its own rows, so its auditor "
                    "cannot bound it; ask for dp (a noisy size, under the officer's ε cap "
                    "and budget)")


def refuse_dp(node: str, epsilon: float | None) -> None:
    """PSI as a filter is exact only: refused before any row is read where DP applies."""
    if epsilon is not None:
        raise UserError(f"node {node}: psi with values is not available where policy "
                        "requires differential privacy (noisy sums over the intersection "
                        "are not implemented yet); ask the data officer for an exact cell, "
                        "or drop values for the noisy intersection size")


def check_pooled_values(count: int, counts: list[int], k: int) -> None:
    """The filter's release: at least k identifiers in the intersection, and at least k
    values of every column there — one message for either, with no size in it."""
    if k > 1 and (count < k or min(counts) < k):
        raise UserError(f"psi: the intersection holds fewer than k={k} identifiers, or "
                        f"fewer than k={k} values of a column; nothing is released")


def check_pooled(count: int, k: int) -> None:
    if k > 1 and count < k:
        raise UserError(f"psi: the intersection is smaller than k={k} identifiers; its "
                        "size is not released")
