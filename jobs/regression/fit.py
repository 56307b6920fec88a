"""The release node's arithmetic: solve the pooled normal equations (OLS) or take one
Newton / IRLS step (GLM), and the inference statsmodels reports — standard errors, t or z,
p-values, confidence intervals, R², log-likelihood, AIC, BIC.

Normal equations square the condition number, so the solve is done on the equilibrated
system D⁻¹XᵀXD⁻¹ (D the column norms) with one step of iterative refinement; on the test
data this keeps coefficients and standard errors within 1e-9 relative of statsmodels' QR
/ pseudo-inverse fits. A column that is (numerically) a combination of earlier ones is
named, as R names an aliased coefficient, rather than given an arbitrary value.
"""

from __future__ import annotations

import math

import numpy as np

ALIAS_TOLERANCE = 1e-9  # residual variance share of a column explained by earlier ones


def aliased(xtx: np.ndarray) -> list[int]:
    """Columns (indices) that are linear combinations of earlier columns: a column's
    share of its sum of squares left after projecting out the kept earlier columns
    (on the equilibrated cross-product matrix) below :data:`ALIAS_TOLERANCE`."""
    d = np.sqrt(np.clip(np.diag(xtx), 0, None))
    out, kept = [], []
    for j in range(xtx.shape[0]):
        if d[j] == 0:
            out.append(j)
            continue
        a = xtx[np.ix_(kept + [j], kept + [j])] / np.outer(d[kept + [j]], d[kept + [j]])
        if kept:
            r = a[-1, -1] - a[-1, :-1] @ np.linalg.solve(a[:-1, :-1], a[:-1, -1])
        else:
            r = a[-1, -1]
        if r < ALIAS_TOLERANCE:
            out.append(j)
        else:
            kept.append(j)
    return out


def solve(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(a⁻¹b, a⁻¹) for a symmetric positive definite ``a``, equilibrated and refined."""
    d = np.sqrt(np.diag(a))
    scaled = a / np.outer(d, d)
    inv = np.linalg.inv(scaled)
    x = inv @ (b / d)
    x += inv @ (b / d - scaled @ x)  # one step of iterative refinement
    return x / d, inv / np.outer(d, d)


def table(names: list[str], params: np.ndarray, cov: np.ndarray, *, df: float | None,
          confidence: float) -> list[dict]:
    """The coefficient table: t-based with ``df`` residual degrees of freedom, else z."""
    from scipy import stats  # here, not at the top: scipy.stats costs every node ~50 MB
    se = np.sqrt(np.diag(cov))
    stat = params / se
    if df is None:
        pvalues = 2 * stats.norm.sf(np.abs(stat))
        q = stats.norm.ppf(0.5 + confidence / 2)
    else:
        pvalues = 2 * stats.t.sf(np.abs(stat), df)
        q = stats.t.ppf(0.5 + confidence / 2, df)
    return [{"term": n, "estimate": float(b), "std_error": float(s), "statistic": float(t),
             "p_value": float(pv), "ci_low": float(b - q * s), "ci_high": float(b + q * s)}
            for n, b, s, t, pv in zip(names, params, se, stat, pvalues, strict=True)]


def ols(names: list[str], n: int, sum_y: float, yty: float, xtx: np.ndarray,
        xty: np.ndarray, *, intercept: bool, confidence: float) -> dict:
    """An exact OLS fit from the pooled sufficient statistics, as statsmodels' OLS."""
    from scipy import stats  # here, not at the top: scipy.stats costs every node ~50 MB
    p = len(names)
    beta, inv = solve(xtx, xty)
    rss = max(float(yty - 2 * beta @ xty + beta @ xtx @ beta), 0.0)
    df_resid = n - p
    sigma2 = rss / df_resid
    tss = yty - sum_y ** 2 / n if intercept else yty
    r2 = 1 - rss / tss if tss > 0 else math.nan
    k_const = 1 if intercept else 0
    df_model = p - k_const
    llf = -n / 2 * (math.log(2 * math.pi) + math.log(rss / n) + 1) if rss > 0 else math.inf
    fit = {"nobs": n, "df_model": df_model, "df_resid": df_resid, "scale": sigma2,
           "rss": rss, "r_squared": r2,
           "r_squared_adj": 1 - (n - k_const) / df_resid * (1 - r2),
           "log_likelihood": llf, "aic": -2 * llf + 2 * p, "bic": -2 * llf + math.log(n) * p}
    if df_model > 0 and rss > 0:
        f = (tss - rss) / df_model / sigma2
        fit |= {"f_statistic": f, "f_p_value": float(stats.f.sf(f, df_model, df_resid))}
    return {"coefficients": table(names, beta, sigma2 * inv, df=df_resid,
                                  confidence=confidence), "fit": fit}


def glm(names: list[str], params: np.ndarray, inv: np.ndarray, *, n: int, deviance: float,
        llf: float, pearson: float, null_deviance: float | None, intercept: bool,
        iterations: int, confidence: float, scale: float = 1.0) -> dict:
    """A converged GLM as statsmodels' GLM reports it (``scale`` 1 for binomial and
    Poisson, the estimated dispersion for Gamma: the covariance is scale·(XᵀWX)⁻¹)."""
    p = len(names)
    fit = {"nobs": n, "df_model": p - (1 if intercept else 0), "df_resid": n - p,
           "scale": scale, "deviance": deviance, "pearson_chi2": pearson,
           "log_likelihood": llf, "aic": -2 * llf + 2 * p, "bic": -2 * llf + math.log(n) * p,
           "iterations": iterations}
    if null_deviance is not None:
        fit |= {"null_deviance": null_deviance,
                "deviance_explained": 1 - deviance / null_deviance if null_deviance else math.nan}
    return {"coefficients": table(names, params, scale * inv, df=None,
                                  confidence=confidence), "fit": fit}
