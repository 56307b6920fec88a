"""The researcher's ``job.yaml``: what to compute, over which nodes' datasets, in which study.

The coordinator validates a spec at submission and every node validates it again before
touching data, so everything that can be checked without the data is checked here, with
one line per problem. ``type`` names the job type and selects the parameter section of
the same name (``stats:``), so a new job type adds a ``type`` value and a section.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from scifed.config import parse_model
from scifed.errors import UserError
from scifed.trainspec import TrainSpec

Measure = Literal["count", "sum", "mean", "variance", "std"]
MEASURES: tuple[Measure, ...] = ("count", "sum", "mean", "variance", "std")

_CATALOG_ID = re.compile(
    r"urn:sdn:(?P<node>[A-Za-z0-9][A-Za-z0-9._-]*):ds:(?P<slug>[A-Za-z0-9][A-Za-z0-9._-]*)"
)

FINAL = ("done", "failed", "cancelled")  # job statuses that never change again
STOPPED = (*FINAL, "interrupted")  # nothing runs the job (an interrupted one may resume)


def _nonblank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


Name = Annotated[str, AfterValidator(_nonblank)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _unique(values: list, what: str) -> list:
    seen = set()
    dups = [v for v in values if v in seen or seen.add(v)]
    if dups:
        raise ValueError(f"duplicate {what}: {', '.join(map(str, dict.fromkeys(dups)))}")
    return values


class StatsDP(_Strict):
    """Differential privacy asked for by the researcher (the node's policy may also
    require it, and caps ε per query)."""

    epsilon: float | None = Field(default=None, gt=0, description="ε of this query")
    bounds: dict[Name, tuple[float, float]] = Field(
        default_factory=dict, description="column -> [min, max] clipping bounds")


class StatsSpec(_Strict):
    """Parameters of a ``stats`` job; every column must exist at every node."""

    columns: list[Name] = Field(default_factory=list,
                                description="numeric columns for count/sum/mean/variance/std")
    measures: list[Measure] = Field(default_factory=lambda: list(MEASURES), min_length=1)
    histograms: dict[Name, list[float]] = Field(default_factory=dict,
                                                description="column -> bin edges")
    quantiles: dict[Name, list[float]] = Field(default_factory=dict,
                                               description="column -> probabilities")
    group_counts: list[Name] = Field(default_factory=list)
    correlation: list[Name] = Field(default_factory=list)
    dp: StatsDP | None = None

    @field_validator("columns", "group_counts")
    @classmethod
    def _no_duplicate_columns(cls, v: list[str]) -> list[str]:
        return _unique(v, "column")

    @field_validator("measures")
    @classmethod
    def _no_duplicate_measures(cls, v: list[str]) -> list[str]:
        return _unique(v, "measure")

    @field_validator("histograms")
    @classmethod
    def _edges(cls, v: dict[str, list[float]]) -> dict[str, list[float]]:
        problems = []
        for col, edges in v.items():
            if len(edges) < 2:
                problems.append(f"{col}: at least 2 bin edges are needed")
            elif not all(math.isfinite(e) for e in edges):
                problems.append(f"{col}: bin edges must be finite numbers")
            elif any(b <= a for a, b in zip(edges, edges[1:], strict=False)):
                problems.append(f"{col}: bin edges must be strictly increasing")
        if problems:
            raise ValueError("; ".join(problems))
        return v

    @field_validator("quantiles")
    @classmethod
    def _probabilities(cls, v: dict[str, list[float]]) -> dict[str, list[float]]:
        problems = []
        for col, probs in v.items():
            bad = [p for p in probs if not 0.0 <= p <= 1.0]  # NaN fails too
            if not probs:
                problems.append(f"{col}: list at least one probability")
            elif bad:
                problems.append(f"{col}: probabilities must lie in [0, 1], got "
                                f"{', '.join(map(str, bad))}")
            elif len(set(probs)) < len(probs):
                problems.append(f"{col}: a probability is listed twice")
        if problems:
            raise ValueError("; ".join(problems))
        return v

    @field_validator("correlation")
    @classmethod
    def _pairs(cls, v: list[str]) -> list[str]:
        if len(v) == 1:
            raise ValueError("list at least 2 columns to correlate")
        return _unique(v, "column")

    @model_validator(mode="after")
    def _something_requested(self) -> Self:
        if not (self.columns or self.histograms or self.quantiles or self.group_counts
                or self.correlation):
            raise ValueError("request at least one statistic (columns, histograms, "
                             "quantiles, group_counts or correlation)")
        if "measures" in self.model_fields_set and not self.columns:
            raise ValueError("measures apply to `columns`, which lists no column")
        return self

    def referenced_columns(self) -> list[str]:
        """Every column the job reads, in first-mention order (for early checks)."""
        names = [*self.columns, *self.histograms, *self.quantiles, *self.group_counts,
                 *self.correlation]
        return list(dict.fromkeys(names))


class QualitySpec(_Strict):
    """Parameters of a ``quality`` job (pooled scorecard metrics, governance §3.4)."""

    target: Name | None = Field(default=None,
                                description="label column; default: the record's first target")
    columns: list[Name] = Field(default_factory=list,
                                description="columns to count missing values and moments in; "
                                            "default: every column")

    @field_validator("columns")
    @classmethod
    def _no_duplicate_columns(cls, v: list[str]) -> list[str]:
        return _unique(v, "column")

    def referenced_columns(self) -> list[str]:
        """Every column the job names, in first-mention order (for early checks)."""
        return list(dict.fromkeys([*([self.target] if self.target else []), *self.columns]))


JobType = Literal["stats", "quality", "train"]
JOB_TYPES: tuple[JobType, ...] = ("stats", "quality", "train")


class JobSpec(_Strict):
    """A federated job. ``datasets`` maps node -> dataset, or lists catalog ids."""

    study: Name = Field(description="study name or id")
    type: JobType
    datasets: dict[str, str] | list[str]
    filter: str | None = Field(default=None, description="row filter (scifed.filters)")
    stats: StatsSpec | None = None
    quality: QualitySpec | None = None
    train: TrainSpec | None = None

    @field_validator("datasets", mode="before")
    @classmethod
    def _datasets_form(cls, v: object) -> object:
        """One clear message instead of pydantic's report on each arm of the union."""
        if isinstance(v, dict):
            items = [x for pair in v.items() for x in pair]
        elif isinstance(v, list):
            items = v
        else:
            raise ValueError("expected a mapping node -> dataset, or a list of catalog ids "
                             "urn:sdn:{node}:ds:{slug}")
        bad = [x for x in items if not isinstance(x, str) or not x.strip()]
        if bad:
            raise ValueError(f"node names and dataset ids must be non-empty text, "
                             f"not {bad[0]!r}")
        return v

    @field_validator("datasets")
    @classmethod
    def _datasets(cls, v: dict[str, str] | list[str]) -> dict[str, str] | list[str]:
        if not v:
            raise ValueError("name at least one node's dataset")
        _by_node(v)
        return v

    @model_validator(mode="after")
    def _section_for_type(self) -> Self:
        if getattr(self, self.type) is None:
            raise ValueError(f"a '{self.type}' job needs a '{self.type}:' section")
        others = [t for t in JOB_TYPES if t != self.type and getattr(self, t) is not None]
        if others:
            raise ValueError(f"a '{self.type}' job takes no '{others[0]}:' section")
        if self.type == "quality" and self.filter is not None:
            raise ValueError("a quality job scores whole datasets; remove 'filter'")
        return self

    def referenced_columns(self) -> list[str]:
        """Columns named by the job's parameters (the filter's are checked when compiled)."""
        section = getattr(self, self.type)
        return section.referenced_columns()


def load_job(text: str, source: str) -> JobSpec:
    """Parse and validate a job spec (YAML or JSON text); ``source`` names it in errors."""
    return parse_model(text, source, JobSpec, "job settings (study, type, datasets, ...)")


def datasets_by_node(spec: JobSpec) -> dict[str, str]:
    """Node name -> dataset slug (or the node's own dataset id), from either form."""
    try:
        return _by_node(spec.datasets)
    except ValueError as exc:
        raise UserError(f"datasets: {exc}") from None


def _by_node(datasets: dict[str, str] | list[str]) -> dict[str, str]:
    if isinstance(datasets, dict):
        out = {}
        for node, ref in datasets.items():
            if ref.startswith("urn:"):
                owner, slug = _parse_catalog_id(ref)
                if owner != node:
                    raise ValueError(f"{ref} belongs to node {owner!r}, not {node!r}")
                ref = slug
            out[node] = ref
        return out
    out = {}
    for ref in datasets:
        node, slug = _parse_catalog_id(ref)
        if node in out:
            raise ValueError(f"node {node!r} is named twice; a job reads one dataset per node")
        out[node] = slug
    return out


def _parse_catalog_id(ref: str) -> tuple[str, str]:
    match = _CATALOG_ID.fullmatch(ref)
    if match is None:
        raise ValueError(f"{ref!r} is not a catalog id of the form urn:sdn:{{node}}:ds:{{slug}}")
    return match["node"], match["slug"]
