"""The values node's rows for PSI as a filter, per identifier, in fixed point.

Per distinct identifier (normalised as jobs/psi/ids.py does, so the set is the one the
cardinality path would send) and per value column: how many of its rows hold a value
(n), and the sums of the fixed-point values u = round((clip(x) − min) / resolution) and
of u². Rows sharing an identifier are summed into one position, so the node that learns
which positions match (E) does not see how often an identifier repeats. Every u lies in
[0, levels], so the sums are non-negative integers; they must stay below the plain
modulus t of the encryption (jobs/psi/bfv.py) over all of the node's rows, which bounds
them over any subset, the intersection included.

The released statistics are decoded from these sums by the release node
(jobs/psi/release.py): Σx = n·min + resolution·Σu, and the variance
resolution²·(n·Σu² − (Σu)²) / (n·(n − 1)), in exact integer arithmetic before the last
division.
"""

from __future__ import annotations

import numpy as np

from jobs.base import Table
from jobs.psi.bfv import PLAIN_MODULUS
from jobs.psi.ids import canonical
from jobs.psi.spec import PsiValues
from scifed.errors import UserError


def holdings(values: PsiValues, table: Table, id_column: str, id_type: str,
             steps: list[str], node: str) -> dict[bytes, list[int]]:
    """identifier -> [n, Σu, Σu²] per column, over this node's selected rows."""
    table.require(values.columns, f"node {node}: psi.values.columns", numeric=True)
    exprs = [table.category(id_column), *(table.number(c) for c in values.columns)]
    cols = ", ".join(f"c{i}" for i in range(len(exprs)))
    rows = table.query(exprs, f"SELECT {cols} FROM d WHERE c0 IS NOT NULL")
    if not rows:
        return {}
    ids = np.array([canonical(str(r[0]), id_type, steps) for r in rows], dtype=object)
    keep = ids != ""
    out: dict[bytes, list[int]] = {}
    blocks = []
    for j, c in enumerate(values.columns):
        x = np.array([np.nan if r[j + 1] is None else r[j + 1] for r in rows], dtype=float)
        present = ~np.isnan(x) & keep
        u = fixed_point(x, values, c)
        blocks.append((present, u))
        total = int((u[present] ** 2).sum(dtype=object)) if present.any() else 0
        if total >= PLAIN_MODULUS:
            raise UserError(f"node {node}: psi.values: the sum of squares of {c!r} over this "
                            f"node's rows would exceed the exact range of the filter "
                            f"(2^52); coarsen resolution.{c} or narrow bounds.{c}")
    for i in np.flatnonzero(keep):
        out.setdefault(ids[i].encode(), [0] * (3 * len(values.columns)))
    for j, (present, u) in enumerate(blocks):
        for i in np.flatnonzero(present):
            acc = out[ids[i].encode()]
            v = int(u[i])
            acc[3 * j] += 1
            acc[3 * j + 1] += v
            acc[3 * j + 2] += v * v
    return out


def fixed_point(x: np.ndarray, values: PsiValues, column: str) -> np.ndarray:
    """round((clip(x) − min) / resolution), as integers in [0, levels] (NaN → 0)."""
    lo, hi = values.bounds[column]
    u = np.rint((np.clip(x, lo, hi) - lo) / values.step(column))
    return np.clip(np.nan_to_num(u), 0, values.levels(column)).astype(np.int64)
