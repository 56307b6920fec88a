"""Pairwise masks under the BFV encryption: a masked contribution decrypts to uniform
residues, only the full sum is the plain sum, and a sum survives a dropout."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from scipy import stats

from scifed import he, masks
from scifed.errors import UserError
from scifed.he import PLAIN_MODULUS, StudyKey, sum_ciphertexts

NAMES = ["nodeA", "nodeB", "nodeC", "nodeD"]
CONTEXT = b"job-1\0round-1\0stats"


@pytest.fixture(scope="module")
def key() -> StudyKey:
    return StudyKey.generate()


@pytest.fixture(scope="module")
def seal_keys() -> dict[str, X25519PrivateKey]:
    """Fixed keys, so the masks (and each uniformity test's p-value) are the same in
    every run: a test of randomness must not fail one run in a thousand."""
    return {n: X25519PrivateKey.from_private_bytes(hashlib.sha256(n.encode()).digest())
            for n in NAMES}


def _public(keys: dict[str, X25519PrivateKey], names: list[str]) -> dict[str, bytes]:
    return {n: keys[n].public_key().public_bytes_raw() for n in names}


def _masked(key, seal_keys, name, members, vector, *, context=CONTEXT, extra=None):
    n = he.slots_for(he.EXACT, vector.size)
    mask = masks.pairwise_mask(seal_keys[name], name, _public(seal_keys, members), context, n)
    if extra is not None:
        mask = (mask + extra) % np.uint64(PLAIN_MODULUS)
    return key.encrypt(vector, mask=mask)


def _uniform_p(residues: np.ndarray) -> float:
    """Kolmogorov-Smirnov p-value of residues / t against U(0, 1). Readable values (counts,
    sums) give p far below 1e-100, so a 1e-6 threshold separates them with no false alarm
    worth the name."""
    return stats.kstest(residues.astype(np.float64) / PLAIN_MODULUS, "uniform").pvalue


def test_seed_is_symmetric_and_bound_to_pair_and_context(seal_keys) -> None:
    pub = _public(seal_keys, NAMES)
    ab = masks.pair_seed(seal_keys["nodeA"], "nodeA", "nodeB", pub["nodeB"], CONTEXT)
    assert ab == masks.pair_seed(seal_keys["nodeB"], "nodeB", "nodeA", pub["nodeA"], CONTEXT)
    assert ab != masks.pair_seed(seal_keys["nodeA"], "nodeA", "nodeB", pub["nodeB"], b"job-2")
    assert ab != masks.pair_seed(seal_keys["nodeA"], "nodeA", "nodeC", pub["nodeC"], CONTEXT)
    with pytest.raises(UserError, match="itself"):
        masks.pair_seed(seal_keys["nodeA"], "nodeA", "nodeA", pub["nodeA"], CONTEXT)


def test_prg_residues_are_uniform_below_t() -> None:
    r = masks.residues(bytes(range(32)), 200_000)
    assert r.dtype == np.uint64 and int(r.max()) < PLAIN_MODULUS
    assert _uniform_p(r) > 1e-6
    assert np.array_equal(r, masks.residues(bytes(range(32)), 200_000))  # deterministic


def test_masks_cancel_only_in_the_full_sum(key, seal_keys) -> None:
    rng = np.random.default_rng(3)
    members = NAMES[:3]
    vectors = {n: rng.integers(0, 1000, 2000).astype(np.float64) for n in members}
    blobs = {n: _masked(key, seal_keys, n, members, vectors[n]) for n in members}
    total = key.decrypt(sum_ciphertexts(key.public_bytes(), list(blobs.values())))
    assert np.array_equal(total, sum(vectors.values()))
    # one contribution, decrypted with the study key (what any member, or the release node,
    # can do): uniform residues, refused as a sum
    single = key.residues(he.parse(blobs["nodeA"]))
    assert _uniform_p(single) > 1e-6
    with pytest.raises(UserError, match="masked"):
        key.decrypt(blobs["nodeA"])
    # a partial sum (the coordinator leaving one node out) is uniform too
    partial = sum_ciphertexts(key.public_bytes(), [blobs["nodeA"], blobs["nodeB"]])
    assert _uniform_p(key.residues(he.parse(partial))) > 1e-6


def test_coordinator_with_one_member_cannot_unmask_another(key, seal_keys) -> None:
    """nodeB colludes: it knows its own seed with nodeA, and removes it from nodeA's
    contribution; nodeA's mask with nodeC remains, so what is left is still uniform."""
    members = NAMES[:3]
    x = np.arange(2000, dtype=np.float64)
    blob = _masked(key, seal_keys, "nodeA", members, x)
    n = he.slots_for(he.EXACT, x.size)
    known = masks.pairwise_mask(seal_keys["nodeA"], "nodeA",
                                _public(seal_keys, ["nodeB"]), CONTEXT, n)
    left = masks.subtract(key.residues(he.parse(blob)), known)
    assert _uniform_p(left) > 1e-6
    with pytest.raises(UserError):
        he.decode(he.parse(blob), left)


def test_sum_is_exact_over_survivors_after_a_dropout(key, seal_keys) -> None:
    """nodeD masks and then drops: each survivor removes its pairwise mask with nodeD
    and its self-mask; the sum over the survivors is exact. nodeD's own ciphertext, if the
    coordinator kept it, stays masked by nodeD's self-mask, which is never revealed."""
    rng = np.random.default_rng(5)
    vectors = {m: rng.normal(0, 1e4, 500) for m in NAMES}
    n = he.slots_for(he.EXACT, 500)
    selfs = {m: masks.self_mask(masks.self_seed(m.encode() * 4, CONTEXT), n) for m in NAMES}
    blobs = {m: _masked(key, seal_keys, m, NAMES, vectors[m], extra=selfs[m]) for m in NAMES}
    survivors = NAMES[:3]
    summed = sum_ciphertexts(key.public_bytes(), [blobs[m] for m in survivors])
    frame = he.parse(summed)
    residues = key.residues(frame)
    for m in survivors:  # what each survivor reveals for the sum, once the set is fixed
        correction = masks.pairwise_mask(seal_keys[m], m, _public(seal_keys, ["nodeD"]),
                                         CONTEXT, n)
        residues = masks.subtract(residues, (correction + selfs[m]) % np.uint64(PLAIN_MODULUS))
    expected = vectors["nodeA"] + vectors["nodeB"] + vectors["nodeC"]
    np.testing.assert_allclose(he.decode(frame, residues), expected, rtol=0, atol=3 * 2.0**-29)
    # the withheld contribution of nodeD with every pairwise mask removed: still uniform
    d = key.residues(he.parse(blobs["nodeD"]))
    for m in survivors:
        d = masks.subtract(d, masks.pairwise_mask(seal_keys["nodeD"], "nodeD",
                                                  _public(seal_keys, [m]), CONTEXT, n))
    assert _uniform_p(d) > 1e-6


def test_quantised_updates_mask_and_sum(key, seal_keys) -> None:
    rng = np.random.default_rng(6)
    members = NAMES[:3]
    vectors = {m: rng.uniform(-1, 1, 10_000) for m in members}
    blobs = []
    for m in members:
        n = he.slots_for(he.QUANTISED, 10_000, he.lanes_for(3))
        mask = masks.pairwise_mask(seal_keys[m], m, _public(seal_keys, members), CONTEXT, n)
        blobs.append(key.encrypt_quantised(vectors[m], bound=1.0, capacity=3, mask=mask))
    total = key.decrypt(sum_ciphertexts(key.public_bytes(), blobs))
    assert np.max(np.abs(total - sum(vectors.values()))) <= 3 * 2.0 / he.top_level(3)


def test_masked_quantised_lanes_decode_exactly_at_full_headroom(key, seal_keys) -> None:
    """Sixteen contributors (the most two 20-bit lanes hold) at the ends of the range, so
    every lane sum reaches its top: pairwise masks and self-masks added mod t per slot,
    the revealed self-masks taken off the sum with the public context
    (:func:`scifed.he.subtract_plain`), and the sum decodes to exactly what the same levels
    give unmasked — no carry from one lane into the other."""
    names = [f"node{i:02d}" for i in range(he.MAX_TWO_LANE_SUMMANDS)]
    keys = {n: X25519PrivateKey.from_private_bytes(hashlib.sha256(n.encode()).digest())
            for n in names}
    publics = _public(keys, names)
    n_values, bound, capacity = 999, 2.0, len(names)
    slots = he.slots_for(he.QUANTISED, n_values, he.lanes_for(capacity))
    ends = np.resize([bound, -bound, bound, bound * (1 - 1e-12)], n_values)
    masked, plain, seeds = [], [], []
    for i, name in enumerate(names):
        values = ends if i % 2 == 0 else np.random.default_rng(i).uniform(-bound, bound,
                                                                           n_values)
        seed = hashlib.sha256(b"self" + name.encode()).digest()
        seeds.append(seed)
        mask = masks.add(masks.pairwise_mask(keys[name], name, publics, CONTEXT, slots),
                         masks.named_mask(seed, "model", slots))
        masked.append(key.encrypt_quantised(values, bound=bound, capacity=capacity,
                                            rng=np.random.default_rng(100 + i), mask=mask))
        plain.append(key.encrypt_quantised(values, bound=bound, capacity=capacity,
                                           rng=np.random.default_rng(100 + i)))
    alone = key.residues(he.parse(masked[0]))
    assert _uniform_p(alone) > 1e-6
    total = sum_ciphertexts(key.public_bytes(), masked)
    self_masks = np.zeros(slots, dtype=np.uint64)
    for seed in seeds:
        self_masks = masks.add(self_masks, masks.named_mask(seed, "model", slots))
    assert _uniform_p(key.residues(he.parse(total))) > 1e-6  # self-masks still on
    unmasked = he.subtract_plain(key.public_bytes(), total, self_masks)
    expected = key.decrypt(sum_ciphertexts(key.public_bytes(), plain))
    np.testing.assert_array_equal(key.decrypt(unmasked), expected)
    with pytest.raises(UserError, match="cover"):
        he.subtract_plain(key.public_bytes(), total, self_masks[:-1])


def test_named_masks_differ_by_name_and_seed() -> None:
    seed = bytes(32)
    model = masks.named_mask(seed, "model", 1000)
    assert np.array_equal(model, masks.named_mask(seed, "model", 1000))
    assert not np.array_equal(model, masks.named_mask(seed, "metrics", 1000))
    assert not np.array_equal(model, masks.named_mask(bytes(31) + b"\1", "model", 1000))
    assert _uniform_p(model) > 1e-6 and model.max() < PLAIN_MODULUS


def _share_set(tmp_path, n: int):
    """n nodes with real seal keys, their self-mask share boxes of attempt 1."""
    from node.masking import share_boxes
    from scifed.sealing import ensure_seal_key
    from scifed.tasks import TaskHeader

    names = [f"n{i}" for i in range(n)]
    h = TaskHeader(job_id="job-1", study_id="s", key_version=1, job_type="stats",
                   n_nodes=n, dataset="d", spec={})
    dirs = {m: tmp_path / m for m in names}
    publics = {m: ensure_seal_key(dirs[m]) for m in names}
    secrets = {m: bytes([i + 1]) * 32 for i, m in enumerate(names)}
    boxes = {m: share_boxes(m, dirs[m], secrets[m], h, publics, 1) for m in names}
    return names, h, dirs, publics, secrets, boxes


def _answer(key, names, h, dirs, publics, boxes, node, summed, dropped):
    from node.masking import open_shares, pair_seeds, seal_view
    got = {s: b[node] for s, b in boxes.items() if node in b}
    shares = open_shares(node, dirs[node], h, publics, 1, got,
                         [m for m in summed if m != node])
    return seal_view(key, h.job_id, node, 1, summed, dropped, shares,
                     pair_seeds(node, dirs[node], h, publics, 1, dropped))


def test_rebuilt_masks_are_what_the_survivors_put_on(tmp_path):
    """Five nodes, one (n3) never contributes: the masks rebuilt from the survivors'
    answers (t = 3 shares of each seed, their pairwise seeds with n3) equal the sum of the
    survivors' own masks — pairwise towards all four others plus the self-mask — made
    directly from the keys and seeds (ground truth)."""
    from node.masking import (
        compute_stage,
        mask_context,
        recovered_masks,
        self_seed,
        threshold,
        with_self_mask,
    )
    from scifed.sealing import load_seal_key

    names, h, dirs, publics, secrets, boxes = _share_set(tmp_path, 5)
    assert threshold(5) == 3
    key = he.StudyKey.generate()
    summed, dropped, slots = [m for m in names if m != "n3"], ["n3"], 64
    reveals = {m: _answer(key, names, h, dirs, publics, boxes, m, summed, dropped)
               for m in summed}
    truth = np.zeros(slots, dtype=np.uint64)
    for m in summed:
        pair = masks.pairwise_mask(load_seal_key(dirs[m]), m, publics,
                                   mask_context(h, compute_stage(1)), slots)
        truth = masks.add(truth, with_self_mask(pair, self_seed(secrets[m], h, 1), slots))
    got = recovered_masks(key, h.job_id, reveals, summed, dropped, 1, slots)
    assert np.array_equal(got, truth)
    # one survivor's answer missing too: three answers leave two holders of each
    # answering node's seed besides itself, fewer than t, so the release refuses
    short = {m: r for m, r in reveals.items() if m != "n0"}
    with pytest.raises(UserError, match="2 shares of a secret are given, 3 are needed"):
        recovered_masks(key, h.job_id, short, summed, dropped, 1, slots)
    # nobody left out at the compute and n0 silent in the unmask: four answers give every
    # seed, n0's too, and the masks are all five nodes' self-masks (pairwise cancel)
    answers = {m: _answer(key, names, h, dirs, publics, boxes, m, names, [])
               for m in names if m != "n0"}
    selves = np.zeros(slots, dtype=np.uint64)
    for m in names:
        selves = masks.add(selves, masks.self_mask(self_seed(secrets[m], h, 1), slots))
    assert np.array_equal(recovered_masks(key, h.job_id, answers, names, [], 1, slots),
                          selves)
    # an answer to another view of the attempt is refused
    other = answers["n1"]
    with pytest.raises(UserError, match="not one n1 gave for attempt 1"):
        recovered_masks(key, h.job_id, {**reveals, "n1": other}, summed, dropped, 1, slots)


def test_a_box_opens_only_for_its_holder_from_its_sender(tmp_path):
    from node.masking import open_shares
    names, h, dirs, publics, _, boxes = _share_set(tmp_path, 3)
    moved = {"n1": boxes["n1"]["n2"]}  # n1's box for n2, handed to n0 as n1's for n0
    with pytest.raises(UserError, match="not made by n1 for this node"):
        open_shares("n0", dirs["n0"], h, publics, 1, moved, ["n1"])
    with pytest.raises(UserError, match="carries no share of node n2"):
        open_shares("n0", dirs["n0"], h, publics, 1, {"n1": boxes["n1"]["n0"]}, ["n1", "n2"])
