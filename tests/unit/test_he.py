"""Study keys and encrypted aggregation (BFV): exact sums, quantised updates, key
separation, framing, refusals."""

from __future__ import annotations

import math
import os
import signal
import threading

import numpy as np
import pytest

from scifed import he
from scifed.errors import UserError
from scifed.he import (
    MAX_SUMMANDS,
    SLOTS,
    StudyKey,
    context_is_private,
    open_box,
    seal_box,
    sum_ciphertexts,
)


@pytest.fixture(scope="module")
def key() -> StudyKey:
    return StudyKey.generate()


@pytest.fixture(scope="module")
def other_key() -> StudyKey:
    return StudyKey.generate()


def _exact_sum(vectors: list[np.ndarray]) -> np.ndarray:
    """Correctly rounded column sums, the reference the encrypted sum must meet."""
    return np.array([math.fsum(column) for column in np.stack(vectors).T])


def _node_statistics(rng: np.random.Generator) -> np.ndarray:
    """Sufficient statistics of one node: counts, sums, sums of squares, very large sums.

    Values sit on dyadic grids so the exact sum of 10 nodes is itself a float64, which
    lets the test ask for it to the bit.
    """
    counts = rng.integers(500, 1500, 50).astype(np.float64)
    sums = rng.integers(-(10**6) * 2**20, 10**6 * 2**20, 50) / 2.0**20
    squares = rng.integers(0, 10**12 * 2**8, 50) / 2.0**8
    huge = rng.integers(0, 2**49, 48).astype(np.float64)
    return np.concatenate([counts, sums, squares, huge, [2.0**50, -(2.0**50)]])


def test_sum_of_ten_nodes_of_mixed_magnitude_is_exact(key: StudyKey) -> None:
    rng = np.random.default_rng(7)
    vectors = [_node_statistics(rng) for _ in range(10)]
    public = key.public_bytes()
    total = key.decrypt(sum_ciphertexts(public, [key.encrypt(v) for v in vectors]))
    expected = _exact_sum(vectors)
    assert total.dtype == np.float64 and total.shape == expected.shape
    assert np.max(np.abs(total - expected)) <= 1e-6
    assert np.array_equal(total[:50], expected[:50])  # counts come back as exact integers
    assert np.array_equal(total, expected)


def test_sum_of_arbitrary_floats_within_1e6(key: StudyKey) -> None:
    rng = np.random.default_rng(8)
    vectors = [rng.normal(0, 1e5, 1000) for _ in range(10)]
    total = key.decrypt(sum_ciphertexts(key.public_bytes(), [key.encrypt(v) for v in vectors]))
    assert np.max(np.abs(total - _exact_sum(vectors))) <= 1e-6


def test_most_summands_at_the_range_limit(key: StudyKey) -> None:
    rng = np.random.default_rng(9)
    x = rng.uniform(-(2.0**60), 2.0**60, 700)
    x[:2] = [2.0**60, -(2.0**60)]
    x[2:100] = rng.integers(0, 1000, 98)
    blob = key.encrypt(x)
    total = key.decrypt(sum_ciphertexts(key.public_bytes(), [blob] * MAX_SUMMANDS))
    assert np.array_equal(total, MAX_SUMMANDS * x)
    with pytest.raises(UserError, match="only exact up to 2048"):
        sum_ciphertexts(key.public_bytes(), [blob] * (MAX_SUMMANDS + 1))


# 4 limbs per value: 1024 values fill one chunk, 1025 spill; N values fill 4 chunks exactly.
@pytest.mark.parametrize("n", [1, 1024, 1025, SLOTS, SLOTS + 1, 100_000])
def test_lengths_round_trip(key: StudyKey, n: int) -> None:
    x = np.random.default_rng(n).normal(0, 1e3, n)
    back = key.decrypt(key.encrypt(x))
    assert back.shape == (n,)
    np.testing.assert_allclose(back, x, rtol=0, atol=2.0**-29)


def test_encrypt_refuses_what_it_cannot_represent(key: StudyKey) -> None:
    for bad in (np.array([np.nan]), np.array([2.0**61]), np.zeros((2, 2)), np.zeros(0)):
        with pytest.raises(UserError):
            key.encrypt(bad)


def test_public_context_cannot_decrypt(key: StudyKey) -> None:
    public, secret = key.public_bytes(), key.secret_bytes()
    assert not context_is_private(public)
    assert context_is_private(secret)
    assert context_is_private(secret[he._CONTEXT_HEADER.size :])  # raw SEAL bytes too
    # the public context is the encryption parameters and the key id, nothing else
    assert public[he._CONTEXT_HEADER.size :] == he._public_body()
    assert len(public) < 200
    with pytest.raises(UserError, match="public context"):
        StudyKey.from_secret_bytes(public)


def test_context_is_private_is_false_for_other_bytes(key: StudyKey) -> None:
    for data in (b"", b"garbage", key.encrypt(np.ones(3)), b"SFHK" + bytes(100),
                 key.public_bytes()):
        assert not context_is_private(data)


def test_secret_bytes_round_trip(key: StudyKey) -> None:
    blob = key.encrypt(np.array([1.5, -2.25]))
    again = StudyKey.from_secret_bytes(key.secret_bytes())
    assert np.array_equal(again.decrypt(blob), [1.5, -2.25])
    for garbage in (b"", b"not a key", key.secret_bytes()[:-100]):
        with pytest.raises(UserError):
            StudyKey.from_secret_bytes(garbage)


def test_sum_refuses_mismatched_lengths(key: StudyKey) -> None:
    with pytest.raises(UserError, match="different lengths"):
        sum_ciphertexts(key.public_bytes(), [key.encrypt(np.ones(3)), key.encrypt(np.ones(4))])


def test_sum_refuses_another_study(key: StudyKey, other_key: StudyKey) -> None:
    mixed = [key.encrypt(np.ones(3)), other_key.encrypt(np.ones(3))]
    with pytest.raises(UserError, match="different study key"):
        sum_ciphertexts(key.public_bytes(), mixed)
    with pytest.raises(UserError, match="different study key"):
        key.decrypt(other_key.encrypt(np.ones(3)))


def test_foreign_ciphertext_with_forged_key_id_does_not_decrypt(
    key: StudyKey, other_key: StudyKey
) -> None:
    """Same parameters, other secret: only the key id tells them apart at the coordinator.

    If the id is forged, decryption yields residues spread over [0, t), which the check
    of every slot against the recorded summands (padding included) refuses instead of
    returning wrong numbers.
    """
    x = np.arange(10.0)
    foreign = bytearray(other_key.encrypt(x))
    offset = len(he._CIPHERTEXT_MAGIC) + 1
    foreign[offset : offset + 16] = key._key_id
    summed = sum_ciphertexts(key.public_bytes(), [bytes(foreign)])
    with pytest.raises(UserError, match="corrupt"):
        key.decrypt(summed)


def test_sum_refuses_garbage(key: StudyKey) -> None:
    good = key.encrypt(np.ones(3))
    chunk_start = len(good) - len(he._parse_ciphertext(good).chunks[0])
    corrupt = good[:chunk_start] + b"\xff" * (len(good) - chunk_start)  # words >= q
    for bad in (b"", b"SFHC" + bytes(40), good[:-1], corrupt):
        with pytest.raises(UserError):
            sum_ciphertexts(key.public_bytes(), [good, bad])
    with pytest.raises(UserError, match="public context"):
        sum_ciphertexts(key.secret_bytes(), [good])
    with pytest.raises(UserError, match="nothing to sum"):
        sum_ciphertexts(key.public_bytes(), [])


def test_aead_key_is_shared_by_members_and_separated(key: StudyKey, other_key: StudyKey) -> None:
    member = StudyKey.from_secret_bytes(key.secret_bytes())
    assert len(key.aead_key("relay")) == 32
    assert member.aead_key("relay") == key.aead_key("relay")
    assert key.aead_key("relay") != key.aead_key("other")
    assert other_key.aead_key("relay") != key.aead_key("relay")


def test_seal_box_round_trip_and_tampering(key: StudyKey) -> None:
    box_key = key.aead_key("messages")
    blob = seal_box(box_key, b"hello members", b"study-1")
    assert open_box(box_key, blob, b"study-1") == b"hello members"
    flipped = bytes([blob[-1] ^ 1])
    for bad_key, bad_blob, aad in (
        (box_key, blob[:-1] + flipped, b"study-1"),
        (box_key, blob, b"study-2"),
        (key.aead_key("other"), blob, b"study-1"),
        (box_key, blob[:10], b"study-1"),
    ):
        with pytest.raises(UserError, match="could not be authenticated"):
            open_box(bad_key, bad_blob, aad)


def test_quantised_sum_of_ten_is_unbiased_within_2e_4() -> None:
    """The issue's bar: sums of 10 values in [-1, 1], max error <= 2e-4, mean error ~0."""
    key = StudyKey.generate()
    rng = np.random.default_rng(11)
    vectors = [rng.uniform(-1, 1, 200_000) for _ in range(10)]
    blobs = [key.encrypt_quantised(v, bound=1.0, capacity=10, rng=rng) for v in vectors]
    error = key.decrypt(sum_ciphertexts(key.public_bytes(), blobs)) - np.sum(vectors, axis=0)
    assert np.max(np.abs(error)) <= 2e-4
    assert abs(np.mean(error)) <= 5 * np.std(error) / np.sqrt(error.size)  # unbiased
    assert len(blobs[0]) / 200_000 <= 4.2  # two lanes per slot (3.79 B at 10^6)


def test_quantised_lanes_and_capacity(key: StudyKey) -> None:
    assert he.lanes_for(16) == 2 and he.lanes_for(17) == 1 and he.lanes_for(2048) == 1
    assert he.top_level(16) == 2**16 - 1
    for capacity in (16, 17, 2048):  # the largest sum the lanes promise decodes exactly
        top = he.top_level(capacity)
        lanes = he.lanes_for(capacity)
        assert capacity * top * ((1 << he.LANE_BITS) + 1 if lanes == 2 else 1) < he.PLAIN_MODULUS
        blob = key.encrypt_quantised(np.ones(5), bound=1.0, capacity=capacity)
        total = key.decrypt(sum_ciphertexts(key.public_bytes(), [blob] * capacity))
        assert np.allclose(total, capacity)
        with pytest.raises(UserError, match=f"only exact up to {capacity}"):
            sum_ciphertexts(key.public_bytes(), [blob] * (capacity + 1))
    with pytest.raises(UserError, match="1 to 2048"):
        key.encrypt_quantised(np.ones(5), bound=1.0, capacity=2049)
    with pytest.raises(UserError, match="outside the quantisation bound"):
        key.encrypt_quantised(np.array([1.5]), bound=1.0, capacity=3)
    exact = key.encrypt(np.ones(5))
    quantised = key.encrypt_quantised(np.ones(5), bound=1.0, capacity=3)
    with pytest.raises(UserError, match="different encodings"):
        sum_ciphertexts(key.public_bytes(), [exact, quantised])


def test_thousand_contributors_sum_exactly(key: StudyKey) -> None:
    """The bound the encoding states (2048) is above the issue's 1,000 contributors."""
    blobs = [key.encrypt(np.array([float(i), -0.5, 2.0**40])) for i in range(1000)]
    total = key.decrypt(sum_ciphertexts(key.public_bytes(), blobs))
    assert np.array_equal(total, [sum(range(1000)), -500.0, 1000 * 2.0**40])


def test_a_job_names_no_more_nodes_than_a_sum_can_hold() -> None:
    from jobs.limits import MAX_JOB_NODES

    assert MAX_JOB_NODES == MAX_SUMMANDS


def test_a_long_vector_spread_over_processes_decrypts_in_order(key: StudyKey) -> None:
    """Chunks encrypted and decrypted on the process pool come back in chunk order: each
    value distinct, so a swapped or dropped chunk changes the result."""
    n = he.PARALLEL_MIN_CHUNKS * SLOTS // he.LIMBS + 1234  # 17 chunks of 4 limbs per value
    values = np.arange(n, dtype=np.float64) * 3.0 - 7.5
    with he.workers(3):
        blob = key.encrypt(values)
        pool = he._process_pool()
        assert pool._processes and os.getpid() not in pool._processes  # the pool did run
        np.testing.assert_array_equal(key.decrypt(blob), values)
        total = sum_ciphertexts(key.public_bytes(), [blob, blob])
    with he.workers(1):
        np.testing.assert_array_equal(key.decrypt(blob), values)
        np.testing.assert_array_equal(key.decrypt(total), 2 * values)
        serial = key.encrypt(values)
    assert len(serial) == len(blob)  # same frame whichever way it was made


def test_each_thread_has_its_own_seal_objects(key: StudyKey) -> None:
    seen: list[tuple[object, ...]] = []  # the objects themselves: alive, so ids stay unique

    def grab() -> None:
        tools = key._tools
        first = (tools.encoder, tools.encryptor, tools.decryptor)
        seen.append((*first, key._tools.encryptor))

    threads = [threading.Thread(target=grab) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(seen) == 3
    assert all(entry[3] is entry[1] for entry in seen)  # one thread keeps its objects
    for position in range(3):
        assert len({id(entry[position]) for entry in seen}) == 3  # threads never share


def test_a_pool_that_lost_a_process_is_replaced(key: StudyKey) -> None:
    values = np.arange(he.PARALLEL_MIN_CHUNKS * SLOTS // he.LIMBS, dtype=np.float64)
    with he.workers(2):
        key.encrypt(values)
        pool = he._process_pool()
        for pid in list(pool._processes):
            os.kill(pid, signal.SIGKILL)
        np.testing.assert_array_equal(key.decrypt(key.encrypt(values)), values)
        assert he._process_pool() is not pool
        np.testing.assert_array_equal(key.decrypt(key.encrypt(values)), values)


def test_sixty_bit_words_pack_and_unpack_losslessly() -> None:
    """The wire keeps each ciphertext word in 60 bits: every word below 2^60, including
    the extremes, comes back as it went."""
    rng = np.random.default_rng(5)
    words = rng.integers(0, 2**60, (3, SLOTS), dtype=np.uint64)
    words[0, :4] = [0, 1, 2**60 - 1, 2**59]
    packed = he._pack60(words)
    assert len(packed) == 3 * SLOTS * 60 // 8
    np.testing.assert_array_equal(he._unpack60(packed, 3), words)


def test_an_update_costs_under_four_bytes_per_parameter(key: StudyKey) -> None:
    """Two lanes per slot, one 60-bit word per slot and a 64-byte seed per 4096 slots:
    3.76 B per parameter once the frame header is spread over a long vector."""
    rng = np.random.default_rng(3)
    n = 16 * 2 * SLOTS
    vectors = [rng.uniform(-1, 1, n) for _ in range(3)]
    blobs = [key.encrypt_quantised(v, bound=1.0, capacity=4, rng=rng) for v in vectors]
    assert len(blobs[0]) / n <= 3.76
    total = sum_ciphertexts(key.public_bytes(), blobs)
    assert len(total) / n <= 2 * 3.76  # a sum carries both polynomials
    error = key.decrypt(total) - np.sum(vectors, axis=0)
    assert np.max(np.abs(error)) <= 3 * 2 / he.top_level(4)
    again = sum_ciphertexts(key.public_bytes(), [total, blobs[0]])  # a sum sums on
    np.testing.assert_allclose(key.decrypt(again), key.decrypt(total) + key.decrypt(blobs[0]),
                               atol=1e-9)


def test_the_earlier_wire_format_is_refused_by_name(key: StudyKey) -> None:
    blob = bytearray(key.encrypt(np.ones(3)))
    blob[len(he._CIPHERTEXT_MAGIC)] = 2  # the 8-byte-word format before this one
    for action in (lambda: sum_ciphertexts(key.public_bytes(), [bytes(blob)]),
                   lambda: key.decrypt(bytes(blob))):
        with pytest.raises(UserError, match="version 2 .*no longer read"):
            action()


def test_a_zeroed_contribution_sums_but_does_not_decrypt(key: StudyKey) -> None:
    """The wire holds bare words, so zeros are a well-formed ciphertext: the sum goes
    through, and decryption finds that it sums no contributions."""
    good = key.encrypt(np.ones(3))
    frame = he._parse_ciphertext(good)
    zeroed = good[: len(good) - len(frame.chunks[0])] + bytes(len(frame.chunks[0]))
    with pytest.raises(UserError, match="corrupt"):
        key.decrypt(sum_ciphertexts(key.public_bytes(), [good, zeroed]))


def _seal_sum_words(blobs: list[bytes]) -> np.ndarray:
    """The reference: every chunk loaded through SEAL (which expands each seed itself) and
    added with SEAL's evaluator, as (chunks, 2, N) words."""
    frames = [he.parse(blob) for blob in blobs]
    streams = [he._seal_chunks(frame) for frame in frames]
    evaluator = he._evaluator()
    rows = []
    for j in range(len(frames[0].chunks)):
        total = he._load_chunk(streams[0][j], 0)
        for index, stream in enumerate(streams[1:], start=1):
            evaluator.add_inplace(total, he._load_chunk(stream[j], index))
        rows.append(he._from_seal_full(he._Scratch.dump(total)))
    return np.stack(rows)


def _words(blob: bytes) -> np.ndarray:
    chunks = len(he.parse(blob).chunks)
    return he._unpack60(blob, 2 * chunks, he._CIPHERTEXT_HEADER.size).reshape(chunks, 2, SLOTS)


@pytest.mark.parametrize("processes", [1, 2])
def test_the_sum_is_word_for_word_what_seal_adds(key: StudyKey, processes: int) -> None:
    """The coordinator adds the first polynomials in numpy and has SEAL expand only the
    seeds (on the pool for a long vector): its sum must be SEAL's own sum of the loaded
    ciphertexts, every word, for fresh contributions, a sum summed on and sums alone."""
    rng = np.random.default_rng(11)
    n = 2 * SLOTS * he.PARALLEL_MIN_CHUNKS + 77  # 17 chunks of two lanes: the pool's size
    blobs = [key.encrypt_quantised(rng.uniform(-1, 1, n), bound=1.0, capacity=8, rng=rng)
             for _ in range(3)]
    with he.workers(processes):
        total = sum_ciphertexts(key.public_bytes(), blobs)
        again = sum_ciphertexts(key.public_bytes(), [total, blobs[0]])
        sums = sum_ciphertexts(key.public_bytes(), [total, total])  # no seeds at all
        if processes > 1:
            assert he._process_pool()._processes  # the pool took a share
    np.testing.assert_array_equal(_words(total), _seal_sum_words(blobs))
    np.testing.assert_array_equal(_words(again), _seal_sum_words([total, blobs[0]]))
    np.testing.assert_array_equal(_words(sums), _seal_sum_words([total, total]))


def test_a_word_at_the_modulus_is_refused_naming_its_contribution(key: StudyKey) -> None:
    """One first-polynomial word equal to q (the smallest that is no residue) in the
    second contribution: the sum is refused and names that contribution."""
    good = key.encrypt(np.ones(3))
    words = he._unpack60(good, 1, he._CIPHERTEXT_HEADER.size, he._SEEDED_CHUNK).copy()
    words[0, 5] = he._Q
    start = he._CIPHERTEXT_HEADER.size
    bad = good[:start] + he._pack60(words) + good[start + he._POLY_BYTES :]
    assert len(bad) == len(good)
    with pytest.raises(UserError, match="ciphertext 1 is no BFV ciphertext"):
        sum_ciphertexts(key.public_bytes(), [good, bad])
