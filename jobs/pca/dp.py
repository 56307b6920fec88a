"""Noisy sums: ``pca`` where a node's policy requires DP.

The whole release is a function of one vector per node (n, Σx, XᵀX over the complete
rows), so each node noises its own before encryption (jobs/privacy.py: one block per
entry, ε split evenly; one row moves ``XᵀX[i, j]`` by at most ``|x_i|·|x_j|`` once the
columns are clipped to bounds from ``pca.dp.bounds`` or the declared constraints, never
from the rows). As for ``regression``, the node's data-dependent refusal (0 < n < k) is
not applied under DP — whether a node refuses would depend on the rows, outside ε —
and bounds too wide for the encryption are refused from the bounds and the catalogued
row count alone. The eigendecomposition of the noisy covariance is post-processing; a
noisy matrix may have negative eigenvalues, released as 0 as in the exact path.
"""

from __future__ import annotations

import numpy as np

from jobs import privacy
from jobs.base import Limits
from jobs.pca.spec import PcaSpec
from jobs.privacy import Block, add_laplace, clipping_bounds, magnitude, report

NOTE = ("differentially private: the components come from noisy sums; the eigenvalues "
        "and loadings carry that noise")


def bounds(spec: PcaSpec, record: dict) -> dict[str, tuple[float, float]]:
    return clipping_bounds(spec.columns, spec.dp, record, "pca.dp.bounds")


def blocks(spec: PcaSpec, clip: dict[str, tuple[float, float]]) -> list[Block]:
    """One block per entry of the (joined) vector: n, Σx, XᵀX (compute.sums' layout)."""
    cols = spec.columns
    b = [magnitude(clip[c]) for c in cols]
    out = [Block("n", [0], 1.0, True)]
    out += [Block(f"Σ{c}", [1 + i], b[i], False) for i, c in enumerate(cols)]
    i = 1 + len(cols)
    for a, c in zip(*np.triu_indices(len(cols)), strict=True):
        out.append(Block(f"Σ{cols[a]}·{cols[c]}", [i], b[a] * b[c], False))
        i += 1
    return out


def check_capacity(spec: PcaSpec, limits: Limits) -> None:
    assert limits.epsilon is not None
    privacy.check_capacity(blocks(spec, bounds(spec, limits.record)), limits.epsilon,
                           int(limits.record["record_count"]), "pca.dp.bounds")


def add_noise(vec: np.ndarray, spec: PcaSpec, record: dict, epsilon: float) -> dict:
    """Noise the joined vector in place; the mechanism report."""
    clip = bounds(spec, record)
    return report(epsilon, add_laplace(vec, blocks(spec, clip), epsilon), clip)
