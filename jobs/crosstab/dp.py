"""Noisy tables: ``crosstab`` where a node's policy requires DP.

One row falls in exactly one cell, so a node's whole table has L1 sensitivity 1: it
adds discrete Laplace noise of scale 1/ε to every cell (jobs/privacy.py) before
encryption. What the noise must cover decides what may depend on the rows:

* the **levels** are each column's declared enumeration (``constraints.enum``), never
  the rows' — a column without one is refused before a row is read, and a row with an
  undeclared level is left out, as a row with a missing value;
* **no cell is withheld** at the node and the node's rules on its rows (fewer than k
  rows, a rare level) are not applied: whether a node withholds or refuses would itself
  depend on the rows, outside ε.

The release node reads a negative noisy count as 0 and applies the same suppression to
the noisy pooled cells (post-processing); a χ² of noisy counts carries their noise.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from jobs.crosstab.compute import Layout
from jobs.crosstab.spec import CrosstabSpec
from jobs.privacy import Block, add_laplace, report
from jobs.stats.disclosure import declared_levels

NOTE = ("differentially private: the counts are noisy (discrete Laplace); negative ones "
        "read as 0, and the test statistics carry the noise")


def declared_cells(found: Counter, spec: CrosstabSpec,
                   record: dict) -> tuple[Counter, dict[str, Counter]]:
    """The cells whose every level is declared, and each column's declared levels."""
    levels = {c: declared_levels(record, c) or [] for c in spec.referenced_columns()}
    keep = Counter({key: n for key, n in found.items()
                    if key[1] in levels[spec.rows] and key[2] in levels[spec.columns]
                    and (not spec.layers or key[0] in levels[spec.layers])})
    return keep, {c: Counter(dict.fromkeys(v, 0)) for c, v in levels.items()}


def add_noise(vec: np.ndarray, layout: Layout, epsilon: float) -> dict:
    """Noise the cells in place (the flags are 0 under DP and stay so)."""
    blocks = [Block("cells", list(range(layout.cells)), 1.0, True)]
    return report(epsilon, add_laplace(vec, blocks, epsilon), {})
