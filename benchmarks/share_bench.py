"""What the t-of-n shares of the self-mask seeds (node/masking.py) cost one node of an
aggregate job, beside the direct reveal of its own seed they replaced (the unshared
baseline), at 3 and 10 nodes; and what the release node spends rebuilding the seeds.

Per node and job: the bytes it sends and receives for the unmask (share boxes out with
its compute answer, its boxes in with the unmask task, its sealed answer out; the
baseline: one sealed seed out) and the CPU it spends (split and box at the compute, open
and seal at the unmask; the baseline: seal one seed). The release node's CPU to rebuild
every seed and make the masks of a stats job's sum (a 20-value vector), beside making
them from revealed seeds. The real functions, real X25519 keys and study key; no
network (the bytes are what travels).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from node.masking import (
    exact_slots,
    open_shares,
    recovered_masks,
    revealed_masks,
    seal_seed,
    seal_view,
    self_seed,
    share_boxes,
)
from scifed import he
from scifed.sealing import ensure_seal_key
from scifed.tasks import TaskHeader

REPEATS = 5


def _best_cpu(action: Callable[[], object], repeats: int = REPEATS) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        action()
        best = min(best, time.process_time() - start)
    return best


def measure(n: int) -> dict[str, float]:
    """Bytes and CPU ms per node per job, shared and direct, and the release's ms."""
    key = he.StudyKey.generate()
    names = [f"node{i:02d}" for i in range(n)]
    h = TaskHeader(job_id="job-bench", study_id="s", key_version=1, job_type="stats",
                   n_nodes=n, dataset="d", spec={})
    slots = exact_slots(np.zeros(20))
    with tempfile.TemporaryDirectory() as tmp:
        dirs = {m: Path(tmp) / m for m in names}
        publics = {m: ensure_seal_key(dirs[m]) for m in names}
        secrets = {m: bytes([i]) * 32 for i, m in enumerate(names)}
        boxes = {m: share_boxes(m, dirs[m], secrets[m], h, publics, 1) for m in names}
        me = names[0]
        inbound = {s: b[me] for s, b in boxes.items() if me in b}

        def answer(node: str) -> bytes:
            got = {s: b[node] for s, b in boxes.items() if node in b}
            shares = open_shares(node, dirs[node], h, publics, 1, got,
                                 [m for m in names if m != node])
            return seal_view(key, h.job_id, node, 1, names, [], shares, {})

        compute_s = _best_cpu(lambda: share_boxes(me, dirs[me], secrets[me], h, publics, 1))
        unmask_s = _best_cpu(lambda: answer(me))
        reveals = {m: answer(m) for m in names}
        seeds = {m: seal_seed(key, h.job_id, m, 1, self_seed(secrets[m], h, 1))
                 for m in names}
        direct_s = _best_cpu(lambda: seal_seed(key, h.job_id, me, 1,
                                               self_seed(secrets[me], h, 1)))
        rebuild_s = _best_cpu(lambda: recovered_masks(key, h.job_id, reveals, names, [], 1,
                                                      slots))
        baseline_s = _best_cpu(lambda: revealed_masks(key, h.job_id, seeds, names, 1, slots))
        assert np.array_equal(recovered_masks(key, h.job_id, reveals, names, [], 1, slots),
                              revealed_masks(key, h.job_id, seeds, names, 1, slots))
        return {
            "bytes": sum(map(len, boxes[me].values())) + sum(map(len, inbound.values()))
            + len(reveals[me]),
            "bytes_direct": len(seeds[me]),
            "ms": (compute_s + unmask_s) * 1e3, "ms_direct": direct_s * 1e3,
            "release_ms": rebuild_s * 1e3, "release_ms_direct": baseline_s * 1e3}
