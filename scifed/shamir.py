"""Shamir's t-of-n secret sharing of 32-byte seeds over the prime field GF(p),
p = 2^256 + 297 (the least prime above 2^256, so every 32-byte seed is one field element).

Why here. A node's self-mask seed must come off the sum even when that node drops
before it reveals it (node/masking.py): each contributor splits the seed into shares for
the others, any ``t`` of which give it back and fewer tell nothing. No library of the
project's dependencies shares over a prime field (pycryptodome's ``Shamir`` works in
GF(2^128) on 16-byte secrets and is not a dependency), so this is the whole scheme, small
enough to read:

* split: pick a polynomial f(x) = s + a_1 x + … + a_{t-1} x^{t-1} mod p with the secret
  s as its constant term and a_1 … a_{t-1} uniform in [0, p); holder j gets (x_j, f(x_j))
  for a distinct non-zero x_j.
* combine: any t points fix f, and s = f(0) = Σ_j y_j · Π_{m≠j} x_m / (x_m − x_j) mod p
  (Lagrange at 0; the inverses by Fermat, pow(·, −1, p)).
* fewer than t points: for every candidate secret there is exactly one polynomial of
  degree < t through them and it, so t − 1 shares are independent of s (perfect secrecy).
* more than t points (the release node usually has more): every extra point must lie on
  the polynomial the first t fix, else :func:`combine` refuses — a share altered in
  transit, or made for another secret, is detected instead of yielding a wrong seed.

The coefficients come from ChaCha20 keyed by ``randomness`` (32 bytes the caller derives
from a secret only it holds, for this secret and context), by rejection below p: the same
shares on every retry and restart of a task (a kept answer never differs from a remade
one), and uniform to anyone without that key. A share is 33 bytes, big-endian.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from scifed.errors import UserError

PRIME = 2**256 + 297
SECRET_BYTES = 32
SHARE_BYTES = 33


def _coefficients(randomness: bytes, count: int) -> list[int]:
    """``count`` field elements uniform in [0, p) from ChaCha20 keyed by ``randomness``
    (a 33-byte draw is kept only below the largest multiple of p under 2^264)."""
    if len(randomness) != 32:
        raise ValueError("the randomness of a sharing is 32 bytes")
    stream = Cipher(algorithms.ChaCha20(randomness, bytes(16)), mode=None).encryptor()
    limit = (2**264 // PRIME) * PRIME
    out: list[int] = []
    while len(out) < count:
        word = int.from_bytes(stream.update(bytes(SHARE_BYTES)), "big")
        if word < limit:
            out.append(word % PRIME)
    return out


def split(secret: bytes, xs: Sequence[int], t: int, randomness: bytes) -> dict[int, bytes]:
    """Shares of ``secret`` (32 bytes) for the holders at ``xs`` (distinct, in [1, p)),
    any ``t`` of which give it back: {x: 33-byte share}."""
    if len(secret) != SECRET_BYTES:
        raise ValueError(f"a shared secret is {SECRET_BYTES} bytes, not {len(secret)}")
    if len(set(xs)) != len(xs) or not all(0 < x < PRIME for x in xs):
        raise ValueError("share points must be distinct and non-zero")
    if not 1 <= t <= len(xs):
        raise ValueError(f"a threshold of {t} cannot be met by {len(xs)} holders")
    coeffs = [int.from_bytes(secret, "big"), *_coefficients(randomness, t - 1)]
    out = {}
    for x in xs:
        y = 0
        for c in reversed(coeffs):  # Horner
            y = (y * x + c) % PRIME
        out[x] = y.to_bytes(SHARE_BYTES, "big")
    return out


def _inverses(values: Sequence[int]) -> list[int]:
    """1/v mod p for every v (non-zero mod p), with one modular inversion for them all
    (prefix products, then back: Montgomery's trick)."""
    prefix, acc = [], 1
    for v in values:
        prefix.append(acc)
        acc = acc * v % PRIME
    inv = pow(acc, -1, PRIME)
    out = [0] * len(values)
    for i in range(len(values) - 1, -1, -1):
        out[i] = inv * prefix[i] % PRIME
        inv = inv * values[i] % PRIME
    return out


@functools.lru_cache(maxsize=128)
def _weights(xs: tuple[int, ...]) -> tuple[int, ...]:
    """The barycentric weights 1 / Π_{m≠j} (x_j − x_m) of the points at ``xs``. They
    depend on the points' positions only: the release node rebuilds a hundred seeds
    from shares held at (nearly) the same positions, and checks each extra share against
    them, so the O(t²) part is made once, not once per share checked."""
    dens = []
    for j, xj in enumerate(xs):
        d = 1
        for m, xm in enumerate(xs):
            if m != j:
                d = d * (xj - xm) % PRIME
        dens.append(d)
    return tuple(_inverses(dens))


def _at(points: Sequence[tuple[int, int]], x0: int) -> int:
    """The polynomial of degree < len(points) through ``points``, at ``x0`` (Lagrange, in
    barycentric form: f(x0) = Π_m (x0 − x_m) · Σ_j w_j y_j / (x0 − x_j))."""
    for x, y in points:
        if (x - x0) % PRIME == 0:
            return y % PRIME
    weights = _weights(tuple(x for x, _ in points))
    diffs = [(x0 - x) % PRIME for x, _ in points]
    total, ell = 0, 1
    for (_, y), w, inv, d in zip(points, weights, _inverses(diffs), diffs, strict=True):
        total = (total + w * y % PRIME * inv) % PRIME
        ell = ell * d % PRIME
    return total * ell % PRIME


def combine(shares: Mapping[int, bytes], t: int) -> bytes:
    """The secret from at least ``t`` shares {x: share}; refuses fewer, a malformed share,
    or shares that do not lie on one polynomial of degree < t."""
    if len(shares) < t:
        raise UserError(f"{len(shares)} shares of a secret are given, {t} are needed")
    points = []
    for x, share in sorted(shares.items()):
        if len(share) != SHARE_BYTES or not 0 < x < PRIME:
            raise UserError("a share of a secret is malformed")
        y = int.from_bytes(share, "big")
        if y >= PRIME:
            raise UserError("a share of a secret is malformed")
        points.append((x, y))
    base = points[:t]
    for x, y in points[t:]:
        if _at(base, x) != y:
            raise UserError("the shares of a secret do not agree (one was altered or made "
                            "for another secret)")
    secret = _at(base, 0)
    if secret >= 2 ** (8 * SECRET_BYTES):
        raise UserError("the shares of a secret do not give a 32-byte secret")
    return secret.to_bytes(SECRET_BYTES, "big")
