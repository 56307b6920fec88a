"""Study keys and encrypted aggregation: exact sums, key separation, framing, refusals."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tenseal as ts

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


def test_hundred_summands_at_the_range_limit(key: StudyKey) -> None:
    rng = np.random.default_rng(9)
    x = rng.uniform(-(2.0**60), 2.0**60, 700)
    x[:2] = [2.0**60, -(2.0**60)]
    x[2:100] = rng.integers(0, 1000, 98)
    blob = key.encrypt(x)
    total = key.decrypt(sum_ciphertexts(key.public_bytes(), [blob] * MAX_SUMMANDS))
    assert np.array_equal(total, MAX_SUMMANDS * x)
    with pytest.raises(UserError, match="only guaranteed up to 100"):
        sum_ciphertexts(key.public_bytes(), [blob] * (MAX_SUMMANDS + 1))


# 3 limbs per value: 682 values fill one chunk, 683 spill; N/2 values fill 3 chunks exactly.
@pytest.mark.parametrize("n", [1, 682, 683, SLOTS, SLOTS + 1, 100_000])
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
    assert context_is_private(secret[he._CONTEXT_HEADER.size :])  # raw TenSEAL bytes too
    _, _, context = he._parse_context(public)
    chunk = he._parse_ciphertext(key.encrypt(np.arange(5.0)))[3][0]
    with pytest.raises(ValueError, match="secret_key"):
        ts.ckks_vector_from(context, chunk).decrypt()
    with pytest.raises(UserError, match="public context"):
        StudyKey.from_secret_bytes(public)


def test_context_is_private_is_false_for_other_bytes(key: StudyKey) -> None:
    for data in (b"", b"garbage", key.encrypt(np.ones(3)), b"SFHK" + bytes(100)):
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

    If the id is forged, decryption yields noise spread over the whole slot range, which
    the integrality check on every slot (padding included) refuses instead of returning
    wrong numbers.
    """
    x = np.arange(10.0)
    foreign = bytearray(other_key.encrypt(x))
    offset = len(he._CIPHERTEXT_MAGIC) + 1
    foreign[offset : offset + 16] = key._key_id
    summed = sum_ciphertexts(key.public_bytes(), [bytes(foreign)])
    with pytest.raises(UserError, match="corrupt or was made under another study key"):
        key.decrypt(summed)


def test_sum_refuses_garbage(key: StudyKey) -> None:
    good = key.encrypt(np.ones(3))
    chunk_start = len(good) - len(he._parse_ciphertext(good)[3][0])
    corrupt = good[:chunk_start] + bytes(len(good) - chunk_start)
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
