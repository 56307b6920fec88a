"""The release node's Cox fit: federated Newton–Raphson on Breslow's partial likelihood
over the released bins, one more encrypted round per iteration (:class:`NextRound`).

From one round's pooled sums at β (cox.py: S0_j, S1_j, S2_j per released bin j, centred
by c, and Σ_events x) and the events d_j per bin the compute round released:

* log partial likelihood  ℓ(β) = (Σ_events x)ᵀβ − Σ_j d_j (log S0_j + c)
* score                   U(β) = Σ_events x − Σ_j d_j S1_j / S0_j
* information             I(β) = Σ_j d_j (S2_j / S0_j − m_j m_jᵀ),  m_j = S1_j / S0_j

The first round is at β = 0 (c = 0): its S0 are the released at-risk counts (checked),
its S1 of the first bin the covariate sums over all rows, which give the centre of the
later rounds, its ℓ the null log partial likelihood, and its I the design's rank: a
covariate that is a combination of the ones before it (or constant) is named and the job
refused. Then β ← β + I⁻¹U. A step that lowers ℓ is halved back towards the best β. The
fit has converged when ℓ changes by at most ``tol``·(|ℓ| + 0.1); the released
coefficients are one more Newton step from that round's sums, their covariance that
round's I⁻¹ (as regression's GLMs). Where that last step is still large against the
coefficients (|δ| > √tol·max(|β|, 1)), ℓ has flattened without a maximum: a monotone
likelihood (a covariate orders the events perfectly, some coefficient is infinite), and
the job is refused with one message, as it is when no convergence comes within
``max_iter`` rounds.
"""

from __future__ import annotations

import math

import numpy as np

from jobs.base import NextRound, Pooled, Released
from jobs.regression import disclosure as regression_rules
from jobs.regression import fit
from jobs.survival import cox
from jobs.survival.spec import SurvivalSpec
from scifed.errors import UserError

COUNT_TOLERANCE = 0.01


def start(spec: SurvivalSpec, pooled: Pooled, km: dict, events: np.ndarray,
          at_risk: np.ndarray) -> NextRound:
    """After the Kaplan–Meier release: the first Newton round, at β = 0."""
    lay = cox.layout(spec, pooled.vocab)
    p = len(cox.names(lay))
    n = int(at_risk[0])
    regression_rules.check_pooled(n, p, pooled.k, "survival")
    beta = [0.0] * p
    state = {"km": km, "events": [float(d) for d in events],
             "at_risk": [float(a) for a in at_risk], "n": n, "iteration": 1,
             "beta": beta, "center": 0.0, "mean": None, "null": None,
             "best": None}
    return NextRound(query=_query(beta, 0.0, km, pooled), state=state)


def _query(beta: list[float], center: float, km: dict, pooled: Pooled) -> dict:
    return {"beta": beta, "center": center, "edges": km["model"]["edges"],
            "vocab": pooled.vocab}


def breslow(s: cox.RiskSums, d: np.ndarray, beta: np.ndarray,
            center: float) -> tuple[float, np.ndarray, np.ndarray]:
    """(ℓ, U, I) at ``beta`` (formulas above); bins without events add nothing."""
    e = d > 0
    s0, s1, s2, de = s.s0[e], s.s1[e], s.s2[e], d[e]
    if np.any(s0 <= 0):
        raise UserError("survival: the Cox fit diverged (an empty risk set holds events)")
    m = s1 / s0[:, None]
    llf = float(s.events_x @ beta - de @ (np.log(s0) + center))
    score = s.events_x - de @ m
    info = np.einsum("j,jab->ab", de, s2 / s0[:, None, None] - m[:, :, None] * m[:, None, :])
    return llf, score, info


def iterate(spec: SurvivalSpec, pooled: Pooled) -> Released | NextRound:
    state = dict(pooled.state or {})
    km = state["km"]
    lay = cox.layout(spec, pooled.vocab)
    names = cox.names(lay)
    d = np.asarray(state["events"])
    try:
        sums = cox.RiskSums.decode(pooled.totals["sum"], d.size, len(names))
    except ValueError as exc:
        raise UserError(f"survival: {exc}") from None
    it = int(state["iteration"])
    beta, center = np.asarray(state["beta"], dtype=np.float64), float(state["center"])
    if it == 1:
        if np.any(np.abs(sums.s0 - np.asarray(state["at_risk"])) > COUNT_TOLERANCE):
            raise UserError("survival: the Cox round's risk sets differ from the released "
                            "at-risk counts (the data changed during the job)")
        state["mean"] = [float(v) for v in sums.s1[0] / sums.s0[0]]
    llf, score, info = breslow(sums, d, beta, center)
    if not (math.isfinite(llf) and np.all(np.isfinite(info))):
        raise UserError("survival: the Cox fit diverged (the partial likelihood is not "
                        "finite)")
    if it == 1:
        state["null"] = llf
        bad = fit.aliased(info)
        if bad:
            raise UserError(f"survival: the Cox design is singular: "
                            f"{', '.join(names[i] for i in bad)} is a linear combination of "
                            "the covariates before it (or constant in the risk sets); drop it")
    best = state["best"]
    if best is not None and llf < best["llf"] - 1e-12 * (abs(best["llf"]) + 1):
        if it >= spec.max_iter:
            raise UserError(_not_converged(spec))
        # the step overshot: halve it back towards the best coefficients so far
        half = (np.asarray(best["beta"]) + beta) / 2
        return _next(state, half, it, pooled)
    try:
        step, inv = fit.solve(info, score)
    except np.linalg.LinAlgError:
        raise UserError("survival: the Cox information matrix became singular during the fit "
                        "(monotone likelihood: a covariate orders the events perfectly)"
                        ) from None
    if best is not None and abs(llf - best["llf"]) <= spec.tol * (abs(llf) + 0.1):
        if np.any(np.abs(step) > math.sqrt(spec.tol) * np.maximum(np.abs(beta), 1.0)):
            raise UserError(_monotone())
        return Released({**km, "cox": _result(spec, names, lay, beta + step, inv, llf,
                                               float(state["null"]), state, it)})
    if it >= spec.max_iter:
        raise UserError(_not_converged(spec))
    state["best"] = {"beta": [float(b) for b in beta], "llf": llf}
    return _next(state, beta + step, it, pooled)


def _next(state: dict, beta: np.ndarray, it: int, pooled: Pooled) -> NextRound:
    if not np.all(np.isfinite(beta)):
        raise UserError(_monotone())
    center = float(np.asarray(state["mean"]) @ beta)
    state |= {"iteration": it + 1, "beta": [float(b) for b in beta], "center": center}
    return NextRound(query=_query(state["beta"], center, state["km"], pooled), state=state)


def _monotone() -> str:
    return ("survival: the Cox fit has no finite maximum (monotone likelihood: a covariate "
            "orders the events perfectly, e.g. a level with no events); drop or merge it")


def _not_converged(spec: SurvivalSpec) -> str:
    return (f"survival: the Cox fit did not converge within max_iter={spec.max_iter} "
            "iterations (a monotone likelihood is likely: a covariate orders the events "
            "perfectly)")


def _result(spec: SurvivalSpec, names: list[str], lay, beta: np.ndarray, inv: np.ndarray,
            llf: float, null: float, state: dict, iterations: int) -> dict:
    from scipy import stats  # here, not at the top: scipy.stats costs every node ~50 MB
    table = fit.table(names, beta, inv, df=None, confidence=spec.confidence)
    for row in table:
        row |= {"hazard_ratio": math.exp(row["estimate"]),
                "hr_ci_low": math.exp(row["ci_low"]), "hr_ci_high": math.exp(row["ci_high"])}
    p = len(names)
    lr = 2 * (llf - null)
    return {
        "model": {"covariates": list(spec.cox or []), "terms": names, "ties": "breslow",
                  "confidence": spec.confidence,
                  "reference_levels": {c: v[0] for c, v in lay.known.items()}},
        "coefficients": table,
        "fit": {"nobs": int(state["n"]), "events": int(round(sum(state["events"]))),
                "log_likelihood": llf, "null_log_likelihood": null, "lr_statistic": lr,
                "df_model": p, "lr_p_value": float(stats.chi2.sf(lr, p)),
                "aic": -2 * llf + 2 * p, "iterations": iterations}}
