"""Differential privacy of ``psi``, with OpenDP: each node whose policy requires DP (or
where the job asks for it) adds discrete Laplace noise of scale 1/ε to its own
contribution before it is encrypted — R to the count, every other node to its 0 — so
the released sum carries every such node's noise and each such node is charged its ε
through its own budget ledger, as for any contribution.

Why sensitivity 1: neighbouring datasets differ by one row at this node (unbounded DP).
A row adds or removes at most one identifier of the node's set (none if it repeats one),
and so changes the size of the intersection by at most one.
"""

from __future__ import annotations

import numpy as np
import opendp.domains as dpd
import opendp.measurements as dpm
import opendp.metrics as dpx
import opendp.mod

opendp.mod.enable_features("contrib")  # the modules, not the prelude: see jobs/privacy.py


def add_noise(vec: np.ndarray, epsilon: float) -> dict:
    scale = 1.0 / epsilon
    meas = dpm.make_laplace(dpd.atom_domain(T=int), dpx.absolute_distance(T=int),
                            scale=scale)
    vec[0] = float(meas(int(round(vec[0]))))
    return {"mechanism": "discrete Laplace, OpenDP " + opendp.mod.__version__,
            "neighbouring": "add or remove one row", "sensitivity": 1,
            "epsilon": epsilon, "delta": 0.0, "scale": scale}
