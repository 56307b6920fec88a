"""The ``psi`` protocol between N ≥ 2 nodes, as each node runs its part.

The peers come in the order the coordinator gives (every node checks it is the job's
nodes, each once); the first, R, releases. The ring: node i's successor is node i+1
(mod N). In step 0 each node hashes its own identifier set, blinds it with its key and
sends it, sorted, to its successor. In step s = 1 … N−1 each node blinds the set it
received and sorts it; before the last step it sends it on to its successor, at the last
it truncates it and addresses it to R. So every set is blinded by every key, its owner
first and its owner's predecessor last, and every node's output is sorted: R is never
the last to blind its own set, and no set reaches R in an order its owner could link to
rows. R's compute (``finish``) counts the values all N fully blinded sets share; every
other node contributes 0. The count is then summed, noised, charged and released as any
contribution (jobs/aggregate.py, node/gate.py, node/release.py).

What each party learns (semi-honest nodes; every blob is sealed under the study key
for its recipient and step, see node/gate.py):

* the coordinator: the number of nodes, and every message's size — so each set's size
  (32 bytes per identifier) — nothing of any identifier;
* a node other than R: its own set, and sets of others blinded by keys it does not hold
  (points that look random and that it cannot test a guess against, since it cannot
  blind a guess with another node's key); not the count;
* R: the size of every set, and, as it compares the fully blinded sets, the size of
  every sub-intersection of them (for N = 2 only |A ∩ B|; for N = 3 how many
  identifiers each two nodes share as well) — never which identifiers or rows;
* the researcher: the released count only (refused below k; noisy under DP).

A member node that colluded with the coordinator could open the blobs addressed to R
(they are sealed under the study key every member holds) and learn what R learns; nodes
are assumed not to collude with the coordinator. A node can put any identifiers it likes
into its own set (it is its data): that, too, is outside the semi-honest model.
"""

from __future__ import annotations

import numpy as np

from jobs.base import Exchange, Limits, Table
from jobs.psi import disclosure, ecdh
from jobs.psi.ids import identifier_set
from jobs.psi.spec import PsiSpec
from scifed.errors import UserError


def own_set(params: PsiSpec, table: Table, limits: Limits) -> set[bytes]:
    """This node's identifier set, after the rules that apply before it leaves."""
    column = params.column(limits.node)
    field = disclosure.identifier_field(limits.record, column, limits.node)
    ids = identifier_set(table, column, field.get("type", "string"), params.normalise)
    disclosure.check_node(limits.node, limits.k, len(ids), limits.epsilon is None)
    return ids


def step(params: PsiSpec, table: Table, ex: Exchange, limits: Limits) -> dict[str, bytes]:
    """One exchange step at this node: what it sends, and to whom."""
    n, me = len(ex.peers), ex.peers.index(limits.node)
    if ex.step >= n:
        raise UserError(f"node {limits.node}: psi has {n} exchange steps for {n} nodes, "
                        f"not a step {ex.step + 1}")
    if ex.step == 0:
        points = ecdh.hashed(ex.job_id, own_set(params, table, limits))
    else:
        sender = ex.peers[(me - 1) % n]
        if set(ex.inbound) != {sender}:
            raise UserError(f"node {limits.node}: psi step {ex.step + 1} must bring the "
                            f"set of {sender} alone")
        points = ecdh.unpack(ex.inbound[sender], ecdh.POINT, sender)
    blinded = ecdh.blind(ecdh.key(ex.secret), points)
    if ex.step < n - 1:
        return {ex.peers[(me + 1) % n]: ecdh.pack(blinded)}
    return {ex.peers[0]: ecdh.pack(blinded, ecdh.TRUNCATED)}


def finish(ex: Exchange, limits: Limits) -> np.ndarray:
    """R: the size of the intersection of the N fully blinded sets; any other node: 0."""
    n = len(ex.peers)
    if ex.step != n:
        raise UserError(f"node {limits.node}: psi counts after its {n} exchange steps, "
                        f"not after {ex.step}")
    if limits.node != ex.peers[0]:
        if ex.inbound:
            raise UserError(f"node {limits.node}: psi: only {ex.peers[0]} compares sets")
        return np.zeros(1)
    if sorted(ex.inbound) != sorted(ex.peers):
        raise UserError(f"node {limits.node}: psi needs the fully blinded set from each of "
                        f"{', '.join(ex.peers)}; the task brings "
                        f"{', '.join(sorted(ex.inbound)) or 'none'}")
    sets = [ecdh.unpack(blob, ecdh.TRUNCATED, s) for s, blob in ex.inbound.items()]
    return np.array([float(ecdh.intersection_size(sets))])
