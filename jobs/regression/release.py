"""The release node's side of a ``regression`` job.

The compute round brings the pooled sufficient statistics (n, Σy, Σy², XᵀX, Xᵀy). They
decide the pooled disclosure rules and the rank of the design for every family, and
give the exact OLS fit for ``gaussian``. For ``binomial``, ``poisson`` and ``gamma`` the release
node then runs Newton / IRLS over further rounds of the aggregate protocol
(:class:`jobs.base.NextRound`): each round's query carries the current coefficients β
(and the vocabulary, so every node builds the same columns); every node returns its
encrypted XᵀWX, XᵀWz and deviance at β; the release node takes the step
β ← (XᵀWX)⁻¹XᵀWz. Start: the intercept at the link of the pooled mean, the rest 0.
The fit has converged when the deviance changes by at most ``tol``·(|deviance| + 0.1)
between rounds (R's glm rule); the released coefficients are one more step from the
last round's sums and their covariance that round's (XᵀWX)⁻¹, as statsmodels' IRLS
reports its last weighted least squares. Anything else ends the job with one message:
perfect separation, divergence, or no convergence within ``max_iter`` rounds. Under DP
(gaussian only) the same OLS runs on the noisy sums; a fit they make invalid (no positive
residual variance) is refused.
"""

from __future__ import annotations

import math

import numpy as np

from jobs.base import NextRound, Pooled, Released
from jobs.regression import disclosure, fit
from jobs.regression.compute import Step, Sufficient
from jobs.regression.design import Layout
from jobs.regression.dp import NOTE
from jobs.regression.families import ESTIMATED_SCALE, LINKS, gamma_llf, link
from jobs.regression.spec import RegressionSpec
from scifed.errors import UserError


def release(spec: RegressionSpec, pooled: Pooled) -> Released | NextRound:
    model = spec.model()
    layout = Layout.build(model, pooled.vocab)
    total = pooled.totals["sum"]
    if pooled.state is None:
        return _first(spec, pooled, layout,
                      Sufficient.decode(total, layout.p, noisy=bool(pooled.dp)))
    return _iterate(spec, pooled, layout, Step.decode(total, layout.p))


def _first(spec: RegressionSpec, pooled: Pooled, layout: Layout,
           s: Sufficient) -> Released | NextRound:
    model = spec.model()
    if s.n <= 0:
        raise UserError("regression: no complete rows (every model column present) at any "
                        "node" + (" (by the noisy count)" if pooled.dp else ""))
    disclosure.check_pooled(s.n, layout.p, pooled.k)
    bad = fit.aliased(s.xtx)
    if bad and pooled.dp:
        raise UserError(NOISY)
    if bad:
        names = ", ".join(layout.names[i] for i in bad)
        raise UserError(f"regression: the design is singular: {names} is a linear "
                        "combination of the columns before it (or constant zero); drop it")
    if spec.family == "gaussian":
        with np.errstate(invalid="ignore"):
            out = fit.ols(layout.names, s.n, s.sum_y, s.yty, s.xtx, s.xty,
                          intercept=_constant(model, layout), confidence=spec.confidence)
        out["fit"]["iterations"] = 0
        if pooled.dp and not _valid(out):
            raise UserError(NOISY)
        return _released(spec, layout, out, pooled)
    mean = s.sum_y / s.n
    if spec.family == "binomial" and not 0 < mean < 1:
        raise UserError("regression: the binomial response takes one value only in the "
                        "complete rows")
    if spec.family == "poisson" and not mean > 0:
        raise UserError("regression: the Poisson response is 0 in every complete row")
    beta = np.zeros(layout.p)
    if model.intercept:
        beta[0] = link(spec.family, mean)
    # the null deviance at the pooled mean: the intercept-only fit, unless an offset
    # makes that fit an iteration of its own (then not released)
    null_at = mean if model.intercept and not model.offsets else None
    return NextRound(query=_query(beta, pooled, null_at),
                     state={"iteration": 1, "previous": None, "null_deviance": None,
                            "n": s.n})


NOISY = ("regression: the noisy sufficient statistics give no valid fit (the noise is large "
         "for so few rows): pool more rows, narrow the clipping bounds or ask for a larger ε")


def _valid(out: dict) -> bool:
    """Under DP: a positive residual variance and finite standard errors."""
    scale = out["fit"].get("scale")
    return bool(scale is not None and scale > 0 and all(
        c["std_error"] is not None and math.isfinite(c["std_error"]) and c["std_error"] > 0
        for c in out["coefficients"]))


def _constant(model, layout: Layout) -> bool:
    """Whether the design spans a constant: an intercept, or a categorical coded in full
    (its dummies sum to one), as statsmodels detects an implicit constant."""
    return model.intercept or layout.full is not None


def _query(beta: np.ndarray, pooled: Pooled, mean: float | None) -> dict:
    return {"beta": [float(b) for b in beta], "mean": mean, "vocab": pooled.vocab}


def _iterate(spec: RegressionSpec, pooled: Pooled, layout: Layout,
             step: Step) -> Released | NextRound:
    state = dict(pooled.state or {})
    it, previous, n = int(state["iteration"]), state["previous"], int(state["n"])
    null = state["null_deviance"] if it > 1 else (
        step.null_deviance if spec.model().intercept and not spec.model().offsets else None)
    if spec.family == "binomial" and step.exact >= n:
        raise UserError("regression: perfect separation: the predictors separate the "
                        "outcome completely, so the coefficients have no finite estimate; "
                        "drop or merge the separating predictor")
    if not math.isfinite(step.deviance):
        raise UserError("regression: the fit diverged (the deviance is not finite)")
    try:
        beta, inv = fit.solve(step.hessian, step.score)
    except np.linalg.LinAlgError:
        raise UserError("regression: the weighted design became singular during the fit; "
                        "perfect separation or a level with no events is likely") from None
    if not (np.all(np.isfinite(beta)) and np.all(np.diag(inv) > 0)):
        raise UserError("regression: the fit diverged; perfect separation or a level with "
                        "no events is likely")
    if previous is not None and \
            abs(step.deviance - previous) <= spec.tol * (abs(step.deviance) + 0.1):
        scale, llf = 1.0, step.llf
        if spec.family in ESTIMATED_SCALE:
            scale = step.pearson / (n - layout.p)
            llf = gamma_llf(step.extra, n, scale)
        out = fit.glm(layout.names, beta, inv, n=n, deviance=step.deviance, llf=llf,
                      pearson=step.pearson, null_deviance=null,
                      intercept=_constant(spec.model(), layout), iterations=it,
                      confidence=spec.confidence, scale=scale)
        return _released(spec, layout, out, pooled)
    if it >= spec.max_iter:
        hint = (" (quasi-complete separation: the predictors fit some rows' outcome "
                "exactly, so some coefficients have no finite estimate)"
                if spec.family == "binomial" and step.exact else "")
        raise UserError(f"regression: the fit did not converge within max_iter={spec.max_iter} "
                        f"iterations{hint}")
    return NextRound(query=_query(beta, pooled, None),
                     state={"iteration": it + 1, "previous": step.deviance,
                            "null_deviance": null, "n": n})


def _released(spec: RegressionSpec, layout: Layout, out: dict, pooled: Pooled) -> Released:
    model = spec.model()
    result = {
        "model": {"formula": spec.formula or _formula(spec), "family": spec.family,
                  "link": LINKS[spec.family],
                  "response": model.response, "intercept": model.intercept,
                  **({"offset": model.offset} if model.offset else {}),
                  **({"exposure": model.exposure} if model.exposure else {}),
                  "confidence": spec.confidence,
                  "reference_levels": {c: layout.known[c][0] for c in layout.known
                                       if c != layout.full}},
        **out}
    if pooled.dp:
        result["privacy"] = pooled.dp
        result["privacy_note"] = NOTE
    return Released(_finite(result))


def _formula(spec: RegressionSpec) -> str:
    rhs = " + ".join(spec.x) or "1"
    return f"{spec.y} ~ {rhs}" + ("" if spec.intercept else " - 1")


def _finite(value):
    """NaN and ±inf as None (the result is signed as canonical JSON)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value
