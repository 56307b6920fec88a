"""Noisy counts: Kaplan–Meier and the log-rank test where a node's policy requires DP.

Each complete row falls in exactly one (group, bin, status) cell, so a node's counts have
L1 sensitivity 1: it adds discrete Laplace noise of scale 1/ε to every cell before
encryption (jobs/privacy.py); the bin edges in front of the vector come from the spec or
the column dictionary and are not noised. What the noise must cover decides what may
depend on the rows:

* the **groups** are the column's declared enumeration, never the rows' levels — a group
  column without one is refused before a row is read, and a row with an undeclared level
  is left out, as an incomplete row is;
* the node's **rules on its rows** (fewer than k rows, a rare level) are not applied:
  whether a node refuses would itself depend on the rows, outside ε.

The release node reads a negative noisy count as 0 and widens the bins on the noisy
counts (post-processing). A Cox model needs exact rounds and is refused under DP.
"""

from __future__ import annotations

import numpy as np

from jobs.privacy import Block, add_laplace, report
from jobs.stats.disclosure import declared_levels
from jobs.survival.compute import ALL
from jobs.survival.spec import SurvivalSpec
from scifed.errors import UserError

NOTE = ("differentially private: the event and censoring counts are noisy (discrete "
        "Laplace); the curves, bands and tests carry that noise")


def levels(spec: SurvivalSpec, record: dict, node: str) -> dict[str, int]:
    """The declared groups (``{"all": 0}`` without groups); refuses what DP cannot use."""
    if spec.cox is not None:
        raise UserError(f"node {node}: survival: a Cox model is not available where policy "
                        "requires differential privacy (each Newton step is an exact "
                        "round); drop cox for noisy Kaplan–Meier curves")
    if spec.groups is None:
        return {ALL: 0}
    declared = declared_levels(record, spec.groups)
    if not declared:
        raise UserError(f"survival.groups: under differential privacy the groups must be "
                        f"the column's declared values (constraints.enum); "
                        f"{spec.groups!r} has none")
    return dict.fromkeys(declared, 0)


def add_noise(vec: np.ndarray, edges: int, epsilon: float) -> dict:
    """Noise the cells (after the ``edges`` numbers of the grid) in place."""
    blocks = [Block("events and censorings per group and bin", list(range(edges, vec.size)),
                    1.0, True)]
    return report(epsilon, add_laplace(vec, blocks, epsilon), {})
