"""The ``stats:`` section of a job spec; every column must exist at every node."""

from __future__ import annotations

import math
from typing import Literal, Self

from pydantic import Field, field_validator, model_validator

from jobs.fields import Name, Strict, unique
from jobs.limits import (
    MAX_CORRELATION_COLUMNS,
    MAX_GROUP_COLUMNS,
    MAX_HISTOGRAM_EDGES,
    MAX_JOB_COLUMNS,
    MAX_TOTAL_HISTOGRAM_EDGES,
)
from jobs.privacy import DPRequest
from scifed.errors import excerpt

MAX_PROBABILITIES = 10  # quantile probabilities per column (governance §2.5)

# How every released number is defined, stated in each result (``meta.conventions``) so a
# reader need not guess which variance or which bin edge (docs/job-types.md, stats).
CONVENTIONS = {
    "variance": "sample variance, ddof = 1 (divides by n - 1, as pandas); std is its "
                "square root",
    "histogram_bins": "[a, b): a bin holds a <= x < b, except the last, which is closed "
                      "[a, b] (as numpy); values outside the edges are counted as below or above",
    "quantiles": "linear interpolation between order statistics (pandas' default, "
                 "Hyndman-Fan type 7)",
    "correlation": "Pearson, over the rows where both columns are present",
}

Measure = Literal["count", "sum", "mean", "variance", "std"]
MEASURES: tuple[Measure, ...] = ("count", "sum", "mean", "variance", "std")


def _refuse(problems: list[str]) -> None:
    """One ValueError naming the first three problems (and how many more)."""
    if problems:
        raise ValueError("; ".join(problems[:3]) + (
            f"; and {len(problems) - 3} more" if len(problems) > 3 else ""))


class StatsSpec(Strict):
    """Parameters of a ``stats`` job; every column must exist at every node."""

    columns: list[Name] = Field(default_factory=list,
                                description="numeric columns for count/sum/mean/variance/std")
    measures: list[Measure] = Field(default_factory=lambda: list(MEASURES), min_length=1,
                                    description="which of them to release for `columns`")
    histograms: dict[Name, list[float]] = Field(default_factory=dict,
                                                description="column -> bin edges")
    quantiles: dict[Name, list[float]] = Field(default_factory=dict,
                                               description="column -> probabilities")
    group_counts: list[Name] = Field(default_factory=list,
                                     description="columns whose combinations are counted")
    correlation: list[Name] = Field(default_factory=list,
                                    description="numeric columns to correlate pairwise")
    dp: DPRequest | None = Field(default=None, description="noisy answers: the ε asked "
                                 "for and the columns' clipping bounds")

    @field_validator("columns", "group_counts")
    @classmethod
    def _no_duplicate_columns(cls, v: list[str]) -> list[str]:
        return unique(v, "column")

    @field_validator("group_counts")
    @classmethod
    def _few_groups(cls, v: list[str]) -> list[str]:
        if len(v) > MAX_GROUP_COLUMNS:
            raise ValueError(f"more than {MAX_GROUP_COLUMNS} group columns (the limit), "
                             f"got {len(v)}")
        return v

    @field_validator("measures")
    @classmethod
    def _no_duplicate_measures(cls, v: list[str]) -> list[str]:
        return unique(v, "measure")

    @field_validator("histograms")
    @classmethod
    def _edges(cls, v: dict[str, list[float]]) -> dict[str, list[float]]:
        problems = []
        for col, edges in v.items():
            name = excerpt(col, 60)
            if len(edges) > MAX_HISTOGRAM_EDGES:
                problems.append(f"{name}: more than {MAX_HISTOGRAM_EDGES} bin edges in one "
                                f"histogram (the limit), got {len(edges)}")
            elif len(edges) < 2:
                problems.append(f"{name}: at least 2 bin edges are needed")
            elif not all(math.isfinite(e) for e in edges):
                problems.append(f"{name}: bin edges must be finite numbers")
            elif any(b <= a for a, b in zip(edges, edges[1:], strict=False)):
                problems.append(f"{name}: bin edges must be strictly increasing")
        total = sum(len(edges) for edges in v.values())
        if not problems and total > MAX_TOTAL_HISTOGRAM_EDGES:
            problems.append(f"more than {MAX_TOTAL_HISTOGRAM_EDGES} bin edges over all "
                            f"histograms (the limit), got {total}")
        _refuse(problems)
        return v

    @field_validator("quantiles")
    @classmethod
    def _probabilities(cls, v: dict[str, list[float]]) -> dict[str, list[float]]:
        problems = []
        for col, probs in v.items():
            name = excerpt(col, 60)
            bad = [p for p in probs if not 0.0 <= p <= 1.0]  # NaN fails too
            if not probs:
                problems.append(f"{name}: list at least one probability")
            elif len(probs) > MAX_PROBABILITIES:
                problems.append(f"{name}: at most {MAX_PROBABILITIES} probabilities per "
                                f"column (the limit), got {len(probs)}")
            elif bad:
                problems.append(f"{name}: probabilities must lie in [0, 1], got "
                                f"{excerpt(', '.join(map(str, bad)), 80)}")
            elif len(set(probs)) < len(probs):
                problems.append(f"{name}: a probability is listed twice")
        _refuse(problems)
        return v

    @field_validator("correlation")
    @classmethod
    def _pairs(cls, v: list[str]) -> list[str]:
        if len(v) == 1:
            raise ValueError("list at least 2 columns to correlate")
        if len(v) > MAX_CORRELATION_COLUMNS:
            raise ValueError(f"more than {MAX_CORRELATION_COLUMNS} columns to correlate "
                             f"(the limit), got {len(v)}")
        return unique(v, "column")

    @model_validator(mode="after")
    def _something_requested(self) -> Self:
        if not (self.columns or self.histograms or self.quantiles or self.group_counts
                or self.correlation):
            raise ValueError("request at least one statistic (columns, histograms, "
                             "quantiles, group_counts or correlation)")
        if "measures" in self.model_fields_set and not self.columns:
            raise ValueError("measures apply to `columns`, which lists no column")
        named = len(self.referenced_columns())
        if named > MAX_JOB_COLUMNS:
            raise ValueError(f"more than {MAX_JOB_COLUMNS} columns over columns, histograms, "
                             "quantiles, group_counts and correlation together (the limit), "
                             f"got {named}")
        return self

    def referenced_columns(self) -> list[str]:
        """Every column the job reads, in first-mention order (for early checks)."""
        names = [*self.columns, *self.histograms, *self.quantiles, *self.group_counts,
                 *self.correlation]
        return list(dict.fromkeys(names))
