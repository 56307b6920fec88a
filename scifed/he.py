"""Study keys and encrypted aggregation: TenSEAL CKKS, additions only, exact sums.

Members of a study share one CKKS secret context (made by a lead node); the coordinator
holds only the public part and adds ciphertexts. Numbers are measurements of this module
on the project's machines (`make bench` prints them beside their baselines).

Why not plain CKKS with a big modulus. CKKS encodes a vector through a double-precision
FFT, so every slot's absolute error is about 2^-50 times the *largest* entry of the same
vector. Measured with N = 8192, moduli [60, 50, 50, 50], scale 2^40: summing 10 vectors whose
entries reach 2^50 puts counts beside them off by 3.5. Noise adds a second floor: public-key
encryption noise is ~2^14 (measured: scale 2^20 gives 2e-2 error after 10 additions).

What we do instead: fixed point in limbs. Each value x (|x| <= 2^60) becomes the integer
round(x * 2^28), split into 3 signed base-2^30 limbs (|limb| <= 2^29); every limb takes one
CKKS slot at scale 2^21. Decryption rounds each limb sum to an integer, so the sum is
*exact* on the 2^-28 grid: the error is the input rounding, <= 100 * 2^-29 = 1.9e-7 for
100 summands, plus at most one float64 rounding of the result (none when the exact sum is a
float64, so counts come back exact). Budget per slot: 100 summands * 2^29 * 2^21 = 2^55.6
< q/2 = 2^59 (the data prime is 2^60 - 16383; 3.4 bits to spare); the noise measured after
100 additions is 5e-3 of a limb unit, far below the 0.5 that rounding tolerates. A blob
records how many ciphertexts it sums; sums of more than ``MAX_SUMMANDS`` are refused because
the limbs could then wrap silently.

Parameters. N = 4096 with coefficient moduli [60, 49]: 109 bits, exactly SEAL's TC128 bound
for N = 4096, and the smallest set TenSEAL's high-level API accepts (it always wants a
special prime for key switching). The data modulus is one 60-bit word, so a slot costs
32 B (measured: 32.11 B/value for [60,49]; [60,40,40,60] costs 81 B with 5x the coordinator time
and no better precision for additions). Three limbs make ~96 B per value. Encryption is
*symmetric*: every member holds the secret key anyway (docs/architecture.md, trust model), and it
measured 2x faster (0.33 vs 0.70 us/slot) with 8x less noise than public-key encryption.
The public context therefore holds only the parameters (86 B, no relinearisation or
Galois keys), so it carries a key id derived from the secret to recognise the study's
ciphertexts. ``n_threads=1``: TenSEAL's pool does not speed up encrypt, decrypt or add
(measured: 1.00-1.03x).

Chunking. ``ts.ckks_vector`` does chunk vectors longer than N/2 slots itself, but prints a
warning to stdout for each one, so we cut the limbs into N/2-slot vectors (padding the last
with zeros, which costs no bytes: a ciphertext always has N coefficients) and frame them.
"""

from __future__ import annotations

import functools
import json
import os
import struct
from typing import Any

import numpy as np
import tenseal as ts
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from scifed.errors import UserError

POLY_MODULUS_DEGREE = 4096
COEFF_MOD_BIT_SIZES = (60, 49)
SCALE_BITS = 21
SLOTS = POLY_MODULUS_DEGREE // 2
LIMB_BITS = 30
LIMBS = 3
FRACTION_BITS = 28
MAX_ABS_VALUE = 2.0**60
MAX_SUMMANDS = 100

# A limb sum must sit this close to an integer; noise is ~1e-2 at most, while a wrong key
# or a corrupted ciphertext decrypts to values spread over the whole slot range.
_ROUNDING_SLACK = 0.25
_KEY_ID_BYTES = 16
_CONTEXT_MAGIC = b"SFHK"
_CIPHERTEXT_MAGIC = b"SFHC"
_VERSION = 1
_PUBLIC, _SECRET = 0, 1
_CONTEXT_HEADER = struct.Struct(f"<4sBB{_KEY_ID_BYTES}s")
# magic, version, key id, number of values, number of summands, number of chunks
_CIPHERTEXT_HEADER = struct.Struct(f"<4sB{_KEY_ID_BYTES}sQII")
_NONCE_BYTES = 12


class StudyKey:
    """A study's CKKS secret context, held only by member nodes."""

    def __init__(self, context: ts.Context) -> None:
        self._context = context
        self._material = context.serialize(
            save_public_key=False,
            save_secret_key=True,
            save_galois_keys=False,
            save_relin_keys=False,
        )
        self._key_id = _derive(self._material, b"scifed-study-key-id-v1", _KEY_ID_BYTES)

    @classmethod
    def generate(cls) -> StudyKey:
        """Make a fresh study key (the lead node does this once per study)."""
        context = ts.context(
            ts.SCHEME_TYPE.CKKS,
            poly_modulus_degree=POLY_MODULUS_DEGREE,
            coeff_mod_bit_sizes=list(COEFF_MOD_BIT_SIZES),
            encryption_type=ts.ENCRYPTION_TYPE.SYMMETRIC,
            n_threads=1,
        )
        context.global_scale = 2.0**SCALE_BITS
        return cls(context)

    @classmethod
    def from_secret_bytes(cls, data: bytes) -> StudyKey:
        """Load what :meth:`secret_bytes` wrote; refuse anything else."""
        kind, key_id, context = _parse_context(data)
        if kind != _SECRET or not context.is_private():
            raise UserError("these bytes are a study's public context, not its secret key")
        key = cls(context)
        if key._key_id != key_id:
            raise UserError("study key is corrupt: its key id does not match its secret")
        return key

    @property
    def key_id(self) -> bytes:
        """16 bytes derived from the secret; every ciphertext and the public context carry
        it (the lead signs it, so a member can tell the lead's key from another)."""
        return self._key_id

    def secret_bytes(self) -> bytes:
        """The whole secret context; seal it before it leaves the node."""
        header = _CONTEXT_HEADER.pack(_CONTEXT_MAGIC, _VERSION, _SECRET, self._key_id)
        return header + self._material

    def public_bytes(self) -> bytes:
        """Parameters and key id only: enough for the coordinator to add ciphertexts."""
        public = self._context.serialize(
            save_public_key=False,
            save_secret_key=False,
            save_galois_keys=False,
            save_relin_keys=False,
        )
        return _CONTEXT_HEADER.pack(_CONTEXT_MAGIC, _VERSION, _PUBLIC, self._key_id) + public

    def encrypt(self, values: np.ndarray) -> bytes:
        """Encrypt a 1-D float vector (|x| <= 2^60) into one framed blob."""
        array = np.asarray(values, dtype=np.float64)
        if array.ndim != 1 or array.size == 0:
            raise UserError(f"can only encrypt a non-empty 1-D vector, got shape {array.shape}")
        largest = np.max(np.abs(array))
        if not np.isfinite(largest):
            raise UserError("cannot encrypt NaN or infinite values")
        if largest > MAX_ABS_VALUE:
            raise UserError(f"cannot encrypt values beyond 2^60 in magnitude (got {largest:.3g})")
        limbs = _to_limbs(array).ravel()
        n_chunks = -(-limbs.size // SLOTS)
        padded = np.zeros(n_chunks * SLOTS)
        padded[: limbs.size] = limbs
        rows = padded.reshape(-1, SLOTS)
        chunks = [ts.ckks_vector(self._context, row).serialize() for row in rows]
        return _frame_ciphertext(self._key_id, array.size, 1, chunks)

    def decrypt(self, blob: bytes) -> np.ndarray:
        """Decrypt a blob (one contribution or a sum) back to float64 of the original length."""
        key_id, n, summands, chunks = _parse_ciphertext(blob)
        if key_id != self._key_id:
            raise UserError("this ciphertext was encrypted under a different study key")
        try:
            plain = np.concatenate(
                [np.asarray(ts.ckks_vector_from(self._context, c).decrypt()) for c in chunks]
            )
        except (ValueError, RuntimeError, TypeError) as exc:
            raise UserError(f"ciphertext does not decrypt under this study key: {exc}") from exc
        if plain.size != len(chunks) * SLOTS:
            raise UserError("ciphertext chunks do not hold the expected number of slots")
        return _from_limbs(plain, n, summands)

    def aead_key(self, purpose: str) -> bytes:
        """32 bytes for messages between members that the coordinator relays but cannot read."""
        return _derive(self._material, b"scifed-study-aead-v1\0" + purpose.encode(), 32)


def sum_ciphertexts(public_context: bytes, blobs: list[bytes]) -> bytes:
    """Coordinator side: add one study's blobs with its public context, in place, per chunk."""
    key_id, context = _public_context(public_context)
    if not blobs:
        raise UserError("nothing to sum: no ciphertexts given")
    parsed = [_parse_ciphertext(blob) for blob in blobs]
    lengths = {n for _, n, _, _ in parsed}
    if len(lengths) != 1:
        raise UserError(f"ciphertexts hold vectors of different lengths {sorted(lengths)}")
    if any(blob_key != key_id for blob_key, _, _, _ in parsed):
        raise UserError("a ciphertext was encrypted under a different study key")
    summands = sum(count for _, _, count, _ in parsed)
    if summands > MAX_SUMMANDS:
        raise UserError(
            f"refusing to sum {summands} contributions; precision is only guaranteed up to "
            f"{MAX_SUMMANDS}"
        )
    total: list[ts.CKKSVector] = []
    for index, (_, _, _, chunks) in enumerate(parsed):
        for j, chunk in enumerate(chunks):
            vector = _load_chunk(context, chunk, index)
            if index == 0:
                total.append(vector)
                continue
            try:
                total[j].add_(vector)
            except (ValueError, RuntimeError) as exc:
                raise UserError(f"ciphertext {index} cannot be added: {exc}") from exc
    return _frame_ciphertext(key_id, lengths.pop(), summands, [v.serialize() for v in total])


def context_is_private(data: bytes) -> bool:
    """True if ``data`` deserialises to a TenSEAL context (framed or raw) holding a secret key."""
    if data[: len(_CONTEXT_MAGIC)] == _CONTEXT_MAGIC:
        data = data[_CONTEXT_HEADER.size :]
    try:
        return ts.context_from(data, n_threads=1).is_private()
    except (ValueError, RuntimeError, TypeError):
        return False


def seal_box(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """ChaCha20-Poly1305 with a random nonce; returns nonce || ciphertext."""
    nonce = os.urandom(_NONCE_BYTES)
    return nonce + ChaCha20Poly1305(key).encrypt(nonce, plaintext, aad)


def open_box(key: bytes, blob: bytes, aad: bytes) -> bytes:
    """Open :func:`seal_box` output; a wrong key, AAD or any tampering is a UserError."""
    try:
        return ChaCha20Poly1305(key).decrypt(blob[:_NONCE_BYTES], blob[_NONCE_BYTES:], aad)
    except (InvalidTag, ValueError) as exc:
        raise UserError("sealed box could not be authenticated") from exc


def _derive(material: bytes, info: bytes, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(material)


def _to_limbs(values: np.ndarray) -> np.ndarray:
    """(LIMBS, n) signed base-2^30 digits of round(x * 2^28); every step is exact in float64."""
    rest = np.rint(np.ldexp(values, FRACTION_BITS))
    limbs = np.empty((LIMBS, values.size))
    for k in range(LIMBS - 1):
        high = np.rint(np.ldexp(rest, -LIMB_BITS))
        limbs[k] = rest - np.ldexp(high, LIMB_BITS)
        rest = high
    limbs[-1] = rest
    return limbs


def _from_limbs(plain: np.ndarray, n: int, summands: int) -> np.ndarray:
    """Round limb sums to integers, propagate carries, rebuild float64 values."""
    rounded = np.rint(plain)
    if np.max(np.abs(plain - rounded), initial=0.0) > _ROUNDING_SLACK or np.any(
        rounded[LIMBS * n :]
    ):
        raise UserError(
            "decrypted values are not limb sums: the ciphertext is corrupt or was made "
            "under another study key"
        )
    bound = summands * (2 ** (LIMB_BITS - 1) + 1)
    if np.max(np.abs(rounded), initial=0.0) > bound:
        raise UserError("decrypted limb sums exceed what the recorded summands allow")
    limbs = rounded[: LIMBS * n].astype(np.int64).reshape(LIMBS, n)
    for k in range(LIMBS - 1):
        carry = (limbs[k] + (1 << (LIMB_BITS - 1))) >> LIMB_BITS
        limbs[k] -= carry << LIMB_BITS
        limbs[k + 1] += carry
    value = np.zeros(n)
    for k in reversed(range(LIMBS)):
        value = np.ldexp(value, LIMB_BITS) + limbs[k]
    return np.ldexp(value, -FRACTION_BITS)


def _frame_ciphertext(key_id: bytes, n: int, summands: int, chunks: list[bytes]) -> bytes:
    header = _CIPHERTEXT_HEADER.pack(_CIPHERTEXT_MAGIC, _VERSION, key_id, n, summands, len(chunks))
    sizes = np.array([len(c) for c in chunks], dtype="<u4").tobytes()
    return b"".join([header, sizes, *chunks])


def _parse_ciphertext(blob: bytes) -> tuple[bytes, int, int, list[bytes]]:
    """Split a framed blob into (key id, length, summands, chunk bytes), checking the frame."""
    if len(blob) < _CIPHERTEXT_HEADER.size:
        raise UserError("not a scifed ciphertext: too short")
    magic, version, key_id, n, summands, n_chunks = _CIPHERTEXT_HEADER.unpack_from(blob)
    if magic != _CIPHERTEXT_MAGIC:
        raise UserError("not a scifed ciphertext: bad magic")
    if version != _VERSION:
        raise UserError(f"unsupported ciphertext version {version}")
    if n < 1 or n_chunks != -(-LIMBS * n // SLOTS) or not 1 <= summands <= MAX_SUMMANDS:
        raise UserError("ciphertext header is inconsistent (length, chunks or summands)")
    start = _CIPHERTEXT_HEADER.size + 4 * n_chunks
    if len(blob) < start:
        raise UserError("ciphertext is truncated")
    sizes = np.frombuffer(blob, dtype="<u4", count=n_chunks, offset=_CIPHERTEXT_HEADER.size)
    ends = start + np.cumsum(sizes, dtype=np.int64)
    if ends[-1] != len(blob):
        raise UserError("ciphertext length does not match its chunk table")
    starts = [start, *ends[:-1].tolist()]
    return key_id, n, summands, [blob[a:b] for a, b in zip(starts, ends.tolist(), strict=True)]


def _parse_context(data: bytes) -> tuple[int, bytes, ts.Context]:
    """Read a framed context: (public or secret, key id, TenSEAL context with our parameters)."""
    if len(data) < _CONTEXT_HEADER.size:
        raise UserError("not a scifed study context: too short")
    magic, version, kind, key_id = _CONTEXT_HEADER.unpack_from(data)
    if magic != _CONTEXT_MAGIC or kind not in (_PUBLIC, _SECRET):
        raise UserError("not a scifed study context: bad header")
    if version != _VERSION:
        raise UserError(f"unsupported study context version {version}")
    try:
        context = ts.context_from(data[_CONTEXT_HEADER.size :], n_threads=1)
    except (ValueError, RuntimeError, TypeError) as exc:
        raise UserError(f"study context does not deserialise: {exc}") from exc
    seal = context.seal_context().data
    first = seal.first_context_data()
    if (
        first.parms().scheme() != ts.SCHEME_TYPE.CKKS.value
        or first.parms().poly_modulus_degree() != POLY_MODULUS_DEGREE
        or first.total_coeff_modulus_bit_count() != COEFF_MOD_BIT_SIZES[0]
        or seal.key_context_data().total_coeff_modulus_bit_count() != sum(COEFF_MOD_BIT_SIZES)
        or context.global_scale != 2.0**SCALE_BITS
    ):
        raise UserError("study context does not use scifed's CKKS parameters")
    return kind, key_id, context


@functools.lru_cache(maxsize=32)
def _public_context(data: bytes) -> tuple[bytes, ts.Context]:
    """(key id, context) of a public context; cached because building one costs ~15 ms and the
    coordinator sums for the same study again and again. Secret contexts are never cached."""
    kind, key_id, context = _parse_context(data)
    if kind != _PUBLIC:
        raise UserError("the coordinator sums with a study's public context, not its secret key")
    return key_id, context


def _load_chunk(context: ts.Context, chunk: bytes, index: int) -> ts.CKKSVector:
    """Deserialise one chunk of contribution ``index`` and check its slot count."""
    try:
        vector = ts.ckks_vector_from(context, chunk)
    except (ValueError, RuntimeError, TypeError) as exc:
        raise UserError(f"ciphertext {index} is no CKKS ciphertext of this study: {exc}") from exc
    if vector.size() != SLOTS:
        raise UserError(f"ciphertext {index} has a chunk of {vector.size()} slots, not {SLOTS}")
    return vector


def seal_for_members(key: StudyKey, purpose: str, job_id: str, value: object) -> bytes:
    """JSON ``value`` sealed so that only study members can open it (the coordinator
    relays it): a node's categories, a release node's state, a round's query."""
    return seal_box(key.aead_key(purpose), json.dumps(value).encode(), job_id.encode())


def open_for_members(key: StudyKey, purpose: str, job_id: str, blob: bytes) -> Any:
    """Open :func:`seal_for_members` output of the same purpose and job."""
    return json.loads(open_box(key.aead_key(purpose), blob, job_id.encode()))
