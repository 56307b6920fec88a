"""The cryptography of ``psi``: ECDH private set intersection over X25519.

An identifier x becomes a point ``H(x)``: ``u = BLAKE2b-256(DOMAIN ‖ job id ‖ x)`` read
as a Montgomery u-coordinate. Curve25519 is twist-secure and X25519 clamps its scalars
(multiples of the cofactor 8), so any 32 bytes are a valid input and small-order parts
vanish; it is common practice though not a standard hash-to-curve (ristretto255 with
Elligator would be, at 2.3× the cost on this machine). The job id in the hash makes the
points of two jobs unrelated.

Blinding is ``X25519PrivateKey.exchange``: a scalar multiplication by the node's key, and
scalar multiplications commute, ``a·(b·H(x)) == b·(a·H(x))``. A node's key for a job is
derived from the 32-byte job secret its gate gives it (HKDF of the node's private key and
the job id, :meth:`node.gate.Gate.job_secret`) rather than drawn at random and kept:
every step, retry and restart of the job blinds with the same key, so a retried task
gets the same answer (the node's replay rule) and nothing has to be stored or erased;
keys of two jobs, or of two nodes, are unrelated.

Wire: a point is 32 bytes. The last blinding of a set is truncated to :data:`TRUNCATED`
= 12 bytes (96 bits) after sorting: two different identifiers then compare equal with
probability 2^-96 per pair, so with sets of n_A and n_B items the chance of any false
match is at most n_A·n_B·2^-96 (1.3e-19 for 10^5 × 10^5).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from scifed.errors import UserError

DOMAIN = b"scifed-psi-v1\0"
POINT = 32
TRUNCATED = 12


def key(secret: bytes) -> X25519PrivateKey:
    """The node's blinding key for the job (X25519 clamps the 32 bytes)."""
    return X25519PrivateKey.from_private_bytes(secret)


def hashed(job_id: str, ids: Iterable[bytes]) -> list[bytes]:
    """Each identifier's u-coordinate."""
    prefix = DOMAIN + job_id.encode() + b"\0"
    return [hashlib.blake2b(prefix + x, digest_size=POINT).digest() for x in ids]


def blind(secret: X25519PrivateKey, points: Iterable[bytes]) -> list[bytes]:
    """Each point times the key, sorted (so the order says nothing of the input's)."""
    return sorted(blind_in_order(secret, points))


def blind_in_order(secret: X25519PrivateKey, points: Iterable[bytes]) -> list[bytes]:
    """Each point times the key, in the input's order (the filter's set of the values
    node, whose positions are that node's secret order: jobs/psi/filtering.py)."""
    exchange, load = secret.exchange, X25519PublicKey.from_public_bytes
    try:
        return [exchange(load(p)) for p in points]
    except ValueError:  # a small-order point: never the hash of an identifier
        raise UserError("psi: a peer sent a point of small order; it is not a blinded "
                        "identifier") from None


def pack(points: list[bytes], width: int = POINT) -> bytes:
    return b"".join(p[:width] for p in points)


def unpack(blob: bytes, width: int, sender: str) -> list[bytes]:
    if len(blob) % width:
        raise UserError(f"psi: what {sender} sent is not a whole number of "
                        f"{width}-byte values")
    return [blob[i:i + width] for i in range(0, len(blob), width)]


def intersection_size(sets: Iterable[list[bytes]]) -> int:
    """How many values every (fully blinded, truncated) set holds."""
    common: set[bytes] | None = None
    for values in sets:
        common = set(values) if common is None else common.intersection(values)
    return len(common or ())
