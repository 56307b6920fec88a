"""The GLM families a node evaluates at the coefficients the release node sends:
binomial (logit) and Poisson (log) with their canonical links, as statsmodels' defaults,
and Gamma with the log link (the usual model of a positive, right-skewed measurement;
statsmodels' ``Gamma(link=Log())``). For the log link the IRLS weight of a Gamma row is 1
and the fit is Fisher scoring, as statsmodels' IRLS; its dispersion is estimated (Pearson
χ² / residual df), so the log-likelihood needs three sums at the node that the release
node combines with that scale (:func:`gamma_llf`).

A node needs, per row, the IRLS weight w and working response z at the current linear
predictor η, the unit deviance and the log-likelihood term; it sums w·x·xᵀ, w·z·x and the
rest over its rows, and only those sums leave it (encrypted)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scifed.errors import UserError

_EPS = np.finfo(np.float64).eps


@dataclass(frozen=True)
class Evaluated:
    w: np.ndarray          # IRLS weights
    z: np.ndarray          # working response
    deviance: float
    llf: float
    pearson: float
    extra: tuple[float, float, float] = (0.0, 0.0, 0.0)  # Gamma: Σlog(y/μ), Σy/μ, Σlog y


# scipy.special is imported where a GLM evaluates, not with the module: every node
# imports the job types, and most never fit a GLM.


def _binomial(y: np.ndarray, eta: np.ndarray) -> Evaluated:
    from scipy.special import expit, xlogy

    mu = np.clip(expit(eta), _EPS, 1 - _EPS)  # statsmodels clips the same way
    v = mu * (1 - mu)
    dev = 2 * float(np.sum(xlogy(y, y / mu) + xlogy(1 - y, (1 - y) / (1 - mu))))
    llf = float(np.sum(xlogy(y, mu) + xlogy(1 - y, 1 - mu)))
    return Evaluated(v, eta + (y - mu) / v, dev, llf, float(np.sum((y - mu) ** 2 / v)))


def _poisson(y: np.ndarray, eta: np.ndarray) -> Evaluated:
    from scipy.special import gammaln, xlogy

    mu = np.maximum(np.exp(eta), _EPS)
    dev = 2 * float(np.sum(xlogy(y, y / mu) - (y - mu)))
    llf = float(np.sum(xlogy(y, mu) - mu - gammaln(y + 1)))
    return Evaluated(mu, eta + (y - mu) / mu, dev, llf, float(np.sum((y - mu) ** 2 / mu)))


def _gamma(y: np.ndarray, eta: np.ndarray) -> Evaluated:
    mu = np.maximum(np.exp(eta), _EPS)
    ratio = y / mu
    dev = 2 * float(np.sum((y - mu) / mu - np.log(ratio)))
    return Evaluated(np.ones_like(y), eta + (y - mu) / mu, dev, 0.0,
                     float(np.sum((ratio - 1) ** 2)),
                     (float(np.sum(np.log(ratio))), float(np.sum(ratio)),
                      float(np.sum(np.log(y)))))


EVALUATE = {"binomial": _binomial, "poisson": _poisson, "gamma": _gamma}
ESTIMATED_SCALE = {"gamma"}  # dispersion = Pearson χ² / residual df, as statsmodels
LINKS = {"gaussian": "identity", "binomial": "logit", "poisson": "log", "gamma": "log"}


def link(family: str, mean: float) -> float:
    """The linear predictor of the intercept-only start: logit or log of the mean."""
    if family == "binomial":
        return float(np.log(mean / (1 - mean)))
    return float(np.log(mean))


def gamma_llf(extra: tuple[float, float, float], n: int, scale: float) -> float:
    """Σ of statsmodels' Gamma ``loglike_obs`` at dispersion ``scale`` from the pooled
    Σlog(y/μ), Σy/μ and Σlog y."""
    from scipy.special import gammaln

    log_ratio, ratio, log_y = extra
    a = 1.0 / scale
    return float(a * log_ratio - n * a * np.log(scale) - a * ratio - n * gammaln(a) - log_y)


def check_response(family: str, y: np.ndarray, node: str) -> None:
    """The response a family needs, refused at the node without naming a value."""
    if family == "binomial" and not np.isin(y, (0.0, 1.0)).all():
        raise UserError(f"node {node}: regression: a binomial response must be 0 or 1 in "
                        "every row")
    if family == "poisson" and (y < 0).any():
        raise UserError(f"node {node}: regression: a Poisson response must be a count "
                        "(non-negative) in every row")
    if family == "gamma" and (y <= 0).any():
        raise UserError(f"node {node}: regression: a Gamma response must be positive in "
                        "every row")
