"""A node's contribution to a ``pca`` job as one vector, and its decode at the release
node.

Every node sums, over its complete rows of the listed columns (every column present):
``n, Σx (one per column), XᵀX (upper triangle, row by row)``. That is enough for the
pooled covariance and correlation; nothing per row leaves the node. The layout is a
function of the number of columns only.

The encryption carries a number on a 2⁻²⁸ grid (scifed/he.py). For columns of small
values (a fraction of a unit, say) the grid would cost digits of the covariance, so each
number travels as two: its value on the grid and the remainder scaled by 2²⁸. The
pooled sum of both gives the pooled value to float64 precision, and every number stays
a sum of the rows' own products (the sum is still linear in the rows).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from jobs.base import Table, clipped
from jobs.regression.compute import untri
from scifed.he import FRACTION_BITS


def size(p: int) -> int:
    return 1 + p + p * (p + 1) // 2


def sums(table: Table, columns: list[str],
         clip: dict[str, tuple[float, float]] | None = None) -> np.ndarray:
    """This node's ``n, Σx, XᵀX`` over its complete rows, in one query (``clip``: each
    column's values clipped to these bounds first, under DP)."""
    p = len(columns)
    present = " AND ".join(f"c{i} IS NOT NULL" for i in range(p))
    aggs = ["count(*)", *(f"fsum(c{i})" for i in range(p)),
            *(f"fsum(c{i} * c{j})" for i in range(p) for j in range(i, p))]
    exprs = [table.number(c) if clip is None else clipped(table.number(c), *clip[c])
             for c in columns]
    row = table.query(exprs, f"SELECT {', '.join(aggs)} FROM d WHERE {present}")[0]
    return np.array([0.0 if v is None else float(v) for v in row])


def split(vec: np.ndarray) -> np.ndarray:
    """Each number as (its value on the encryption's grid, the rest scaled up)."""
    high = np.ldexp(np.rint(np.ldexp(vec, FRACTION_BITS)), -FRACTION_BITS)
    return np.concatenate([high, np.ldexp(vec - high, FRACTION_BITS)])


def join(total: np.ndarray) -> np.ndarray:
    """The pooled numbers from the pooled halves of :func:`split`."""
    half = total.size // 2
    return total[:half] + np.ldexp(total[half:], -FRACTION_BITS)


@dataclass(frozen=True)
class Moments:
    """The pooled complete rows' count, means and centred cross-products."""

    n: int
    means: np.ndarray
    scatter: np.ndarray   # Σ (x − x̄)(x − x̄)ᵀ

    @classmethod
    def decode(cls, total: np.ndarray, p: int, *, noisy: bool = False) -> Moments:
        """``noisy``: DP noise was added (the count may then be negative)."""
        if total.size != 2 * size(p):
            raise ValueError(f"corrupted aggregate: {total.size} numbers, expected "
                             f"{2 * size(p)}")
        v = join(total)
        n = float(v[0])
        if (n < 0 and not noisy) or abs(n - round(n)) > 0.01:
            raise ValueError("corrupted aggregate: the pooled row count is not a count")
        n = int(round(n))
        s = v[1:1 + p]
        xtx = untri(v[1 + p:], p)
        if n == 0:
            return cls(0, np.zeros(p), np.zeros((p, p)))
        # centred exactly: the raw sums are exact binary fractions, and the subtraction
        # x'x − s s'/n loses most digits of a column far from zero
        fs = [Fraction(float(x)) for x in s]
        scatter = np.array([[float(Fraction(float(xtx[i, j])) - fs[i] * fs[j] / n)
                             for j in range(p)] for i in range(p)])
        return cls(n, s / n, scatter)

    def covariance(self) -> np.ndarray:
        """ddof = 1, as scikit-learn's PCA and pandas."""
        return self.scatter / (self.n - 1)


def contribution(table: Table, columns: list[str],
                 clip: dict[str, tuple[float, float]] | None = None) -> tuple[int, np.ndarray]:
    """(this node's complete rows, its vector as it travels)."""
    vec = sums(table, columns, clip)
    return int(round(vec[0])), split(vec)

