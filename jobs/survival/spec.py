"""The ``survival:`` section of a job spec: the time and event columns, an optional
grouping column, the declared time bins and the confidence level. Everything here is
checked without the data, at submission and again at every node."""

from __future__ import annotations

import math
from typing import Self

from pydantic import Field, model_validator

from jobs.fields import Name, Strict

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
    confidence: float = Field(default=0.95, ge=CONFIDENCE[0], le=CONFIDENCE[1])

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
        return self

    def referenced_columns(self) -> list[str]:
        return [c for c in (self.time, self.event, self.groups) if c is not None]
