"""The ``regression:`` section of a job spec: the model (a formula, or ``y`` and ``x``),
the family, the iteration limits of a GLM fit, and DP (noisy sufficient statistics).
Everything here is checked without the data, at submission and again at every node."""

from __future__ import annotations

from dataclasses import replace
from typing import Literal, Self

from pydantic import Field, model_validator

from jobs.fields import Name, Strict
from jobs.limits import MAX_JOB_COLUMNS
from jobs.privacy import DPRequest
from jobs.regression.formula import Model, build, parse_formula, parse_term

Family = Literal["gaussian", "binomial", "poisson", "gamma"]
MAX_ITER = 25          # federated Newton / IRLS iterations (each one encrypted round)
MAX_PREDICTORS = 30    # terms of the formula (each categorical adds its levels)
CONFIDENCE = (0.5, 0.999)


class RegressionSpec(Strict):
    """Parameters of a ``regression`` job: ``formula`` or ``y`` with ``x``."""

    formula: str | None = Field(default=None, max_length=2000,
                                description="statsmodels-like, e.g. 'mpg ~ weight + C(origin)'")
    y: Name | None = Field(default=None, description="the response column")
    x: list[Name] = Field(default_factory=list,
                          description="predictors: column names or C(column)")
    intercept: bool = Field(default=True, description="fit a constant term")
    family: Family = Field(default="gaussian", description="the GLM's error distribution "
                           "(gaussian: ordinary least squares)")
    max_iter: int = Field(default=MAX_ITER, ge=1, le=MAX_ITER,
                          description="GLMs: most iterations of the fit")
    tol: float = Field(default=1e-8, gt=0, le=1e-3,
                       description="relative change of the deviance that ends the fit")
    confidence: float = Field(default=0.95, ge=CONFIDENCE[0], le=CONFIDENCE[1],
                              description="level of the confidence intervals")
    offset: Name | None = Field(default=None, description="GLMs: a column added to the "
                                "linear predictor with coefficient 1")
    exposure: Name | None = Field(default=None, description="log-link GLMs: a positive "
                                  "column whose log is the offset (rates per exposure)")
    dp: DPRequest | None = Field(
        default=None, description="noisy sufficient statistics (gaussian only): the ε "
        "asked for and clipping bounds of the response and numeric predictors")

    @model_validator(mode="after")
    def _one_model(self) -> Self:
        if self.formula is not None and (self.y is not None or self.x):
            raise ValueError("give either formula or y and x, not both")
        if self.formula is None and self.y is None:
            raise ValueError("give a formula ('y ~ a + C(b)') or y and x")
        if self.formula is not None and "intercept" in self.model_fields_set:
            raise ValueError("with a formula, write '- 1' to drop the intercept "
                             "instead of intercept: false")
        if self.dp is not None and self.family != "gaussian":
            raise ValueError(f"dp: differential privacy is available for gaussian models "
                             f"only (a {self.family} fit takes one exact round per "
                             "iteration); fit a linear model or ask for an exact cell")
        if (self.offset or self.exposure) and self.family == "gaussian":
            raise ValueError("offset and exposure apply to GLMs (binomial, poisson, gamma); "
                             "for a linear model subtract the offset from the response")
        if self.exposure and self.family == "binomial":
            raise ValueError("exposure needs a log link (poisson, gamma); give a binomial "
                             "model an offset instead")
        model = self.model()
        for col in model.offsets:
            if col == model.response or col in (t.column for t in model.terms):
                raise ValueError(f"{col!r} is both an offset and a model column")
        if len(model.terms) > MAX_PREDICTORS:
            raise ValueError(f"more than {MAX_PREDICTORS} predictors (the limit), got "
                             f"{len(model.terms)}")
        if len(model.columns) > MAX_JOB_COLUMNS:
            raise ValueError(f"more than {MAX_JOB_COLUMNS} columns (the limit)")
        return self

    def model(self) -> Model:
        """The parsed model (raises ValueError with the problem)."""
        if self.formula is not None:
            model = parse_formula(self.formula)
        else:
            assert self.y is not None
            model = build(self.y, [parse_term(t) for t in self.x], self.intercept)
        return replace(model, offset=self.offset, exposure=self.exposure)

    def referenced_columns(self) -> list[str]:
        return self.model().columns
