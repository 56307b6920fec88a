"""Shamir sharing of 32-byte seeds (scifed/shamir.py): the field is prime, any t shares
give the secret back, t − 1 shares fit every secret, extra shares are checked."""

from __future__ import annotations

import itertools
import os

import pytest
import sympy
from hypothesis import given, settings
from hypothesis import strategies as st

from scifed import shamir
from scifed.errors import UserError


def test_the_field_is_the_least_prime_above_2_to_the_256():
    assert sympy.isprime(shamir.PRIME)
    assert sympy.nextprime(2**256) == shamir.PRIME


@settings(max_examples=40, deadline=None)
@given(secret=st.binary(min_size=32, max_size=32), n=st.integers(1, 9), data=st.data())
def test_any_t_shares_give_the_secret_back(secret, n, data):
    t = data.draw(st.integers(1, n))
    xs = list(range(1, n + 1))
    shares = shamir.split(secret, xs, t, os.urandom(32))
    for subset in itertools.islice(itertools.combinations(xs, t), 20):
        assert shamir.combine({x: shares[x] for x in subset}, t) == secret
    assert shamir.combine(shares, t) == secret  # all of them: extra points checked


def test_fewer_than_t_shares_fit_every_secret():
    """t − 1 shares plus any candidate secret as the point at 0 define a polynomial of
    degree < t: the shares rule no secret out (perfect secrecy), shown for t = 3."""
    secret, other = os.urandom(32), os.urandom(32)
    shares = shamir.split(secret, [1, 2, 3, 4, 5], 3, os.urandom(32))
    known = [(1, int.from_bytes(shares[1], "big")), (2, int.from_bytes(shares[2], "big"))]
    for candidate in (secret, other):
        points = [(0, int.from_bytes(candidate, "big")), *known]
        # the polynomial through the candidate and the two shares reproduces the shares
        for x, y in known:
            assert shamir._at(points, x) == y
    with pytest.raises(UserError, match="2 shares of a secret are given, 3 are needed"):
        shamir.combine({1: shares[1], 2: shares[2]}, 3)


def test_an_altered_share_is_detected_when_more_than_t_are_given():
    secret = os.urandom(32)
    shares = shamir.split(secret, [1, 2, 3, 4], 2, os.urandom(32))
    bad = dict(shares)
    bad[3] = (int.from_bytes(bad[3], "big") ^ 1).to_bytes(33, "big")
    with pytest.raises(UserError, match="do not agree"):
        shamir.combine(bad, 2)
    with pytest.raises(UserError, match="malformed"):
        shamir.combine({1: shares[1], 2: b"\xff" * 33}, 2)


def test_the_same_randomness_makes_the_same_shares_and_other_randomness_other_ones():
    secret, rand = os.urandom(32), os.urandom(32)
    assert shamir.split(secret, [1, 2, 3], 2, rand) == shamir.split(secret, [1, 2, 3], 2, rand)
    assert shamir.split(secret, [1, 2, 3], 2, rand) != shamir.split(secret, [1, 2, 3], 2,
                                                                     os.urandom(32))


def test_bad_parameters_are_refused():
    with pytest.raises(ValueError):
        shamir.split(b"short", [1, 2], 2, os.urandom(32))
    with pytest.raises(ValueError):
        shamir.split(os.urandom(32), [1, 1], 2, os.urandom(32))
    with pytest.raises(ValueError):
        shamir.split(os.urandom(32), [1, 2], 3, os.urandom(32))
    with pytest.raises(ValueError):
        shamir.split(os.urandom(32), [0, 2], 2, os.urandom(32))
