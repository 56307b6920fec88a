"""Kaplan–Meier, Greenwood, the log-log confidence band, the median and the log-rank test,
from released counts per bin (grouped data: a bin's events and censorings at its right
edge, the censored counted at risk there, as a library does for tied times).

For one group with events d_j, censorings c_j and N rows, at the right edge t_j of bin j:

* at risk n_j = N − Σ_{i<j} (d_i + c_i)
* S(t_j) = Π_{i≤j} (1 − d_i / n_i)
* Greenwood: Var log S(t_j) = Σ_{i≤j} d_i / (n_i (n_i − d_i))  (terms with d_i = n_i left
  out, as scikit-survival does)
* log-log band: S^exp(±z σ / log S), σ² the Greenwood sum (Borgan & Liestøl)
* median: the first t_j with S(t_j) ≤ 0.5 (None: not reached)

The log-rank test sums, over bins with an event, each group's observed minus expected
events (n_gj D_j / N_j) and their hypergeometric covariance; χ² on (groups − 1) degrees
of freedom.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Curve:
    at_risk: np.ndarray
    events: np.ndarray
    censored: np.ndarray
    survival: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray


def at_risk(events: np.ndarray, censored: np.ndarray) -> np.ndarray:
    """At-risk counts at each bin (the last axis), from events and censorings."""
    left = np.cumsum(events + censored, axis=-1)
    total = left[..., -1:]
    return total - left + events + censored


def kaplan_meier(events: np.ndarray, censored: np.ndarray, confidence: float) -> Curve:
    from scipy import stats  # here, not at the top: scipy.stats costs every node ~50 MB
    n = at_risk(events, censored)
    ratio = np.divide(events, n, out=np.zeros_like(events, dtype=float), where=events != 0)
    survival = np.cumprod(1.0 - ratio)
    var = np.divide(events, n * (n - events), out=np.zeros_like(events, dtype=float),
                    where=(events != 0) & (n != events))
    sigma = np.sqrt(np.cumsum(var))
    eps = np.finfo(float).eps
    alive = survival > eps
    log_s = np.log(survival, where=alive, out=np.zeros_like(survival))
    theta = np.divide(sigma, log_s, where=log_s < -eps, out=np.zeros_like(survival))
    z = stats.norm.isf((1.0 - confidence) / 2.0)
    low = np.where(alive, np.exp(np.exp(-z * theta) * log_s), 0.0)
    high = np.where(alive, np.exp(np.exp(z * theta) * log_s), 0.0)
    return Curve(n, events, censored, survival, low, high)


def median(times: list[float], survival: np.ndarray) -> float | None:
    below = np.flatnonzero(survival <= 0.5)
    return float(times[below[0]]) if below.size else None


@dataclass(frozen=True)
class LogRank:
    statistic: float
    df: int
    p_value: float
    observed: np.ndarray
    expected: np.ndarray


def log_rank(events: np.ndarray, censored: np.ndarray) -> LogRank:
    """``events``, ``censored``: groups × bins."""
    from scipy import stats  # here, not at the top: scipy.stats costs every node ~50 MB
    n = at_risk(events, censored)
    groups = events.shape[0]
    expected = np.zeros(groups)
    covar = np.zeros((groups, groups))
    for j in range(events.shape[1]):
        d, r = events[:, j], n[:, j]
        total_d, total_n = d.sum(), r.sum()
        if total_d == 0:
            continue
        expected += r * total_d / total_n
        if total_n > 1:
            temp = r * total_d * (total_n - total_d) / (total_n * (total_n - 1))
            covar[np.diag_indices(groups)] += temp
            covar -= np.outer(temp, r) / total_n
    observed = events.sum(axis=1)
    df = groups - 1
    diff = observed[:df] - expected[:df]
    chisq = float(np.linalg.solve(covar[:df, :df], diff) @ diff)
    return LogRank(chisq, df, float(stats.chi2.sf(chisq, df)), observed, expected)
