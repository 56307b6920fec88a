"""The protocol core of ``psi`` (jobs/psi/ecdh.py, as two nodes run it in
jobs/psi/protocol.py): hashing to X25519, blinding, sorting, truncation and the
comparison, for two parties of 10^5 identifiers each (half of them shared), in CPU time
(``time.process_time``, both parties on this one core). Beside it, measured in the same
run: a plain hash join of the same identifiers (BLAKE2b and a set intersection, no
privacy) as the baseline, and the reference anchor of performance-anchors §5 (X25519
with OpenSSL, 16,004 items/s/core for both parties, 48 B/item; target ≥ 16,000 and
≤ 40 B/item). OpenMined PSI is not measured here: its wheel downgrades protobuf below
what scifed's gRPC stubs need, so it is not installed in this environment.

Bytes on the wire per identifier (averaged over both sets): the core sends each set
once as 32-byte points to the other party and the fully blinded set of the non-releasing
party's peer truncated to 12 bytes; in the federation the releasing node's own last
blinding travels too (the coordinator relays it back to that node's compute), and every
blob goes sealed (28 B per blob) and base64 inside the task's JSON (× 4/3).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import time

from rich.console import Console

from benchmarks.table import Figure, print_area
from jobs.psi import bfv, ecdh

ANCHOR_RATE, ANCHOR_BYTES = 16_004, 48
TARGET_RATE, TARGET_BYTES = 16_000, 40


def identifiers(n: int, offset: int) -> list[bytes]:
    return [f"P{i:08d}".encode() for i in range(offset, offset + n)]


def ecdh_psi(a_ids: list[bytes], b_ids: list[bytes]) -> dict:
    """Two parties, A releasing, as the nodes' steps run them (peers [A, B])."""
    job = "job-bench"
    a_key, b_key = ecdh.key(os.urandom(32)), ecdh.key(os.urandom(32))
    t = time.process_time()
    a_to_b = ecdh.pack(ecdh.blind(a_key, ecdh.hashed(job, a_ids)))         # step 0, A
    b_to_a = ecdh.pack(ecdh.blind(b_key, ecdh.hashed(job, b_ids)))         # step 0, B
    a_final = ecdh.pack(ecdh.blind(b_key, ecdh.unpack(a_to_b, ecdh.POINT, "A")),
                        ecdh.TRUNCATED)                                    # step 1, B
    b_final = ecdh.pack(ecdh.blind(a_key, ecdh.unpack(b_to_a, ecdh.POINT, "B")),
                        ecdh.TRUNCATED)                                    # step 1, A
    size = ecdh.intersection_size([ecdh.unpack(a_final, ecdh.TRUNCATED, "B"),
                                   ecdh.unpack(b_final, ecdh.TRUNCATED, "A")])  # A
    cpu = time.process_time() - t
    items = len(a_ids) + len(b_ids)
    core = len(a_to_b) + len(b_to_a) + len(a_final)
    relayed = core + len(b_final)
    sealed = relayed + 4 * 28
    return {"size": size, "cpu": cpu, "rate": items / cpu, "core": core / items,
            "federation": relayed / items, "json": sealed * 4 / 3 / items}


def filter_values(a_ids: list[bytes], b_ids: list[bytes], columns: int = 1) -> dict:
    """PSI as a filter beyond the ring (jobs/psi/filtering.py): A's key and the
    encryption of [n, Σu, Σu²] per column and identifier, B's masked product by the
    membership bits, A's decryption and block sums; CPU time and bytes per identifier
    of A, the ring's points (one more 32-byte set in order) not included."""
    common = set(b_ids)
    bits = [int(x in common) for x in a_ids]
    values = [[1, i % 5000, (i % 5000) ** 2] * columns for i in range(len(a_ids))]
    blocks = 3 * columns
    t = time.process_time()
    ctx = bfv.new_key()                                                    # A
    flat = [v[q] for q in range(blocks) for v in values]
    context, encrypted = bfv.public_bytes(ctx), bfv.encrypt(ctx, flat)
    public = bfv.load_public(context, "A")                                # B
    product, masks = bfv.masked_product(public, encrypted, bits, blocks, "A")
    sums = bfv.block_sums(ctx, product, blocks, "B")                      # A
    cpu = time.process_time() - t
    exact = [(s - m) % bfv.PLAIN_MODULUS for s, m in zip(sums, masks, strict=True)]
    expected = [sum(b * v[q] for b, v in zip(bits, values, strict=True)) for q in range(blocks)]
    assert exact == expected
    n = len(a_ids)
    return {"cpu": cpu, "rate": n / cpu,
            "bytes": (len(context) + len(encrypted) + len(product)) / n}


def hash_join(a_ids: list[bytes], b_ids: list[bytes]) -> dict:
    t = time.process_time()
    a = {hashlib.blake2b(x, digest_size=32).digest() for x in a_ids}
    b = {hashlib.blake2b(x, digest_size=32).digest() for x in b_ids}
    size = len(a & b)
    cpu = time.process_time() - t
    return {"size": size, "cpu": cpu, "rate": (len(a_ids) + len(b_ids)) / cpu,
            "core": 32.0}


def main(console: Console | None = None, n: int = 100_000) -> None:
    a_ids, b_ids = identifiers(n, 0), identifiers(n, n // 2)
    ours, plain = ecdh_psi(a_ids, b_ids), hash_join(a_ids, b_ids)
    filt = filter_values(a_ids, b_ids)
    assert ours["size"] == plain["size"] == n - n // 2, (ours["size"], plain["size"])
    figures = [
        Figure(f"ECDH-PSI X25519, 2 × {n:,} identifiers, both parties, CPU", ours["rate"],
               plain["rate"], f"≥ {TARGET_RATE:,} (X25519 OpenSSL {ANCHOR_RATE:,})",
               "items/s/core"),
        Figure("  CPU time, both parties on one core", ours["cpu"], plain["cpu"], "", "s"),
        Figure("  bytes per identifier, protocol core", ours["core"], plain["core"],
               f"≤ {TARGET_BYTES} (X25519 reference {ANCHOR_BYTES}; OpenMined 38)", "B/item"),
        Figure("  bytes per identifier, as the federation relays it", ours["federation"],
               None, f"≤ {TARGET_BYTES}", "B/item"),
        Figure("  bytes per identifier, sealed, in the task's JSON", ours["json"], None, "",
               "B/item"),
        Figure("  false-match chance of the truncated values",
               n * n / 2.0 ** (8 * ecdh.TRUNCATED), None, "", "probability"),
        Figure("PSI as a filter, + BFV values of 1 column (per identifier of A)",
               filt["rate"], None, "", "items/s/core"),
        Figure("  bytes per identifier of A", filt["bytes"], None, "", "B/item"),
    ]
    print_area(console or Console(), f"psi: 2 parties × {n:,} identifiers, {n - n // 2:,} "
               "shared (jobs/psi's protocol core)", figures, "a plain hash join of the same "
               "identifiers (BLAKE2b, set intersection, no privacy)", "OpenMined PSI is not "
               "measured: its wheel downgrades protobuf below what scifed's gRPC stubs need. "
               "Anchors: performance anchors §5, T10-T11.")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="identifiers per party")
    main(n=parser.parse_args().n)
