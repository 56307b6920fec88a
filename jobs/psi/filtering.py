"""PSI as a filter: sums of value columns held at one node A over A's rows whose
identifier every other node of the job holds, with no node and not the coordinator
learning which rows, as each node runs its part (a private join-and-compute).

The ring is the cardinality ring (jobs/psi/protocol.py), N ≥ 2 nodes in the
coordinator's order, with three changes. Let E be A's predecessor in the ring (the other
node where N = 2).

* A's own set leaves A in a secret order of A's (its identifiers sorted by a keyed hash,
  the key from A's job secret), one point per distinct identifier, and every node that
  blinds it keeps that order (every other set is sorted at every step, as before).
* At the last blinding step (N − 1) every fully blinded set, truncated, goes to E
  instead of R: E is the last to blind A's set, so it addresses that one to itself. In
  the same step A makes a fresh BFV key (jobs/psi/bfv.py) and sends E its public context
  and the encryption, in A's order, of [n, Σu, Σu²] per value column and identifier
  (jobs/psi/values.py); its secret context it addresses to itself, sealed with a key of
  its job secret.
* Step N: E knows, for each position of A's set, whether its value lies in every other
  set: a bit. It multiplies A's ciphertexts slot-wise by the bits, adds a fresh
  encryption of uniform masks, and returns the product to A; its own share — the count of
  matching positions and, per sum, minus the masks' total mod t — it addresses to itself,
  sealed. A forwards its sealed key to itself.

Then the compute (``finish``, step N + 1): A decrypts the product and sums each block's
slots: S + r (mod t), for each sum S over the intersection and E's mask total r. A
contributes those, E contributes [count, −r mod t], every other node zeros; all in [0,
t) with t < 2^52, so the BFV sum of the study (jobs/aggregate.py) carries them exactly
and the release node reduces each sum mod t to S (jobs/psi/release.py).

What each party learns (semi-honest nodes; every blob is sealed under the study key for
its recipient and step, and what a node keeps for itself under a key of its own):

* the coordinator: the number of nodes and every message's size, so each set's size and
  A's number of distinct identifiers; nothing of any identifier or value;
* A: its own rows; the other sets blinded by keys it does not hold; the block sums plus
  uniform masks (mod t), so nothing of which positions matched nor of their count;
* E: the size of every set and of every sub-intersection of them (as R does in the
  cardinality path) and the membership bit of each position of A's set — positions in an
  order of A's that E cannot link to identifiers or rows; A's numbers only under A's key;
* every other node: its own set, and sets blinded by keys it does not hold;
* the release node: the pooled vector, that is the count and sums over the
  intersection (its own share too, if it is A or E);
* the researcher: the released count and statistics only (refused below k).

Where A and E both colluded with the coordinator they would learn which of A's rows
match (A knows its order, E the bits): the two parties of the filter are trusted not to
pool what they learn, as the ring's nodes are in the cardinality path.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from jobs.base import Exchange, Limits, Table
from jobs.psi import bfv, disclosure, ecdh
from jobs.psi.protocol import own_set
from jobs.psi.spec import PsiSpec
from jobs.psi.values import holdings
from scifed.errors import UserError

KEY, SHARE = "bfv-key", "share"


def steps(nodes: int) -> int:
    """The ring's N steps, E's product, and the compute after them."""
    return nodes + 1


def blocks(params: PsiSpec) -> int:
    assert params.values is not None
    return 3 * len(params.values.columns)


def step(params: PsiSpec, table: Table, ex: Exchange, limits: Limits) -> dict[str, bytes]:
    """One exchange step at this node: what it sends, and to whom."""
    disclosure.refuse_dp(limits.node, limits.epsilon)  # before any row is read
    n, me = len(ex.peers), ex.peers.index(limits.node)
    a, e = roles(params, ex.peers, limits.node)
    if ex.step > n:
        raise UserError(f"node {limits.node}: psi with values has {n + 1} exchange steps "
                        f"for {n} nodes, not a step {ex.step + 1}")
    blind = ecdh.key(ex.secret)
    successor = ex.peers[(me + 1) % n]
    if ex.step == 0:
        if me == a:
            ordered = _ordered(ex.secret, _held(params, table, limits))
            points = ecdh.blind_in_order(blind, ecdh.hashed(ex.job_id, ordered))
        else:
            points = ecdh.blind(blind, ecdh.hashed(ex.job_id, own_set(params, table, limits)))
        return {successor: join(set=ecdh.pack(points))}
    if ex.step < n:
        sender = ex.peers[(me - 1) % n]
        _expect(ex, {sender}, limits.node)
        points = ecdh.unpack(part(ex, sender, "set"), ecdh.POINT, sender)
        owner = (me - ex.step) % n
        points = (ecdh.blind_in_order if owner == a else ecdh.blind)(blind, points)
        if ex.step < n - 1:
            return {successor: join(set=ecdh.pack(points))}
        out = {ex.peers[e]: {"final": ecdh.pack(points, ecdh.TRUNCATED)}}
        if me == a:  # A's numbers, under a fresh key of its own, in its order
            held = _held(params, table, limits)
            ordered = _ordered(ex.secret, held)
            ctx = bfv.new_key()
            flat = [held[i][q] for q in range(blocks(params)) for i in ordered]
            out[ex.peers[e]] |= {"context": bfv.public_bytes(ctx),
                                 "values": bfv.encrypt(ctx, flat)}
            out[limits.node] = {"keep": bfv.keep(ex.secret, KEY, bfv.secret_bytes(ctx))}
        return {r: join(**p) for r, p in out.items()}
    if me == e:
        return _product(params, ex, limits, a)
    if me == a:  # carry the sealed key to the compute
        _expect(ex, {limits.node}, limits.node)
        return {limits.node: join(keep=part(ex, limits.node, "keep"))}
    _expect(ex, set(), limits.node)
    return {}


def finish(params: PsiSpec, ex: Exchange, limits: Limits) -> np.ndarray:
    """A: the masked sums; E: its share (the count and the masks' negation); others 0."""
    n, me = len(ex.peers), ex.peers.index(limits.node)
    a, e = roles(params, ex.peers, limits.node)
    if ex.step != n + 1:
        raise UserError(f"node {limits.node}: psi with values sums after its {n + 1} "
                        f"exchange steps, not after {ex.step}")
    if me == a:
        _expect(ex, {limits.node, ex.peers[e]}, limits.node)
        ctx = bfv.load_secret(bfv.kept(ex.secret, KEY, part(ex, limits.node, "keep")))
        sums = bfv.block_sums(ctx, part(ex, ex.peers[e], "sums"), blocks(params),
                              ex.peers[e])
        return np.array([0.0, *map(float, sums)])
    if me == e:
        _expect(ex, {limits.node}, limits.node)
        share = json.loads(bfv.kept(ex.secret, SHARE, part(ex, limits.node, "keep")))
        return np.array([float(v) for v in share])
    _expect(ex, set(), limits.node)
    return np.zeros(1 + blocks(params))


def roles(params: PsiSpec, peers: list[str], node: str) -> tuple[int, int]:
    """The positions of A (the values node) and of E (its predecessor) in the ring."""
    assert params.values is not None
    if params.values.node not in peers:
        raise UserError(f"node {node}: psi.values.node: {params.values.node!r} is not a "
                        f"node of the job (its nodes: {', '.join(sorted(peers))})")
    a = peers.index(params.values.node)
    return a, (a - 1) % len(peers)


def _product(params: PsiSpec, ex: Exchange, limits: Limits, a: int) -> dict[str, bytes]:
    """E at step N: the membership bits of A's positions, applied under A's key."""
    _expect(ex, set(ex.peers), limits.node)
    holder = ex.peers[a]
    sets = {s: ecdh.unpack(part(ex, s, "final"), ecdh.TRUNCATED, s) for s in ex.peers}
    mine = sets.pop(limits.node)  # the set E blinded last: A's, in A's order
    common = set.intersection(*map(set, sets.values()))
    bits = [int(p in common) for p in mine]
    ctx = bfv.load_public(part(ex, holder, "context"), holder)
    product, masks = bfv.masked_product(ctx, part(ex, holder, "values"), bits,
                                        blocks(params), holder)
    share = [sum(bits), *((-m) % bfv.PLAIN_MODULUS for m in masks)]
    return {holder: join(sums=product),
            limits.node: join(keep=bfv.keep(ex.secret, SHARE, json.dumps(share).encode()))}


def _held(params: PsiSpec, table: Table, limits: Limits) -> dict[bytes, list[int]]:
    """A's identifiers with their sums, after the rules that apply before any leaves."""
    assert params.values is not None
    column = params.column(limits.node)
    field = disclosure.identifier_field(limits.record, column, limits.node)
    held = holdings(params.values, table, column, field.get("type", "string"),
                    params.normalise, limits.node)
    disclosure.check_node(limits.node, limits.k, len(held), True)
    return held


def _ordered(secret: bytes, held: dict[bytes, list[int]]) -> list[bytes]:
    """A's identifiers in its secret order: sorted by a hash keyed from its job secret
    (the same at every step and retry; unrelated to the rows' order or the values)."""
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
               info=b"scifed-psi-order").derive(secret)
    return sorted(held, key=lambda x: hashlib.blake2b(x, key=key, digest_size=16).digest())


def _expect(ex: Exchange, senders: set[str], node: str) -> None:
    if set(ex.inbound) != senders:
        raise UserError(f"node {node}: psi step {ex.step + 1} must bring blobs of "
                        f"{', '.join(sorted(senders)) or 'no node'}; it brings "
                        f"{', '.join(sorted(ex.inbound)) or 'none'}")


def join(**parts: bytes) -> bytes:
    """Named parts in one blob."""
    return bfv.frame([x for name, data in sorted(parts.items())
                      for x in (name.encode(), data)])


def part(ex: Exchange, sender: str, name: str) -> bytes:
    items = bfv.unframe(ex.inbound[sender], sender)
    parts = dict(zip(items[::2], items[1::2], strict=False))
    if name.encode() not in parts:
        raise UserError(f"psi: what {sender} sent at step {ex.step} holds no {name!r}")
    return parts[name.encode()]
