"""Study keys and encrypted aggregation: BFV through SEAL, additions only, exact sums.

Members of a study share one BFV secret key (made by a lead node); the coordinator holds
only the encryption parameters and adds ciphertexts. Numbers are measurements of this
module on the project's machines (`make bench` prints them beside their baselines).

Parameters. N = 4096 slots, one 60-bit ciphertext prime (SEAL's TC128 bound for N = 4096
is 109 bits; a single prime needs no key switching, and nothing here multiplies), plain
modulus t = the largest 40-bit prime ≡ 1 (mod 2N) (SEAL's ``PlainModulus.Batching``), so
that every slot holds an integer mod t. A fresh ciphertext keeps ~15 bits of noise budget;
adding K of them spends log2(K) bits, so sums of up to ``MAX_SUMMANDS`` = 2048 keep at
least 4 (measured: 5 bits left after 1,001 additions; every slot exact). Sums of more are
refused before they are formed, not found wrong after.

Why SEAL through ``tenseal.sealapi`` and not TenSEAL's vectors. TenSEAL's high-level API
always wants a special prime for key switching ([60, 49] at least: 2 words per slot) and
never saves seeded ciphertexts. Encryption here is *symmetric and seeded*: every member
holds the secret key anyway (docs/architecture.md, trust model), and SEAL then sends the
second polynomial as a 64-byte PRNG seed, so a contribution costs one 60-bit word per slot
instead of two; the coordinator's ``load`` expands the seed without any key. The wire
keeps each word in 60 bits (format 3; format 2, SEAL's own 64-bit serialisation, is
refused by name): 7.5 B per slot and 64 B of seed per 4096 slots, i.e. 3.76 B per
parameter with two lanes. A sum is kept whole (15 B per slot) and travels only to the
member that decrypts it. The bindings read and write SEAL objects through file paths
only, so (de)serialisation goes through a private scratch file on tmpfs (``_Scratch``).

Two encodings share the frame (both are integers mod t per slot, so masks under the
encryption, :mod:`scifed.masks`, work for either):

* *exact* (statistics): x (|x| <= 2^60) becomes round(x * 2^28), split into 4 signed
  base-2^24 limbs (|limb| <= 2^23), one per slot. A sum of K <= 2048 limbs stays within
  2^34 < t/2, so the centred residue is the limb sum itself; carries then rebuild the value
  exactly on the 2^-28 grid (counts exact; the error of any sum is the input rounding,
  <= K * 2^-29, plus at most one float64 rounding). 30 B per value, against 96 B for the
  earlier CKKS limbs.
* *quantised* (model updates): x in [-B, B] becomes an unsigned level in [0, top] by
  stochastic rounding (unbiased: E[level] is exact), and two levels share one slot in
  20-bit lanes when the job has at most 16 contributors, one level per slot for up to
  2048. ``top`` is as fine as the capacity allows without a lane carrying into the next
  (:func:`top_level`): 2^16 - 1 for 16 contributors, 104,857 for 10 (measured: max error
  1.3e-4 on sums of 10 values in [-1, 1] over 10^6 slots, mean error 0 within 1e-7). With
  two lanes a parameter costs 3.76 B on the wire, under float32's 4.

A frame records its encoding, length, how many ciphertexts it sums and how many it may
(its capacity); the coordinator refuses to add frames that differ in any of these, or to
exceed the capacity, and decryption refuses residues that the recorded summands could not
have made (a wrong key or a corrupted ciphertext decrypts to values spread over [0, t)).

Chunks in parallel. A vector is encrypted and decrypted chunk by chunk (one ciphertext per
4096 slots), and chunks are independent, so a long vector's chunks are spread over
``WORKERS`` = min(4, cores) processes: this one and spawned pool processes, each with its
own SEAL objects, results back in chunk order. Processes, not threads: the
``tenseal.sealapi`` bindings hold the GIL in every SEAL call (measured: two threads
encrypting keep CPU/wall at 0.86, one core), and TenSEAL's ``n_threads`` does not
parallelise these calls either (1.00-1.03x measured). A pool process gets the secret key
through its pipe from this process (same host and account; it is never written to disk).
Within a process each thread has its own encoder, encryptor and decryptor (SEAL documents
none as thread-safe), so concurrent jobs need no lock.

The coordinator's sum. Adding ciphertexts is adding their words mod q, so the coordinator
adds every word the blobs carry (each contribution's first polynomial, a sum's both) in
numpy, all chunks of a party at once, and checks each word is below q as SEAL's ``load``
would. What numpy cannot do is a contribution's second polynomial: it exists only as a
seed, and SEAL expands it with Blake2xb, one Python call per 64-byte block outside SEAL
(``Blake2xbPRNG.generate`` returns one integer per call). So SEAL loads, per chunk and
party, a seeded chunk with a zero first polynomial and that party's seed (only the 64
seed bytes are rewritten in a scratch file kept for it), adds the expansions
(``add_many``) and saves their sum once per chunk. That expansion is most of the sum's
cost and the one part that cannot shrink (measured: ~70 % of the sum's CPU time; hashing
the same bytes with CPython's Blake2b alone costs a quarter of SEAL's load). It is also
what parallelises well: a pool process needs only the seeds, 64 B per chunk and party,
where shipping whole chunks cost about what adding them saved; this process adds the
words while the pool expands. The result is word for word SEAL's own sum.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import multiprocessing
import multiprocessing.util
import os
import struct
import tempfile
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import tenseal.sealapi as seal
import zstandard
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from scifed.errors import UserError

POLY_MODULUS_DEGREE = 4096
SLOTS = POLY_MODULUS_DEGREE
CIPHERTEXT_PRIME_BITS = 60
PLAIN_MODULUS_BITS = 40
MAX_SUMMANDS = 2048
MAX_ABS_VALUE = 2.0**60
FRACTION_BITS = 28
LIMB_BITS = 24
LIMBS = 4
LANE_BITS = 20
MAX_TWO_LANE_SUMMANDS = 16  # 16 parties at 16-bit levels fill a 20-bit lane

EXACT, QUANTISED = 0, 1
_KEY_ID_BYTES = 16
_CONTEXT_MAGIC = b"SFHK"
_CIPHERTEXT_MAGIC = b"SFHC"
_VERSION = 2  # study contexts (keys)
_CIPHERTEXT_VERSION = 3  # 60-bit words on the wire; 2 kept SEAL's own 64-bit serialisation
_PUBLIC, _SECRET = 0, 1
_CONTEXT_HEADER = struct.Struct(f"<4sBB{_KEY_ID_BYTES}s")
# magic, version, key id, encoding, lanes, values, summands, capacity, chunks, bound, seeded
_CIPHERTEXT_HEADER = struct.Struct(f"<4sB{_KEY_ID_BYTES}sBBQIIIdB")
_NONCE_BYTES = 12
# cores this process may run on (its affinity mask, e.g. a container's or taskset's)
WORKERS = min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
              else os.cpu_count() or 1)
log = logging.getLogger("scifed.he")
PARALLEL_MIN_CHUNKS = 16  # 64k slots: below this, one process is quicker
_T = TypeVar("_T")
_R = TypeVar("_R")


@functools.lru_cache(maxsize=1)
def _parameters() -> seal.EncryptionParameters:
    params = seal.EncryptionParameters(seal.SCHEME_TYPE.BFV)
    params.set_poly_modulus_degree(POLY_MODULUS_DEGREE)
    params.set_coeff_modulus(seal.CoeffModulus.Create(POLY_MODULUS_DEGREE,
                                                      [CIPHERTEXT_PRIME_BITS]))
    params.set_plain_modulus(seal.PlainModulus.Batching(POLY_MODULUS_DEGREE,
                                                        PLAIN_MODULUS_BITS))
    return params


@functools.lru_cache(maxsize=1)
def _context() -> seal.SEALContext:
    context = seal.SEALContext(_parameters(), False, seal.SEC_LEVEL_TYPE.TC128)
    if not context.parameters_set():  # pragma: no cover - fixed parameters
        raise RuntimeError(context.parameters_error_message())
    return context


PLAIN_MODULUS = _parameters().plain_modulus().value()
_Q = _parameters().coeff_modulus()[0].value()  # the ciphertext prime
_context()  # made once, here, before two threads could race to make it
_HALF = PLAIN_MODULUS // 2


class _Scratch:
    """SEAL's Python bindings save and load through file paths only: one private file per
    thread on tmpfs (0600, removed at exit), reused for every ciphertext and kept open, so
    that moving a ciphertext's bytes in or out is one ``pwrite`` or ``pread``, not an open
    and a close. Secret keys go through a fresh file of their own, removed as soon as it
    is read."""

    _local = threading.local()
    _dir = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None

    @classmethod
    def _file(cls, name: str = "file", image: bytes = b"") -> tuple[str, int]:
        """This thread's scratch file ``name``, made on first use holding ``image``."""
        file = getattr(cls._local, name, None)
        if file is None:
            fd, path = tempfile.mkstemp(prefix="scifed-he-", dir=cls._dir)
            os.pwrite(fd, image, 0)
            file = (path, fd)
            setattr(cls._local, name, file)
            _SCRATCH_FILES.append(path)
        return file

    @classmethod
    def dump(cls, obj: Any) -> bytes:
        path, fd = cls._file()
        obj.save(path)  # SEAL truncates and rewrites the same file
        return os.pread(fd, os.fstat(fd).st_size, 0)

    @classmethod
    def load(cls, obj: Any, data: bytes) -> Any:
        path, fd = cls._file()
        os.pwrite(fd, data, 0)
        if os.fstat(fd).st_size != len(data):
            os.ftruncate(fd, len(data))
        obj.load(_context(), path)
        return obj

    @classmethod
    def expand(cls, seed: bytes) -> seal.Ciphertext:
        """The ciphertext (0, c1) whose second polynomial SEAL expands from ``seed`` as it
        loads it: this thread's second file holds a seeded chunk with a zero first
        polynomial, and only its last 64 bytes, the seed, are written per call."""
        image = _seeded_image()
        path, fd = cls._file("seeded", image)
        os.pwrite(fd, seed, len(image) - _SEED_BYTES)
        cipher = seal.Ciphertext()
        cipher.load(_context(), path)
        return cipher

    @classmethod
    def once(cls, action, data: bytes | None = None) -> bytes:
        """Run ``action(path)`` on a fresh private file (holding ``data`` first, if given)
        and return what the file holds afterwards; the file is removed either way."""
        fd, path = tempfile.mkstemp(prefix="scifed-key-", dir=cls._dir)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data or b"")
            action(path)
            return Path(path).read_bytes()
        finally:
            os.unlink(path)


_SCRATCH_FILES: list[str] = []


def _remove_scratch() -> None:
    for path in _SCRATCH_FILES:
        try:
            os.unlink(path)
        except OSError:
            pass


import atexit  # noqa: E402 - beside the one thing it is for

atexit.register(_remove_scratch)

# The wire. SEAL serialises a ciphertext as its own header, some metadata, then its
# polynomials as 64-bit words, compressed with zstd (the bindings cannot turn that off);
# a seeded ciphertext carries the first polynomial and, for the second, the 64-byte seed
# of the Blake2xb generator SEAL expands it from. Every word is below the 60-bit prime q,
# so scifed's frame keeps just the words, 60 bits each, and the seed: 3.76 B per
# parameter for two lanes instead of SEAL's 4.06 (its 64-bit words after zstd, which
# finds almost nothing to take out of uniform words). SEAL's framing around the words is
# fixed for fixed parameters: it is learnt once from SEAL itself (:func:`_seal_layout`)
# and put back around the words before SEAL loads them, uncompressed.
_POLY_BYTES = SLOTS * CIPHERTEXT_PRIME_BITS // 8  # one polynomial on the wire: 30,720 B
_SEED_BYTES = 64
_SEEDED_CHUNK = _POLY_BYTES + _SEED_BYTES  # a contribution's chunk: c0 and the seed of c1
_FULL_CHUNK = 2 * _POLY_BYTES  # a sum's chunk: both polynomials
_SEAL_HEADER = struct.Struct("<HBBBBHQ")  # magic, its size, version, compression, size
_SEAL_MAGIC = 0xA15E
_ZSTD, _NONE = seal.COMPR_MODE_TYPE.ZSTD.value, seal.COMPR_MODE_TYPE.NONE.value
_inflaters = threading.local()


def _seal_body(data: bytes) -> bytes:
    """What follows SEAL's header in ``data`` (one saved object), uncompressed."""
    magic, size, major, minor, mode, _, total = _SEAL_HEADER.unpack_from(data)
    if magic != _SEAL_MAGIC or size != _SEAL_HEADER.size or total != len(data):
        raise RuntimeError("SEAL wrote bytes this module cannot read")  # pragma: no cover
    if mode == _NONE:
        return data[size:]
    if mode != _ZSTD:  # pragma: no cover - the wheel's SEAL compresses with zstd
        raise RuntimeError(f"SEAL compressed with mode {mode}, which this module cannot read")
    inflater = getattr(_inflaters, "zstd", None)
    if inflater is None:  # zstandard's objects are not thread-safe: one per thread
        inflater = _inflaters.zstd = zstandard.ZstdDecompressor()
    return inflater.decompress(data[size:], max_output_size=2 * 8 * SLOTS + 4096)


@dataclass(frozen=True)
class _Layout:
    """SEAL's bytes around a ciphertext's words, for these parameters."""

    header: bytes  # the outer header's first 8 bytes, for uncompressed data
    head: bytes  # metadata before the words of a full ciphertext (both polynomials)
    seeded_head: bytes  # the same for a seeded one (its first polynomial only)
    seed_head: bytes  # what comes between a seeded ciphertext's words and its seed


@functools.lru_cache(maxsize=1)
def _seal_layout() -> _Layout:
    """Learn SEAL's layout from one seeded and one full ciphertext under a throwaway key
    (the bytes depend only on the parameters), and check it is the one expected."""
    context = _context()
    plain = seal.Plaintext()
    seal.BatchEncoder(context).encode([0] * SLOTS, plain)
    encryptor = seal.Encryptor(context, seal.KeyGenerator(context).secret_key())
    full = seal.Ciphertext()
    encryptor.encrypt_symmetric(plain, full)
    saved = _Scratch.dump(full)
    full_body = _seal_body(saved)
    seeded_body = _seal_body(_Scratch.dump(encryptor.encrypt_symmetric(plain)))
    words = 8 * SLOTS
    head = len(full_body) - 2 * words
    tail = len(seeded_body) - head - words - _SEED_BYTES
    if head <= 0 or tail <= 0:  # pragma: no cover - a SEAL with another layout
        raise RuntimeError("SEAL's ciphertext layout is not the one this module knows")
    header = bytearray(saved[:8])
    header[5] = _NONE
    return _Layout(bytes(header), full_body[:head], seeded_body[:head],
                   seeded_body[head + words : head + words + tail])


def _from_seal_seeded(data: bytes) -> tuple[np.ndarray, bytes]:
    """A saved seeded ciphertext's first polynomial and seed."""
    layout, body = _seal_layout(), _seal_body(data)
    start = len(layout.seeded_head)
    end = start + 8 * SLOTS
    if (len(body) != end + len(layout.seed_head) + _SEED_BYTES
            or body[:start] != layout.seeded_head
            or body[end : end + len(layout.seed_head)] != layout.seed_head):
        raise RuntimeError("SEAL saved a seeded ciphertext in another layout")  # pragma: no cover
    return np.frombuffer(body, dtype="<u8", count=SLOTS, offset=start), body[-_SEED_BYTES:]


def _from_seal_full(data: bytes) -> np.ndarray:
    """A saved full ciphertext's two polynomials, (2, SLOTS)."""
    layout, body = _seal_layout(), _seal_body(data)
    start = len(layout.head)
    if len(body) != start + 16 * SLOTS or body[:start] != layout.head:
        raise RuntimeError("SEAL saved a ciphertext in another layout")  # pragma: no cover
    return np.frombuffer(body, dtype="<u8", count=2 * SLOTS, offset=start).reshape(2, SLOTS)


def _to_seal(words: np.ndarray, seed: bytes | None) -> bytes:
    """SEAL's uncompressed serialisation of a ciphertext: a seeded one from its first
    polynomial and seed, or a full one from both polynomials (``words`` of shape (2, N))."""
    layout = _seal_layout()
    if seed is None:
        parts = [layout.head, words.astype("<u8", copy=False).tobytes()]
    else:
        parts = [layout.seeded_head, words.astype("<u8", copy=False).tobytes(),
                 layout.seed_head, seed]
    size = _SEAL_HEADER.size + sum(len(part) for part in parts)
    return b"".join([layout.header, struct.pack("<Q", size), *parts])


@functools.lru_cache(maxsize=1)
def _seeded_image() -> bytes:
    """SEAL's serialisation of a seeded chunk whose first polynomial is zero (the seed
    last): what :meth:`_Scratch.expand` loads to have SEAL expand a seed alone."""
    return _to_seal(np.zeros(SLOTS, dtype=np.uint64), bytes(_SEED_BYTES))


def _add_mod_q(total: np.ndarray, words: np.ndarray) -> None:
    """``total += words`` mod q in place, both below q < 2^60 (so the sum cannot wrap):
    where the sum is below q, subtracting q wraps to a larger number, so the minimum of
    the two is the reduced sum. SEAL's addition of ciphertexts is exactly this."""
    total += words
    np.minimum(total, total - np.uint64(_Q), out=total)


def _pack60(words: np.ndarray) -> bytes:
    """Rows of N words below 2^60 as 60 bits each: two words in 15 bytes, little-endian."""
    pairs = np.ascontiguousarray(words, dtype=np.uint64).reshape(-1, 2)
    low = pairs[:, 0] | (pairs[:, 1] << np.uint64(60))
    high = pairs[:, 1] >> np.uint64(4)
    out = np.empty((pairs.shape[0], 15), dtype=np.uint8)
    out[:, :8] = low.astype("<u8").view(np.uint8).reshape(-1, 8)
    out[:, 8:] = high.astype("<u8").view(np.uint8).reshape(-1, 8)[:, :7]
    return out.tobytes()


def _unpack60(data: bytes | np.ndarray, rows: int, offset: int = 0,
              stride: int = _POLY_BYTES) -> np.ndarray:
    """:func:`_pack60` undone: (rows, N) words from ``rows`` runs of 30,720 bytes that
    start ``stride`` bytes apart from ``offset``. Read in place: each 15-byte pair is
    two overlapping unaligned 8-byte loads (bytes 0-7 and 7-14), no copy of the wire."""
    buffer = data if isinstance(data, bytes) else np.ascontiguousarray(data)
    shape, strides = (rows, SLOTS // 2), (stride, 15)
    low = np.ndarray(shape, dtype="<u8", buffer=buffer, offset=offset, strides=strides)
    high = np.ndarray(shape, dtype="<u8", buffer=buffer, offset=offset + 7, strides=strides)
    out = np.empty((rows, SLOTS // 2, 2), dtype=np.uint64)
    np.bitwise_and(low, np.uint64((1 << 60) - 1), out=out[:, :, 0])
    out[:, :, 1] = (low >> np.uint64(60)) | ((high >> np.uint64(8)) << np.uint64(4))
    return out.reshape(rows, SLOTS)


_pool: tuple[int, ProcessPoolExecutor] | None = None  # (workers it serves, the pool)
_pool_lock = threading.Lock()


def _process_pool() -> ProcessPoolExecutor:
    """The chunk pool: ``WORKERS - 1`` spawned processes (the caller's own process takes
    one share). Spawned, not forked: nodes and the coordinator run gRPC threads, which a
    fork would copy mid-flight."""
    global _pool
    with _pool_lock:
        if _pool is None or _pool[0] != WORKERS:  # first use, or resized by workers()
            if _pool is not None:
                _pool[1].shutdown(wait=False)
            context = multiprocessing.get_context("spawn")
            _pool = (WORKERS, ProcessPoolExecutor(WORKERS - 1, mp_context=context,
                                                  initializer=_pool_process_started))
        return _pool[1]


def _spread(work: Callable[[Any, list[_T]], list[_R]], items: list[_T], here: Any = None,
            there: Any = None, meanwhile: Callable[[], object] | None = None) -> list[_R]:
    """``work(here, items)`` split into ``WORKERS`` contiguous runs, the first in this
    process and the others on the pool as ``work(there, run)`` (``there``: what a pool
    process needs instead of ``here``, e.g. a key's material for the key), concatenated
    back in chunk order; ``meanwhile()`` runs in this process while the pool starts on
    its runs (or first, without the pool). Vectors of fewer than ``PARALLEL_MIN_CHUNKS``
    chunks stay in this process: shipping them costs more than it saves."""
    if WORKERS <= 1 or len(items) < PARALLEL_MIN_CHUNKS:
        if meanwhile is not None:
            meanwhile()
        return work(here, items)
    size = -(-len(items) // WORKERS)
    runs = [items[i : i + size] for i in range(0, len(items), size)]
    pool = _process_pool()
    try:
        futures = [pool.submit(work, there, run) for run in runs[1:]]
        try:
            if meanwhile is not None:
                meanwhile()
                meanwhile = None  # done: not again if the pool breaks below
            first = work(here, runs[0])
        finally:
            rest = [future.result() for future in futures]
    except BrokenProcessPool:  # a pool process died (killed, out of memory): start afresh
        _drop_pool(pool)
        log.warning("the HE chunk pool lost a process; this vector is done in one process")
        if meanwhile is not None:
            meanwhile()
        return work(here, items)
    return [*first, *(item for run in rest for item in run)]


def _drop_pool(pool: ProcessPoolExecutor) -> None:
    global _pool
    with _pool_lock:
        if _pool is not None and _pool[1] is pool:
            _pool = None
    pool.shutdown(wait=False, cancel_futures=True)


@contextlib.contextmanager
def workers(count: int) -> Iterator[None]:
    """Spread chunks over ``count`` processes inside the block (1: the single-process
    baseline the benchmark measures beside the pool)."""
    global WORKERS
    if count < 1:
        raise UserError(f"the chunk pool needs at least one worker, not {count}")
    before, WORKERS = WORKERS, count
    try:
        yield
    finally:
        WORKERS = before


def _pool_process_started() -> None:
    """A pool process leaves through ``os._exit`` (no atexit): remove its scratch file
    with multiprocessing's own exit hook."""
    multiprocessing.util.Finalize(None, _remove_scratch, exitpriority=0)


@functools.lru_cache(maxsize=4)
def _key_of(material: bytes) -> StudyKey:
    """A pool process's copy of a study key (made once per key and process)."""
    return StudyKey(_load_secret(material), material)


def _encrypt_rows(key: StudyKey | bytes, rows: list[np.ndarray]
                  ) -> list[tuple[np.ndarray, bytes]]:
    """Encrypt slot rows to (first polynomial, seed) each (in a pool process, ``key`` is
    the secret's material)."""
    key = key if isinstance(key, StudyKey) else _key_of(key)
    return [key._encrypt_chunk(row) for row in rows]  # noqa: SLF001 - this module's key


def _expand_sums(_: None, seeds: list[list[bytes]]) -> list[np.ndarray]:
    """Per chunk, the sum mod q of the second polynomials SEAL expands from its seeds
    (one per seeded contribution). Seeds are public: any process may do this."""
    evaluator = _evaluator()
    sums = []
    for chunk in seeds:
        total = seal.Ciphertext()
        evaluator.add_many([_Scratch.expand(seed) for seed in chunk], total)
        sums.append(_from_seal_full(_Scratch.dump(total))[1])
    return sums


def _decrypt_chunks(key: StudyKey | bytes, chunks: list[tuple[int, bytes]]
                    ) -> list[np.ndarray]:
    """Decrypt numbered chunks (SEAL's serialisation, :func:`_seal_chunks`) to slot
    residues (as :func:`_encrypt_rows`)."""
    key = key if isinstance(key, StudyKey) else _key_of(key)
    return [key._decrypt_chunk(item) for item in chunks]  # noqa: SLF001 - this module's key


class _Tools(threading.local):
    """One thread's SEAL objects for one study key (created on first use in that thread)."""

    def __init__(self, secret: seal.SecretKey) -> None:
        context = _context()
        self.encoder = seal.BatchEncoder(context)
        self.encryptor = seal.Encryptor(context, secret)
        self.decryptor = seal.Decryptor(context, secret)


_evaluators = threading.local()


@dataclass(frozen=True)
class Frame:
    """What a ciphertext blob says of itself (see the module docstring)."""

    key_id: bytes
    encoding: int
    lanes: int
    n: int
    summands: int
    capacity: int
    bound: float
    chunks: list[bytes]  # per chunk: c0 in 60-bit words, then c1's seed (seeded) or c1
    seeded: bool = False  # one contribution as encrypted, not a sum

    @property
    def slots(self) -> int:
        return slots_for(self.encoding, self.n, self.lanes)


def slots_for(encoding: int, n: int, lanes: int = 1) -> int:
    """How many slots a vector of ``n`` values takes (the masks cover exactly these)."""
    return LIMBS * n if encoding == EXACT else -(-n // lanes)


def lanes_for(capacity: int) -> int:
    """Levels per slot for a quantised vector that at most ``capacity`` parties sum."""
    _check_capacity(capacity)
    return 2 if capacity <= MAX_TWO_LANE_SUMMANDS else 1


def top_level(capacity: int) -> int:
    """The highest quantisation level: as fine as the lanes allow for ``capacity``
    summands (at least 2^16 - 1). Two lanes hold sums high * 2^20 + low < t only while
    each lane's sum stays <= (t - 1) // (2^20 + 1) = 1,048,574; one lane holds 24 bits."""
    if lanes_for(capacity) == 2:
        return ((PLAIN_MODULUS - 1) // ((1 << LANE_BITS) + 1)) // capacity
    return min((PLAIN_MODULUS - 1) // capacity, (1 << 24) - 1)


class StudyKey:
    """A study's BFV secret key, held only by member nodes."""

    def __init__(self, secret: seal.SecretKey, material: bytes) -> None:
        self._secret = secret
        self._material = material
        self._key_id = _derive(material, b"scifed-study-key-id-v2", _KEY_ID_BYTES)
        self._tools = _Tools(secret)

    @classmethod
    def generate(cls) -> StudyKey:
        """Make a fresh study key (the lead node does this once per study)."""
        secret = seal.KeyGenerator(_context()).secret_key()
        return cls(secret, _Scratch.once(secret.save))

    @classmethod
    def from_secret_bytes(cls, data: bytes) -> StudyKey:
        """Load what :meth:`secret_bytes` wrote; refuse anything else."""
        kind, key_id, body = _parse_context(data)
        if kind != _SECRET:
            raise UserError("these bytes are a study's public context, not its secret key")
        secret = _load_secret(body)
        key = cls(secret, body)
        if key._key_id != key_id:
            raise UserError("study key is corrupt: its key id does not match its secret")
        return key

    @property
    def key_id(self) -> bytes:
        """16 bytes derived from the secret; every ciphertext and the public context carry
        it (the lead signs it, so a member can tell the lead's key from another)."""
        return self._key_id

    def secret_bytes(self) -> bytes:
        """The secret key; seal it before it leaves the node."""
        header = _CONTEXT_HEADER.pack(_CONTEXT_MAGIC, _VERSION, _SECRET, self._key_id)
        return header + self._material

    def public_bytes(self) -> bytes:
        """Parameters and key id only: enough for the coordinator to add ciphertexts."""
        header = _CONTEXT_HEADER.pack(_CONTEXT_MAGIC, _VERSION, _PUBLIC, self._key_id)
        return header + _public_body()

    def encrypt(self, values: np.ndarray, *, mask: np.ndarray | None = None,
                capacity: int = MAX_SUMMANDS) -> bytes:
        """Encrypt a 1-D float vector (|x| <= 2^60) exactly (limbs); ``mask``: residues mod t
        to add to its slots (:mod:`scifed.masks`), which cancel only in the full sum."""
        array = _finite_vector(values)
        largest = np.max(np.abs(array))
        if largest > MAX_ABS_VALUE:
            raise UserError(f"cannot encrypt values beyond 2^60 in magnitude (got {largest:.3g})")
        _check_capacity(capacity)
        residues = np.mod(_to_limbs(array).ravel(), PLAIN_MODULUS).astype(np.uint64)
        return self._seal(residues, mask, EXACT, 1, array.size, capacity, 0.0)

    def encrypt_quantised(self, values: np.ndarray, *, bound: float, capacity: int,
                          rng: np.random.Generator | None = None,
                          mask: np.ndarray | None = None) -> bytes:
        """Encrypt values in [-bound, bound] as unbiased 16-bit levels (stochastic
        rounding), two per slot where at most 16 parties will sum them."""
        array = _finite_vector(values)
        if not (np.isfinite(bound) and bound > 0):
            raise UserError(f"the quantisation bound must be a positive number, got {bound!r}")
        if np.max(np.abs(array)) > bound:
            raise UserError(f"a value lies outside the quantisation bound ±{bound:g}; "
                            "clip it first")
        lanes, top = lanes_for(capacity), top_level(capacity)
        scaled = (array + bound) * (top / (2.0 * bound))
        floor = np.floor(scaled)
        rng = rng or np.random.default_rng()
        levels = (floor + (rng.random(array.size) < (scaled - floor))).astype(np.uint64)
        np.clip(levels, 0, top, out=levels)
        if lanes == 2:
            padded = np.zeros(2 * slots_for(QUANTISED, array.size, 2), dtype=np.uint64)
            padded[: array.size] = levels
            pairs = padded.reshape(-1, 2)
            levels = pairs[:, 0] | (pairs[:, 1] << np.uint64(LANE_BITS))
        return self._seal(levels, mask, QUANTISED, lanes, array.size, capacity, float(bound))

    def _seal(self, residues: np.ndarray, mask: np.ndarray | None, encoding: int, lanes: int,
              n: int, capacity: int, bound: float) -> bytes:
        if mask is not None:
            if mask.shape != residues.shape:
                raise UserError(f"the mask covers {mask.size} slots, the vector {residues.size}")
            residues = _add_mod(residues, mask)
        rows = [residues[start : start + SLOTS] for start in range(0, residues.size, SLOTS)]
        sealed = _spread(_encrypt_rows, rows, self, self._material)
        body = np.empty((len(sealed), _SEEDED_CHUNK), dtype=np.uint8)
        body[:, :_POLY_BYTES] = np.frombuffer(
            _pack60(np.stack([words for words, _ in sealed])), dtype=np.uint8
        ).reshape(len(sealed), _POLY_BYTES)
        body[:, _POLY_BYTES:] = np.frombuffer(b"".join(seed for _, seed in sealed),
                                              dtype=np.uint8).reshape(len(sealed), -1)
        return _frame(Frame(self._key_id, encoding, lanes, n, 1, capacity, bound,
                            _split(body.tobytes(), _SEEDED_CHUNK), seeded=True))

    def _encrypt_chunk(self, row: np.ndarray) -> tuple[np.ndarray, bytes]:
        tools = self._tools
        plain = seal.Plaintext()
        tools.encoder.encode(row.tolist(), plain)
        return _from_seal_seeded(_Scratch.dump(tools.encryptor.encrypt_symmetric(plain)))

    def _decrypt_chunk(self, item: tuple[int, bytes]) -> np.ndarray:
        index, chunk = item
        tools = self._tools
        cipher = _load_chunk(chunk, index)
        plain = seal.Plaintext()
        try:
            tools.decryptor.decrypt(cipher, plain)
        except (ValueError, RuntimeError) as exc:
            raise UserError(f"ciphertext does not decrypt under this study key: {exc}") from exc
        return np.fromiter(tools.encoder.decode_uint64(plain), dtype=np.uint64, count=SLOTS)

    def decrypt(self, blob: bytes, *, unmask: np.ndarray | None = None) -> np.ndarray:
        """Decrypt a blob (one contribution or a sum) back to float64 of the original
        length; ``unmask``: residues to take off its slots first (revealed self-masks)."""
        frame = _parse_ciphertext(blob)
        if frame.key_id != self._key_id:
            raise UserError("this ciphertext was encrypted under a different study key")
        residues = self.residues(frame)
        if unmask is not None:
            if unmask.shape != residues.shape:
                raise UserError(f"the masks to remove cover {unmask.size} slots, the sum "
                                f"{residues.size}")
            residues = sub_mod(residues, unmask)
        return decode(frame, residues)

    def residues(self, frame: Frame) -> np.ndarray:
        """The slot values mod t of a parsed frame (its used slots only)."""
        plain = np.concatenate(_spread(_decrypt_chunks, list(enumerate(_seal_chunks(frame))),
                                       self, self._material))
        used = frame.slots
        if np.any(plain[used:]):
            raise UserError("decrypted values are not sums of contributions: the ciphertext "
                            "is corrupt or was made under another study key")
        return plain[:used]

    def aead_key(self, purpose: str) -> bytes:
        """32 bytes for messages between members that the coordinator relays but cannot read."""
        return _derive(self._material, b"scifed-study-aead-v1\0" + purpose.encode(), 32)


def decode(frame: Frame, residues: np.ndarray) -> np.ndarray:
    """The values a frame's slot residues (masks removed) stand for, checked against the
    summands it records."""
    if frame.encoding == EXACT:
        return _from_limbs(residues, frame.n, frame.summands)
    return _dequantise(residues, frame)


def parse(blob: bytes) -> Frame:
    """A blob's frame, checked (see :class:`Frame`)."""
    return _parse_ciphertext(blob)


def sum_ciphertexts(public_context: bytes, blobs: list[bytes]) -> bytes:
    """Add one study's blobs with its public context (no key), chunk by chunk."""
    key_id = _public_context(public_context)
    if not blobs:
        raise UserError("nothing to sum: no ciphertexts given")
    frames = [_parse_ciphertext(blob) for blob in blobs]
    first = frames[0]
    shapes = {(f.encoding, f.lanes, f.capacity, f.bound) for f in frames}
    lengths = {f.n for f in frames}
    if len(lengths) != 1:
        raise UserError(f"ciphertexts hold vectors of different lengths {sorted(lengths)}")
    if len(shapes) != 1:
        raise UserError("ciphertexts use different encodings (exact or quantised, lanes, "
                        "capacity or bound)")
    if any(f.key_id != key_id for f in frames):
        raise UserError("a ciphertext was encrypted under a different study key")
    summands = sum(f.summands for f in frames)
    if summands > first.capacity:
        raise UserError(f"refusing to sum {summands} contributions; this encoding is only "
                        f"exact up to {first.capacity}")
    count = len(first.chunks)
    out = np.zeros((count, 2, SLOTS), dtype=np.uint64)

    def add_words() -> None:  # every word the blobs carry, summed mod q in numpy
        for index, (frame, blob) in enumerate(zip(frames, blobs, strict=True)):
            if frame.seeded:  # c0 only: its c1 is the seed's
                words = _unpack60(blob, count, _CIPHERTEXT_HEADER.size, _SEEDED_CHUNK)
            else:
                words = _unpack60(blob, 2 * count, _CIPHERTEXT_HEADER.size)
            if np.max(words, initial=0) >= _Q:  # what SEAL's load would refuse
                raise UserError(f"ciphertext {index} is no BFV ciphertext of this study: "
                                "a word is not below the ciphertext modulus")
            _add_mod_q(out[:, :1] if frame.seeded else out, words.reshape(count, -1, SLOTS))

    seeds = [[bytes(chunk[-_SEED_BYTES:]) for frame in frames if frame.seeded
              for chunk in frame.chunks[j : j + 1]] for j in range(count)]
    if seeds[0]:  # the seeds' c1, expanded by SEAL on the pool while this process adds
        _add_mod_q(out[:, 1], np.stack(_spread(_expand_sums, seeds, meanwhile=add_words)))
    else:
        add_words()
    return _frame(Frame(key_id, first.encoding, first.lanes, first.n, summands,
                        first.capacity, first.bound, _split(_pack60(out), _FULL_CHUNK)))


def subtract_plain(public_context: bytes, blob: bytes, residues: np.ndarray) -> bytes:
    """``blob`` with ``residues`` (mod t, one per used slot) taken off every slot, with the
    public context only: how a sum's revealed self-masks come off before any member
    decrypts it (:mod:`scifed.masks`). Subtracting a plaintext adds no noise."""
    key_id = _public_context(public_context)
    frame = _parse_ciphertext(blob)
    if frame.key_id != key_id:
        raise UserError("the ciphertext was encrypted under a different study key")
    residues = np.asarray(residues, dtype=np.uint64)
    if residues.shape != (frame.slots,) or np.any(residues >= PLAIN_MODULUS):
        raise UserError(f"the masks to take off cover {residues.size} slots, the "
                        f"ciphertext {frame.slots}")
    padded = np.zeros(len(frame.chunks) * SLOTS, dtype=np.uint64)
    padded[: residues.size] = residues
    evaluator, encoder = _evaluator(), _encoder()
    out = np.empty((len(frame.chunks), 2, SLOTS), dtype=np.uint64)
    for j, chunk in enumerate(_seal_chunks(frame)):
        cipher = _load_chunk(chunk, 0)
        plain = seal.Plaintext()
        encoder.encode(padded[j * SLOTS : (j + 1) * SLOTS].tolist(), plain)
        evaluator.sub_plain_inplace(cipher, plain)
        out[j] = _from_seal_full(_Scratch.dump(cipher))
    return _frame(Frame(key_id, frame.encoding, frame.lanes, frame.n, frame.summands,
                        frame.capacity, frame.bound, _split(_pack60(out), _FULL_CHUNK)))


def context_is_private(data: bytes) -> bool:
    """True if ``data`` is a study's secret key, framed or raw SEAL bytes."""
    if data[: len(_CONTEXT_MAGIC)] == _CONTEXT_MAGIC:
        if len(data) >= _CONTEXT_HEADER.size and data[5] == _SECRET:
            return True
        data = data[_CONTEXT_HEADER.size :]
    try:
        _load_secret(data)
    except UserError:
        return False
    return True


def _load_secret(body: bytes) -> seal.SecretKey:
    secret = seal.SecretKey()
    try:
        _Scratch.once(lambda path: secret.load(_context(), path), body)
    except (ValueError, RuntimeError, TypeError) as exc:
        raise UserError(f"study key does not load: {exc}") from exc
    return secret


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


def _finite_vector(values: np.ndarray) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1 or array.size == 0:
        raise UserError(f"can only encrypt a non-empty 1-D vector, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise UserError("cannot encrypt NaN or infinite values")
    return array


def _check_capacity(capacity: int) -> None:
    if not 1 <= capacity <= MAX_SUMMANDS:
        raise UserError(f"an encrypted sum may have 1 to {MAX_SUMMANDS} contributors, "
                        f"not {capacity}")


def _add_mod(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(a + b) mod t for residues below t < 2^40 (no uint64 overflow)."""
    total = a + b
    total[total >= PLAIN_MODULUS] -= np.uint64(PLAIN_MODULUS)
    return total


def sub_mod(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(a - b) mod t for residues below t."""
    return np.where(a >= b, a - b, a + np.uint64(PLAIN_MODULUS) - b)


def _to_limbs(values: np.ndarray) -> np.ndarray:
    """(LIMBS, n) signed base-2^24 digits of round(x * 2^28), as int64 (exact: the integer
    reaches 2^88, so it is split in float64, where every step is exact)."""
    rest = np.rint(np.ldexp(values, FRACTION_BITS))
    limbs = np.empty((LIMBS, values.size), dtype=np.int64)
    for k in range(LIMBS - 1):
        high = np.rint(np.ldexp(rest, -LIMB_BITS))
        limbs[k] = (rest - np.ldexp(high, LIMB_BITS)).astype(np.int64)
        rest = high
    limbs[-1] = rest.astype(np.int64)
    return limbs


def _centred(residues: np.ndarray) -> np.ndarray:
    signed = residues.astype(np.int64)
    return np.where(signed > _HALF, signed - PLAIN_MODULUS, signed)


def _from_limbs(residues: np.ndarray, n: int, summands: int) -> np.ndarray:
    """Centre the limb sums, check them against the summands, carry, rebuild float64."""
    limbs = _centred(residues)
    bound = summands * (2 ** (LIMB_BITS - 1) + 1)
    if np.max(np.abs(limbs), initial=0) > bound:
        raise UserError("decrypted values are not limb sums of the recorded contributions: "
                        "the ciphertext is corrupt, masked, or made under another study key")
    limbs = limbs.reshape(LIMBS, n).copy()
    for k in range(LIMBS - 1):
        carry = (limbs[k] + (1 << (LIMB_BITS - 1))) >> LIMB_BITS
        limbs[k] -= carry << LIMB_BITS
        limbs[k + 1] += carry
    value = np.zeros(n)
    for k in reversed(range(LIMBS)):
        value = np.ldexp(value, LIMB_BITS) + limbs[k]
    return np.ldexp(value, -FRACTION_BITS)


def _dequantise(residues: np.ndarray, frame: Frame) -> np.ndarray:
    top = top_level(frame.capacity)
    if frame.lanes == 2:
        low = residues & np.uint64((1 << LANE_BITS) - 1)
        high = residues >> np.uint64(LANE_BITS)
        levels = np.stack([low, high], axis=1).ravel()[: frame.n]
    else:
        levels = residues
    if np.max(levels, initial=0) > frame.summands * top:
        raise UserError("decrypted values are not sums of quantised levels: the ciphertext "
                        "is corrupt, masked, or made under another study key")
    step = 2.0 * frame.bound / top
    return levels.astype(np.float64) * step - frame.summands * frame.bound


def _frame(frame: Frame) -> bytes:
    header = _CIPHERTEXT_HEADER.pack(_CIPHERTEXT_MAGIC, _CIPHERTEXT_VERSION, frame.key_id,
                                     frame.encoding, frame.lanes, frame.n, frame.summands,
                                     frame.capacity, len(frame.chunks), frame.bound,
                                     int(frame.seeded))
    return b"".join([header, *frame.chunks])


def _split(body: bytes | memoryview, size: int) -> list[memoryview]:
    """``body`` as chunks of ``size`` bytes (views, not copies)."""
    view = memoryview(body)
    return [view[start : start + size] for start in range(0, len(body), size)]


def _seal_chunks(frame: Frame) -> list[bytes]:
    """Each chunk of a frame as SEAL's serialisation (what ``Ciphertext.load`` reads),
    its 60-bit words unpacked for all chunks at once."""
    count = len(frame.chunks)
    body = b"".join(frame.chunks)
    if frame.seeded:
        first = _unpack60(body, count, stride=_SEEDED_CHUNK)
        return [_to_seal(first[j], body[(j + 1) * _SEEDED_CHUNK - _SEED_BYTES :
                                        (j + 1) * _SEEDED_CHUNK]) for j in range(count)]
    both = _unpack60(body, 2 * count).reshape(count, 2, SLOTS)
    return [_to_seal(both[j], None) for j in range(count)]


def _parse_ciphertext(blob: bytes) -> Frame:
    """Split a framed blob, checking every field of the frame against the others."""
    if len(blob) < len(_CIPHERTEXT_MAGIC) + 1:
        raise UserError("not a scifed ciphertext: too short")
    if blob[: len(_CIPHERTEXT_MAGIC)] != _CIPHERTEXT_MAGIC:
        raise UserError("not a scifed ciphertext: bad magic")
    version = blob[len(_CIPHERTEXT_MAGIC)]
    if version == 2:
        raise UserError("ciphertext format version 2 (SEAL's 64-bit words, scifed before "
                        f"the 60-bit wire) is no longer read: encrypt it again, as format "
                        f"{_CIPHERTEXT_VERSION}")
    if version != _CIPHERTEXT_VERSION:
        raise UserError(f"unsupported ciphertext version {version}")
    if len(blob) < _CIPHERTEXT_HEADER.size:
        raise UserError("not a scifed ciphertext: too short")
    (_, _, key_id, encoding, lanes, n, summands, capacity, n_chunks, bound,
     seeded) = _CIPHERTEXT_HEADER.unpack_from(blob)
    valid = (
        n >= 1 and 1 <= capacity <= MAX_SUMMANDS and 1 <= summands <= capacity
        and (seeded == 0 or (seeded == 1 and summands == 1))
        and ((encoding == EXACT and lanes == 1 and bound == 0.0)
             or (encoding == QUANTISED and lanes == lanes_for(capacity)
                 and np.isfinite(bound) and bound > 0))
    )
    if not valid or n_chunks != -(-slots_for(encoding, n, lanes) // SLOTS):
        raise UserError("ciphertext header is inconsistent (encoding, length, chunks, "
                        "summands or capacity)")
    size = _SEEDED_CHUNK if seeded else _FULL_CHUNK
    if len(blob) != _CIPHERTEXT_HEADER.size + n_chunks * size:
        raise UserError(f"ciphertext length {len(blob)} does not match its {n_chunks} chunks")
    chunks = _split(memoryview(blob)[_CIPHERTEXT_HEADER.size :], size)
    return Frame(key_id, encoding, lanes, n, summands, capacity, bound, chunks, bool(seeded))


@functools.lru_cache(maxsize=1)
def _public_body() -> bytes:
    return _Scratch.dump(_parameters())


def _parse_context(data: bytes) -> tuple[int, bytes, bytes]:
    """Read a framed context: (public or secret, key id, body)."""
    if len(data) < _CONTEXT_HEADER.size:
        raise UserError("not a scifed study context: too short")
    magic, version, kind, key_id = _CONTEXT_HEADER.unpack_from(data)
    if magic != _CONTEXT_MAGIC or kind not in (_PUBLIC, _SECRET):
        raise UserError("not a scifed study context: bad header")
    if version != _VERSION:
        raise UserError(f"unsupported study context version {version} (a study key made "
                        "before the BFV encoding: the lead node must make a new one)")
    return kind, key_id, data[_CONTEXT_HEADER.size :]


@functools.lru_cache(maxsize=32)
def _public_context(data: bytes) -> bytes:
    """The key id of a public context whose parameters are scifed's (cached: the
    coordinator sums for the same study again and again)."""
    kind, key_id, body = _parse_context(data)
    if kind != _PUBLIC:
        raise UserError("the coordinator sums with a study's public context, not its secret key")
    if body != _public_body():
        raise UserError("study context does not use scifed's BFV parameters")
    return key_id


def _evaluator() -> seal.Evaluator:
    """This thread's evaluator (the coordinator sums chunks on the pool's threads)."""
    evaluator = getattr(_evaluators, "evaluator", None)
    if evaluator is None:
        evaluator = _evaluators.evaluator = seal.Evaluator(_context())
    return evaluator


def _encoder() -> seal.BatchEncoder:
    """This thread's batch encoder (public: it needs no key)."""
    encoder = getattr(_evaluators, "encoder", None)
    if encoder is None:
        encoder = _evaluators.encoder = seal.BatchEncoder(_context())
    return encoder


def _load_chunk(chunk: bytes, index: int) -> seal.Ciphertext:
    """Deserialise one chunk of contribution ``index`` (a seeded one expands its seed)."""
    cipher = seal.Ciphertext()
    try:
        _Scratch.load(cipher, chunk)
    except (ValueError, RuntimeError, TypeError) as exc:
        raise UserError(f"ciphertext {index} is no BFV ciphertext of this study: {exc}") from exc
    if cipher.size() != 2 or cipher.poly_modulus_degree() != POLY_MODULUS_DEGREE:
        raise UserError(f"ciphertext {index} does not have the study's shape")
    return cipher


def seal_for_members(key: StudyKey, purpose: str, job_id: str, value: object) -> bytes:
    """JSON ``value`` sealed so that only study members can open it (the coordinator
    relays it): a node's categories, a release node's state, a round's query."""
    return seal_box(key.aead_key(purpose), json.dumps(value).encode(), job_id.encode())


def open_for_members(key: StudyKey, purpose: str, job_id: str, blob: bytes) -> Any:
    """Open :func:`seal_for_members` output of the same purpose and job."""
    return json.loads(open_box(key.aead_key(purpose), blob, job_id.encode()))
