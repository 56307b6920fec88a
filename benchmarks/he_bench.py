"""Encrypted aggregation (``scifed.he``, ``scifed.masks``) beside its baselines.

One table (``benchmarks.table``), each figure beside its baseline measured in the same
run and the anchor of the performance notes, from these measurements:

* model updates (quantised, two 16-bit-or-finer lanes per BFV slot) of 10 parties, with
  and without a training round's masks (pairwise towards the 9 others and a self-mask at
  each node; the revealed self-masks taken off at the coordinator), beside float32
  plaintext summation and TenSEAL CKKS N=4096 [60, 49] (one real per slot, the
  smallest set TenSEAL's vectors accept, and the route scifed took before);
* exact statistics (4 limbs per value) of 3 parties, beside float64 summation.

Times are CPU time of this one process, without the chunk pool (best of a few
repetitions), per value; the coordinator's are per value *per party*. CPU time, not wall
time, because the machines are shared: it is what one core spends, whatever else runs.

Then the chunk pool (``he.WORKERS`` processes): for a 1M-parameter update, wall time
(best of N) with the pool beside one process measured in the same run, and that one
process's CPU time: encryption and decryption spread chunks, the coordinator's sum
spreads its seed expansions. CPU time cannot show the pool's gain (it counts this process only),
and wall time on a shared host includes whatever else runs, so the load average is
printed with the table.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import numpy as np
import tenseal as ts
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from rich.console import Console

from benchmarks.table import Figure, print_area
from scifed import he, masks

UPDATE_PARTIES = 10
STAT_PARTIES = 3
UPDATE_PARAMS, UPDATE_REPEATS = 1_000_000, 2
STAT_VALUES, STAT_REPEATS = 100_000, 3
# the targets of the aggregation issue (docs: performance anchors)
ANCHOR = {"bytes": 4.0, "encrypt": 0.10, "coordinator": 0.01, "decrypt": 0.05,
          "error": 2e-4}


POOL_PARAMS, POOL_REPEATS = 1_000_000, 5


def _best(clock: Callable[[], float], action: Callable[[], object], repeats: int) -> float:
    """Least time on ``clock`` of ``repeats`` runs of ``action``."""
    best = float("inf")
    for _ in range(repeats):
        start = clock()
        action()
        best = min(best, clock() - start)
    return best


def best_wall(action: Callable[[], object], repeats: int) -> float:
    return _best(time.perf_counter, action, repeats)


def best_cpu(action: Callable[[], object], repeats: int) -> float:
    return _best(time.process_time, action, repeats)


def statistics_vector(n: int, rng: np.random.Generator) -> np.ndarray:
    """Half model-update-like floats in [-1, 1], a quarter counts, a quarter sums of squares."""
    quarter = n // 4
    return np.concatenate([rng.uniform(-1.0, 1.0, n - 2 * quarter),
                           rng.integers(0, 5_000, quarter).astype(np.float64),
                           rng.integers(0, 10**12 * 2**8, quarter) / 2.0**8])


def measure_updates(key: he.StudyKey, n: int, repeats: int) -> dict[str, dict[str, float]]:
    """scifed's quantised BFV, TenSEAL CKKS and float32 for ``UPDATE_PARTIES`` updates."""
    rng = np.random.default_rng(n)
    vectors = [rng.uniform(-1, 1, n) for _ in range(UPDATE_PARTIES)]
    truth = np.sum(vectors, axis=0)
    public = key.public_bytes()
    us, parties = 1e6 / n, UPDATE_PARTIES
    blobs: list[bytes] = []

    def encrypt() -> None:
        blobs[:] = [key.encrypt_quantised(v, bound=1.0, capacity=parties, rng=rng)
                    for v in vectors]

    out: dict[str, dict[str, float]] = {}
    enc = best_cpu(encrypt, repeats)
    total = he.sum_ciphertexts(public, blobs)
    out["scifed BFV"] = {
        "bytes": len(blobs[0]) / n, "encrypt": enc / parties * us,
        "coordinator": best_cpu(lambda: he.sum_ciphertexts(public, blobs), repeats)
        / parties * us,
        "decrypt": best_cpu(lambda: key.decrypt(total), repeats) * us,
        "error": float(np.max(np.abs(key.decrypt(total) - truth)))}

    out["scifed BFV, masked"] = measure_masked(key, vectors, truth, repeats)

    context = ts.context(ts.SCHEME_TYPE.CKKS, poly_modulus_degree=4096,
                         coeff_mod_bit_sizes=[60, 49], n_threads=1)
    context.global_scale = 2.0**40
    public_ckks = context.copy()
    public_ckks.make_context_public()
    half = 4096 // 2
    cks: list[list[bytes]] = []

    def ckks_encrypt() -> None:
        cks[:] = [[ts.ckks_vector(context, v[i:i + half]).serialize()
                   for i in range(0, n, half)] for v in vectors]

    def ckks_sum() -> list:
        acc = [ts.ckks_vector_from(public_ckks, c) for c in cks[0]]
        for party in cks[1:]:
            for a, c in zip(acc, party, strict=True):
                a.add_(ts.ckks_vector_from(public_ckks, c))
        return acc

    ckks_reps = 1 if n >= 1_000_000 else repeats
    enc = best_cpu(ckks_encrypt, ckks_reps)
    summed = [c.serialize() for c in ckks_sum()]

    def ckks_decrypt() -> np.ndarray:
        return np.concatenate([ts.ckks_vector_from(context, c).decrypt() for c in summed])

    out["TenSEAL CKKS [60,49]"] = {
        "bytes": sum(len(c) for c in cks[0]) / n, "encrypt": enc / parties * us,
        "coordinator": best_cpu(ckks_sum, ckks_reps) / parties * us,
        "decrypt": best_cpu(ckks_decrypt, ckks_reps) * us,
        "error": float(np.max(np.abs(ckks_decrypt() - truth)))}

    floats = [v.astype(np.float32) for v in vectors]

    def plain() -> np.ndarray:
        acc = np.frombuffer(floats[0].tobytes(), dtype=np.float32).copy()
        for v in floats[1:]:
            acc += np.frombuffer(v.tobytes(), dtype=np.float32)
        return acc

    out["float32 plaintext"] = {
        "bytes": 4.0, "encrypt": best_cpu(lambda: [v.tobytes() for v in floats], repeats)
        / parties * us,
        "coordinator": best_cpu(plain, max(repeats, 5)) / parties * us, "decrypt": 0.0,
        "error": float(np.max(np.abs(plain() - truth)))}
    return out


def measure_masked(key: he.StudyKey, vectors: list[np.ndarray], truth: np.ndarray,
                   repeats: int) -> dict[str, float]:
    """The same updates masked as a training round masks them (node/round_updates.py):
    each node adds its pairwise masks towards the other parties and its self-mask before
    encrypting; the coordinator sums, makes every party's revealed self-mask and takes
    their sum off with the public context. Decryption is unchanged."""
    n, parties = vectors[0].size, len(vectors)
    slots = he.slots_for(he.QUANTISED, n, he.lanes_for(parties))
    names = [f"node{i:02d}" for i in range(parties)]
    seal_keys = {name: X25519PrivateKey.generate() for name in names}
    publics = {name: k.public_key().public_bytes_raw() for name, k in seal_keys.items()}
    seeds = {name: os.urandom(32) for name in names}
    rng = np.random.default_rng(n + 1)
    public, us = key.public_bytes(), 1e6 / n
    blobs: list[bytes] = []

    def encrypt() -> None:
        blobs.clear()
        for name, v in zip(names, vectors, strict=True):
            mask = masks.add(masks.pairwise_mask(seal_keys[name], name, publics, b"round", slots),
                             masks.named_mask(seeds[name], "model", slots))
            blobs.append(key.encrypt_quantised(v, bound=1.0, capacity=parties, rng=rng,
                                               mask=mask))

    def coordinate() -> bytes:
        total = he.sum_ciphertexts(public, blobs)
        off = np.zeros(slots, dtype=np.uint64)
        for seed in seeds.values():
            off = masks.add(off, masks.named_mask(seed, "model", slots))
        return he.subtract_plain(public, total, off)

    enc = best_cpu(encrypt, repeats)
    total = coordinate()
    return {"bytes": len(blobs[0]) / n, "encrypt": enc / parties * us,
            "coordinator": best_cpu(coordinate, repeats) / parties * us,
            "decrypt": best_cpu(lambda: key.decrypt(total), repeats) * us,
            "error": float(np.max(np.abs(key.decrypt(total) - truth)))}


def measure_pool(key: he.StudyKey, n: int = POOL_PARAMS,
                 repeats: int = POOL_REPEATS) -> dict[str, dict[str, float]]:
    """µs per parameter to encrypt one update, sum (per party) and decrypt the sum of
    ``UPDATE_PARTIES``: wall and CPU time in one process, wall time on the pool."""
    rng = np.random.default_rng(7)
    update = rng.uniform(-1, 1, n)
    public = key.public_bytes()
    blobs = [key.encrypt_quantised(update, bound=1.0, capacity=UPDATE_PARTIES, rng=rng)
             for _ in range(UPDATE_PARTIES)]
    total = he.sum_ciphertexts(public, blobs)
    steps: dict[str, tuple[Callable[[], object], float]] = {
        "encrypt": (lambda: key.encrypt_quantised(update, bound=1.0,
                                                  capacity=UPDATE_PARTIES, rng=rng), 1.0),
        "sum": (lambda: he.sum_ciphertexts(public, blobs), float(UPDATE_PARTIES)),
        "decrypt": (lambda: key.decrypt(total), 1.0)}
    us = 1e6 / n
    out: dict[str, dict[str, float]] = {"1 process, CPU": {}, "1 process, wall": {},
                                        f"{he.WORKERS} processes, wall": {}}
    for step, (action, per) in steps.items():
        with he.workers(1):
            out["1 process, CPU"][step] = best_cpu(action, repeats) / per * us
            out["1 process, wall"][step] = best_wall(action, repeats) / per * us
        action()  # the pool's processes start (once per process), not timed
        out[f"{he.WORKERS} processes, wall"][step] = best_wall(action, repeats) / per * us
    return out


def measure_masks(n: int, peers: int) -> float:
    """CPU µs per slot and peer of one node's pairwise mask."""
    own = X25519PrivateKey.generate()
    others = {f"n{i:03d}": X25519PrivateKey.generate().public_key().public_bytes_raw()
              for i in range(peers)}
    seconds = best_cpu(lambda: masks.pairwise_mask(own, "me", others, b"job", n), 3)
    return seconds / n / peers * 1e6


def measure_stats(key: he.StudyKey, n: int, repeats: int) -> dict[str, float]:
    rng = np.random.default_rng(n)
    vectors = [statistics_vector(n, rng) for _ in range(STAT_PARTIES)]
    public = key.public_bytes()
    blobs: list[bytes] = []

    def encrypt() -> None:
        blobs[:] = [key.encrypt(v) for v in vectors]

    enc = best_cpu(encrypt, repeats)
    total = he.sum_ciphertexts(public, blobs)
    us = 1e6 / n

    def plain() -> np.ndarray:
        acc = vectors[0].copy()
        for v in vectors[1:]:
            acc += v
        return acc

    return {"encrypt": enc / STAT_PARTIES * us,
            "coordinator": best_cpu(lambda: he.sum_ciphertexts(public, blobs), repeats)
            / STAT_PARTIES * us,
            "decrypt": best_cpu(lambda: key.decrypt(total), repeats) * us,
            "bytes": len(blobs[0]) / n, "plain": best_cpu(plain, 5) / STAT_PARTIES * us,
            "error": float(np.max(np.abs(key.decrypt(total) - plain())))}


def round_ratio(r: dict[str, float], params: int = 1_000_000, parties: int = 10,
                train_s: float = 10.0, link_bytes_s: float = 125e6) -> float:
    """The round model of the performance notes (§3.5): HE round over a float32 round
    for a 1M-parameter model, 10 parties, 10 s of training, 1 Gbit/s at the coordinator;
    crypto from this run, transfers from the bytes per parameter (the sum goes back at
    8 B per slot, i.e. twice a contribution's bytes)."""
    crypto = (r["encrypt"] + parties * r["coordinator"] + r["decrypt"]) * params / 1e6
    up = parties * r["bytes"] * params / link_bytes_s
    down = parties * 2 * r["bytes"] * params / link_bytes_s
    plain = train_s + 2 * parties * 4 * params / link_bytes_s
    return (train_s + crypto + up + down) / plain


def figures() -> list[Figure]:
    """The HE area: a 1M-parameter update of 10 parties, the chunk pool, exact
    statistics of 3 parties, the federation size the encoding holds, pairwise masks."""
    key = he.StudyKey.generate()
    n = UPDATE_PARAMS
    with he.workers(1):  # CPU time of this process is then all the work
        rows = measure_updates(key, n, UPDATE_REPEATS)
        stat = measure_stats(key, STAT_VALUES, STAT_REPEATS)
    ours, ckks = rows["scifed BFV"], rows["TenSEAL CKKS [60,49]"]
    pool = measure_pool(key)
    one, many = pool["1 process, wall"], pool[f"{he.WORKERS} processes, wall"]
    contributions = [key.encrypt(np.array([1.0, 2.0**-28, 2.0**50])) for _ in range(1000)]
    public = key.public_bytes()
    seconds = best_cpu(lambda: he.sum_ciphertexts(public, contributions), 1)
    exact = np.array_equal(key.decrypt(he.sum_ciphertexts(public, contributions)),
                           [1000.0, 1000 * 2.0**-28, 1000 * 2.0**50])
    updates = f"{n:,}-parameter update, {UPDATE_PARTIES} parties"
    return [
        Figure(f"wire bytes per parameter ({updates})", ours["bytes"], ckks["bytes"],
               f"≤ {ANCHOR['bytes']} (NVFlare CKKS 59.6)", "B/param"),
        Figure("client encode+encrypt, CPU", ours["encrypt"], ckks["encrypt"],
               f"≤ {ANCHOR['encrypt']} (TenSEAL CKKS 1.08)", "µs/param"),
        Figure("coordinator deserialize+sum, CPU, per party", ours["coordinator"],
               ckks["coordinator"], f"≤ {ANCHOR['coordinator']} (CKKS add 0.30)",
               "µs/param"),
        Figure(f"coordinator sum, wall, {he.WORKERS} processes (baseline: 1 process), "
               "per party", many["sum"], one["sum"], f"≤ {ANCHOR['coordinator']}",
               "µs/param"),
        Figure("decrypt+decode, CPU", ours["decrypt"], ckks["decrypt"],
               f"≤ {ANCHOR['decrypt']} (CKKS 0.73)", "µs/param"),
        Figure("max |error| of the sum of 10 values in [-1, 1]", ours["error"], ckks["error"],
               f"≤ {ANCHOR['error']:.0e}", "abs"),
        Figure("HE round / float32 round (model: 1M params, 10 s training, 1 Gbit/s)",
               round_ratio(ours), round_ratio(ckks), "≤ 1.05 (NVFlare ~1.20)", "ratio"),
        Figure(f"encode+encrypt, wall, {he.WORKERS} processes (baseline: 1 process)",
               many["encrypt"], one["encrypt"], f"≤ {ANCHOR['encrypt']}", "µs/param"),
        Figure(f"decrypt, wall, {he.WORKERS} processes (baseline: 1 process)",
               many["decrypt"], one["decrypt"], f"≤ {ANCHOR['decrypt']}", "µs/param"),
        Figure(f"exact statistics ({STAT_VALUES:,} values, {STAT_PARTIES} parties): "
               "bytes", stat["bytes"], None, "96 (the CKKS limbs it replaced)", "B/value"),
        Figure("exact statistics: coordinator sum per party (baseline: numpy float64)",
               stat["coordinator"], stat["plain"], "", "µs/value"),
        Figure("exact statistics: max |error| (baseline: numpy float64)", stat["error"],
               0.0, "exact on the 2^-28 grid", "abs"),
        Figure("contributors one sum holds (refused beyond)", he.MAX_SUMMANDS, None,
               "≥ 1,000 (issue 14)", "parties"),
        Figure("1,000 contributors: coordinator sum, CPU", seconds * 1e3, None,
               "exact" if exact else "NOT EXACT", "ms"),
        Figure("pairwise masks, 99 peers, CPU", measure_masks(100_000, 99), None,
               "0.0085 (AES-CTR masking floor)", "µs/slot/peer"),
        *share_figures(),
    ]


def share_figures() -> list[Figure]:
    """The t-of-n shares of the self-mask seeds (benchmarks/share_bench.py) beside the
    direct reveal of each node's own seed they replaced."""
    from benchmarks.share_bench import measure
    out = []
    for n in (3, 10):
        r = measure(n)
        what = f"self-mask seed shares, {n} nodes (baseline: direct seed reveal)"
        out += [Figure(f"{what}: bytes per node per job", r["bytes"], r["bytes_direct"],
                       "SecAgg: O(n) per node", "B"),
                Figure(f"{what}: node CPU per job", r["ms"], r["ms_direct"], "", "ms"),
                Figure(f"{what}: release node's unmask CPU (20-value stats vector)",
                       r["release_ms"], r["release_ms_direct"], "", "ms")]
    return out


def main(console: Console | None = None) -> None:
    print_area(console or Console(), f"HE encoding: BFV N={he.SLOTS}, one "
               f"{he.CIPHERTEXT_PRIME_BITS}-bit prime, t = 40-bit prime, "
               f"{he.lanes_for(UPDATE_PARTIES)} lanes per slot for {UPDATE_PARTIES} parties, "
               "seeded symmetric", figures(),
               "TenSEAL CKKS N=4096 [60, 49] (the encoding scifed used before) on the same "
               "vectors, unless the figure names another",
               "CPU time of one process unless it says wall; anchors: issue 14's targets "
               "(best published figure in brackets).")


if __name__ == "__main__":
    main()
