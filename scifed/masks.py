"""Pairwise masks under the encryption: each pair of contributors agrees a seed, and each
adds +PRG(seed) or -PRG(seed) mod t to every slot it encrypts, so the masks cancel only
in the sum over all of them.

Why. Every member holds the study's secret key, so without masks the coordinator with any
one member — or the release node alone, which decrypts — could read any node's
contribution. With masks a single contribution decrypts to residues uniform in [0, t),
and a sum over a proper subset of the contributors is uniform too; only the full sum
is the plain sum of their vectors (mod t, which :mod:`scifed.he` decodes).

Seeds. X25519 between the two nodes' seal keys (``seal.key``, whose public halves the
nodes' certificates vouch for in signed claims: :mod:`scifed.sealing`), expanded by
HKDF-SHA256 with the pair's names and the job's context (job id, round, purpose), so every
job and round has fresh, unrelated masks and nobody but the two nodes can compute them.
The PRG is ChaCha20 (a 256-bit key; never a generator seeded with 32 bits), whose 64-bit
words become residues mod t by rejection (a word is kept only below the largest multiple
of t under 2^64, so every residue is exactly uniform). Measured: ~2 GB/s of keystream per
core, ~0.01 µs per slot and peer.

Self-masks. A node may also add a mask from a seed only it knows (:func:`self_mask`,
:func:`named_mask` for a contribution of several vectors), revealed for the sum only once
the set of contributors is fixed (double masking, as in SecAgg): then a node declared
dropped, or an attempt abandoned for a later one, stays masked by the seeds never revealed.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from scifed.errors import UserError
from scifed.he import PLAIN_MODULUS, sub_mod

_INFO = b"scifed-pairwise-mask-v1\0"
_SELF_INFO = b"scifed-self-mask-v1\0"
_LIMIT = np.uint64((2**64 // PLAIN_MODULUS) * PLAIN_MODULUS)


def pair_seed(own: X25519PrivateKey, own_name: str, peer_name: str, peer_public: bytes,
              context: bytes) -> bytes:
    """The 32-byte seed the two nodes share for ``context`` (symmetric in the pair)."""
    if own_name == peer_name:
        raise UserError(f"a node cannot mask with itself ({own_name})")
    try:
        shared = _shared(own, bytes(peer_public))
    except ValueError as exc:
        raise UserError(f"node {peer_name}'s seal key is not a valid X25519 key") from exc
    first, second = sorted((own_name, peer_name))
    info = _INFO + b"\0".join([first.encode(), second.encode(), context])
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(shared)


@functools.lru_cache(maxsize=1024)
def _shared(own: X25519PrivateKey, peer_public: bytes) -> bytes:
    """The X25519 secret of ``own`` with a peer's seal key, remembered: a job's compute,
    unmask and every round of its release derive seeds with every other contributor (99
    exchanges a task with a hundred nodes), always between the same keys; each seed still
    comes fresh from HKDF with its own context. (The key is the process's one seal key,
    which it holds anyway: the cache keeps nothing that key does not already give.)"""
    return own.exchange(X25519PublicKey.from_public_bytes(peer_public))


def residues(seed: bytes, n: int) -> np.ndarray:
    """``n`` residues uniform in [0, t) from ChaCha20 keyed by ``seed``."""
    out = np.empty(0, dtype=np.uint64)
    encryptor = Cipher(algorithms.ChaCha20(seed, bytes(16)), mode=None).encryptor()
    while out.size < n:
        want = n - out.size
        draw = want + want // 1_000_000 + 16  # rejection keeps all but ~t/2^64 ≈ 2^-24
        words = np.frombuffer(encryptor.update(bytes(8 * draw)), dtype="<u8")
        out = np.concatenate([out, words[words < _LIMIT]])
    return out[:n] % np.uint64(PLAIN_MODULUS)


def pairwise_mask(own: X25519PrivateKey, own_name: str, peers: Mapping[str, bytes],
                  context: bytes, n: int, name: str | None = None) -> np.ndarray:
    """Σ over ``peers`` (name -> X25519 public key) of ±PRG(seed) mod t: + towards a peer
    whose name sorts after ours, − towards one before, so each pair's masks cancel.
    ``name``: the vector of a contribution of several (:func:`stream`)."""
    # residues are below t < 2^40, so the streams of up to 2^24 peers add up in uint64
    # without reduction: one mod at the end, not three array passes per peer
    plus, minus = np.zeros(n, dtype=np.uint64), np.zeros(n, dtype=np.uint64)
    for peer in sorted(peers):
        if peer == own_name:
            continue
        seed = pair_seed(own, own_name, peer, peers[peer], context)
        if own_name < peer:
            plus += stream(seed, n, name)
        else:
            minus += stream(seed, n, name)
    t = np.uint64(PLAIN_MODULUS)
    return sub_mod(plus % t, minus % t)


def signed(mask: np.ndarray, own_name: str, peer_name: str) -> np.ndarray:
    """A pair's stream as ``own_name`` adds it: +stream towards a peer whose name sorts
    after its own, −stream towards one before."""
    return mask if own_name < peer_name else sub_mod(np.zeros_like(mask), mask)


SHARED_FROM = 3  # sets of this many nodes or more share their self-mask seeds t-of-n


def threshold(n: int) -> int:
    """How many shares give back a self-mask seed in a set of ``n`` (node/masking.py):
    ⌊n/2⌋ + 1, so the coordinator with fewer than t members never holds t shares of a
    node's seed once any honest node has given its pairwise seed with that node instead."""
    return n // 2 + 1


def self_seed(secret: bytes, context: bytes) -> bytes:
    """A node's own mask seed for ``context``, from a secret only it holds."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                info=_SELF_INFO + context).derive(secret)


def self_mask(seed: bytes, n: int) -> np.ndarray:
    return residues(seed, n)


def stream(seed: bytes, n: int, name: str | None = None) -> np.ndarray:
    """The residues of ``seed``: of the vector ``name`` of a contribution of several
    (:func:`named_mask`), or of the one vector of a contribution (``name`` None)."""
    return residues(seed, n) if name is None else named_mask(seed, name, n)


def named_mask(seed: bytes, name: str, n: int) -> np.ndarray:
    """The self-mask of the vector ``name`` of a contribution of several vectors (a
    training round's model and metrics), all from the one seed the node reveals: each
    vector gets a stream of its own, and whoever holds the seed makes the same one. (A
    training round's pairwise seeds expand the same way: one seed per pair and attempt.)"""
    return residues(self_seed(seed, b"vector\0" + name.encode()), n)


def subtract(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(values − mask) mod t, for residues below t."""
    return sub_mod(values, mask)


def add(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(values + mask) mod t, for residues below t."""
    return sub_mod(values, sub_mod(np.zeros_like(mask), mask))
