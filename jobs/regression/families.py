"""The GLM families a node evaluates at the coefficients the release node sends: each
with its canonical link, as statsmodels' defaults (binomial: logit, Poisson: log).

A node needs, per row, the IRLS weight w and working response z at the current linear
predictor η, the unit deviance and the log-likelihood term; it sums w·x·xᵀ, w·z·x and the
rest over its rows, and only those sums leave it (encrypted)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import expit, gammaln, xlogy

from scifed.errors import UserError

_EPS = np.finfo(np.float64).eps


@dataclass(frozen=True)
class Evaluated:
    w: np.ndarray          # IRLS weights
    z: np.ndarray          # working response
    deviance: float
    llf: float
    pearson: float


def _binomial(y: np.ndarray, eta: np.ndarray) -> Evaluated:
    mu = np.clip(expit(eta), _EPS, 1 - _EPS)  # statsmodels clips the same way
    v = mu * (1 - mu)
    dev = 2 * float(np.sum(xlogy(y, y / mu) + xlogy(1 - y, (1 - y) / (1 - mu))))
    llf = float(np.sum(xlogy(y, mu) + xlogy(1 - y, 1 - mu)))
    return Evaluated(v, eta + (y - mu) / v, dev, llf, float(np.sum((y - mu) ** 2 / v)))


def _poisson(y: np.ndarray, eta: np.ndarray) -> Evaluated:
    mu = np.maximum(np.exp(eta), _EPS)
    dev = 2 * float(np.sum(xlogy(y, y / mu) - (y - mu)))
    llf = float(np.sum(xlogy(y, mu) - mu - gammaln(y + 1)))
    return Evaluated(mu, eta + (y - mu) / mu, dev, llf, float(np.sum((y - mu) ** 2 / mu)))


EVALUATE = {"binomial": _binomial, "poisson": _poisson}


def link(family: str, mean: float) -> float:
    """The linear predictor of the intercept-only start: logit or log of the mean."""
    if family == "binomial":
        return float(np.log(mean / (1 - mean)))
    return float(np.log(mean))


def check_response(family: str, y: np.ndarray, node: str) -> None:
    """The response a family needs, refused at the node without naming a value."""
    if family == "binomial" and not np.isin(y, (0.0, 1.0)).all():
        raise UserError(f"node {node}: regression: a binomial response must be 0 or 1 in "
                        "every row")
    if family == "poisson" and (y < 0).any():
        raise UserError(f"node {node}: regression: a Poisson response must be a count "
                        "(non-negative) in every row")
