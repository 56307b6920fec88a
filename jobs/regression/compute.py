"""A node's contributions as vectors, and their decode at the release node.

Every node fills the same layout (a function of the model and the vocabulary only), so
the vectors add under encryption:

* the compute round — the sufficient statistics of least squares, enough for an exact
  OLS fit and for the checks every family needs before it iterates (rank, residual df):
  ``n, Σy, Σy², XᵀX (upper triangle, row by row), Xᵀy``
* each further round of a GLM — at the coefficients β the round's query carries:
  ``XᵀWX (upper triangle), XᵀWz, deviance, log-likelihood, Pearson χ², null deviance,
  rows fitted exactly, Σlog(y/μ), Σy/μ, Σlog y`` (W, z the IRLS weights and working
  response at β; the null deviance at the pooled mean the query carries; "rows fitted
  exactly" counts rows with |y − μ| < 1e-3, which tells (quasi-)separation and is never
  released; the last three give a Gamma fit's log-likelihood at its estimated scale and
  are 0 for the other families)
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from jobs.regression.families import EVALUATE, link


def tri(a: np.ndarray) -> np.ndarray:
    return a[np.triu_indices(a.shape[0])]


def untri(v: np.ndarray, p: int) -> np.ndarray:
    out = np.zeros((p, p))
    out[np.triu_indices(p)] = v
    return out + np.triu(out, 1).T


def sufficient(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The compute round's vector."""
    return np.concatenate([[y.size, y.sum(), y @ y], tri(x.T @ x), x.T @ y])


def size(p: int) -> int:
    return 3 + p * (p + 1) // 2 + p


def round_size(p: int) -> int:
    return p * (p + 1) // 2 + p + 8


def iteration(family: str, x: np.ndarray, y: np.ndarray, beta: np.ndarray,
              mean: float | None, offset: np.ndarray | None = None) -> np.ndarray:
    """One IRLS round's vector at ``beta`` (``mean``: the pooled mean of y, for the null
    deviance; None: not asked; ``offset``: added to the linear predictor, and taken off
    the working response, which regresses on X alone)."""
    off = np.zeros(y.size) if offset is None else offset
    ev = EVALUATE[family](y, x @ beta + off)
    ev = replace(ev, z=ev.z - off)
    null = 0.0
    if mean is not None and y.size:
        null = EVALUATE[family](y, np.full(y.size, link(family, mean))).deviance
    resid = (ev.z - x @ beta) * ev.w  # y − μ = (z − η)·w for the canonical links
    exact = float(np.sum(np.abs(resid) < 1e-3)) if family == "binomial" else 0.0
    return np.concatenate([tri(x.T @ (x * ev.w[:, None])), x.T @ (ev.w * ev.z),
                           [ev.deviance, ev.llf, ev.pearson, null, exact, *ev.extra]])


@dataclass(frozen=True)
class Sufficient:
    n: int
    sum_y: float
    yty: float
    xtx: np.ndarray
    xty: np.ndarray

    @classmethod
    def decode(cls, total: np.ndarray, p: int, *, noisy: bool = False) -> Sufficient:
        """``noisy``: DP noise was added (the count may then be negative)."""
        if total.size != size(p):
            raise ValueError(f"corrupted aggregate: {total.size} numbers, expected {size(p)}")
        n = float(total[0])
        if abs(n - round(n)) > 0.01 or (n < 0 and not noisy):
            raise ValueError("corrupted aggregate: the pooled row count is not a count")
        m = p * (p + 1) // 2
        return cls(int(round(n)), float(total[1]), float(total[2]),
                   untri(total[3:3 + m], p), total[3 + m:3 + m + p].copy())


@dataclass(frozen=True)
class Step:
    hessian: np.ndarray   # XᵀWX
    score: np.ndarray     # XᵀWz
    deviance: float
    llf: float
    pearson: float
    null_deviance: float
    exact: int
    extra: tuple[float, float, float]

    @classmethod
    def decode(cls, total: np.ndarray, p: int) -> Step:
        if total.size != round_size(p):
            raise ValueError(f"corrupted aggregate: {total.size} numbers, expected "
                             f"{round_size(p)}")
        m = p * (p + 1) // 2
        dev, llf, pearson, null, exact, *extra = (float(v) for v in total[m + p:])
        return cls(untri(total[:m], p), total[m:m + p].copy(), dev, llf, pearson, null,
                   int(round(exact)), (extra[0], extra[1], extra[2]))
