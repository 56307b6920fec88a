"""The ``survival:`` section of a job spec: the time and event columns, an optional
grouping column, the declared time bins, the confidence level, and an optional Cox
model (``cox``: covariates written as regression terms, ``age`` or ``C(horTh)``, with the
iteration limits of its Newton fit). Everything here is checked without the data, at
submission and again at every node."""

from __future__ import annotations

import math
from typing import Self

from pydantic import Field, model_validator

from jobs.fields import Name, Strict
from jobs.privacy import DPRequest
from jobs.regression.formula import Model, build, parse_term
from jobs.regression.spec import MAX_ITER, MAX_PREDICTORS

MAX_BINS = 100        # declared bins: each (group, bin, status) is one row set of the auditor
DEFAULT_BINS = 20     # bins over the declared range where the job gives none
CONFIDENCE = (0.5, 0.999)


class SurvivalSpec(Strict):
    """Parameters of a ``survival`` job."""

    time: Name = Field(description="time to the event or to censoring (numeric)")
    event: Name | None = Field(default=None,
                               description="1 where the event happened, 0 where censored; "
                                           "none: every row is an event")
    groups: Name | None = Field(default=None,
                                description="a categorical column: one curve per level, "
                                            "and the log-rank test between them")
    bins: list[float] | int | None = Field(
        default=None, description="bin edges of the time axis, or a number of equal bins "
                                  "over the time column's declared range (default 20)")
    confidence: float = Field(default=0.95, ge=CONFIDENCE[0], le=CONFIDENCE[1],
                              description="level of the confidence bands")
    dp: DPRequest | None = Field(default=None, description="noisy counts (Kaplan–Meier and "
                                 "log-rank only): the ε asked for")
    cox: list[str] | None = Field(
        default=None, description="covariates of a Cox proportional hazards model: column "
                                  "names or C(column) for a categorical")
    max_iter: int = Field(default=MAX_ITER, ge=1, le=MAX_ITER,
                          description="Cox: Newton iterations (each one encrypted round)")
    tol: float = Field(default=1e-9, gt=0, le=1e-3,
                       description="Cox: relative change of the log partial likelihood "
                                   "that ends the fit")

    @model_validator(mode="after")
    def _check(self) -> Self:
        named = [c for c in (self.time, self.event, self.groups) if c is not None]
        if len(set(named)) < len(named):
            raise ValueError("time, event and groups must be three different columns")
        if isinstance(self.bins, int) and not isinstance(self.bins, bool):
            if not 1 <= self.bins <= MAX_BINS:
                raise ValueError(f"bins: a number of bins from 1 to {MAX_BINS}, got "
                                 f"{self.bins}")
        elif isinstance(self.bins, list):
            edges = self.bins
            if not 2 <= len(edges) <= MAX_BINS + 1:
                raise ValueError(f"bins: from 2 to {MAX_BINS + 1} edges, got {len(edges)}")
            if not all(math.isfinite(e) for e in edges):
                raise ValueError("bins: every edge must be a finite number")
            if any(b <= a for a, b in zip(edges, edges[1:], strict=False)):
                raise ValueError("bins: the edges must increase strictly")
        if self.cox is not None:
            model = self.cox_model()
            if len(model.terms) > MAX_PREDICTORS:
                raise ValueError(f"cox: more than {MAX_PREDICTORS} covariates (the limit), "
                                 f"got {len(model.terms)}")
            if self.event in {t.column for t in model.terms}:
                raise ValueError(f"cox: the event column {self.event!r} is also a covariate")
        return self

    def cox_model(self) -> Model:
        """The Cox covariates as a regression model of the time with an intercept: its
        design (jobs/regression/design.py) less the intercept column is the Cox design,
        each categorical in treatment coding (the baseline hazard absorbs the constant).
        Raises ValueError naming a bad term; None-safe only where ``cox`` is given."""
        assert self.cox is not None
        if not self.cox:
            raise ValueError("cox: name at least one covariate")
        try:
            terms = [parse_term(t) for t in self.cox]
            if self.time in {t.column for t in terms}:
                raise ValueError(f"the time column {self.time!r} is also a covariate")
            return build(self.time, terms, True)
        except ValueError as exc:
            raise ValueError(f"cox: {exc}") from None

    def referenced_columns(self) -> list[str]:
        covariates = [t.column for t in self.cox_model().terms] if self.cox else []
        return list(dict.fromkeys(
            [c for c in (self.time, self.event, self.groups) if c is not None] + covariates))
