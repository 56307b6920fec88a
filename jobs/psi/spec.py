"""The ``psi:`` section of a job spec: the identifier column (one name for every node, or
one per node), how identifiers are normalised before they are hashed, optional DP, and
optionally ``values``: numeric columns at one node to sum over its rows whose identifier
every other node holds (PSI as a filter, jobs/psi/filtering.py). Everything here is checked
without the data, at submission and again at every node."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, field_validator, model_validator

from jobs.fields import Name, Strict, unique
from scifed.errors import UserError

# Applied in the order given, to text identifiers (numeric columns are rendered
# canonically instead, see jobs/psi/ids.py).
Normalise = Literal["strip", "lower", "upper", "nfkc", "collapse_spaces", "integers"]
MAX_EPSILON = 10.0
MAX_VALUE_COLUMNS = 16
MAX_LEVELS = 2**24  # so that one value's square, 2^48, leaves room in the 2^52 range


class PsiDP(Strict):
    epsilon: float = Field(gt=0, le=MAX_EPSILON, description="ε of the released count")


class PsiValues(Strict):
    """The columns to aggregate over the intersection, at the one node that holds them.
    Each value is read in fixed point, ``round((x - min) / resolution)`` after clipping
    to ``[min, max]``, so the sums are exact integers under the filter's encryption. The
    bounds and resolution are the job's, not read from the data or from that node's
    record: the release node decodes the sums with them."""

    node: Name = Field(description="the node that holds the value columns")
    columns: list[Name] = Field(min_length=1, max_length=MAX_VALUE_COLUMNS,
                                description="numeric columns at that node")
    bounds: dict[Name, tuple[float, float]] = Field(
        description="column -> [min, max]: values are clipped to them")
    resolution: dict[Name, float] = Field(
        default_factory=dict, description="column -> the step values are rounded to "
        "(default 1)")

    @field_validator("columns")
    @classmethod
    def _columns_once(cls, v: list[str]) -> list[str]:
        return unique(v, "column")

    @model_validator(mode="after")
    def _scales(self) -> PsiValues:
        for what, given in (("bounds", self.bounds), ("resolution", self.resolution)):
            stray = sorted(set(given) - set(self.columns))
            if stray:
                raise ValueError(f"{what} for {', '.join(stray)}, not among the columns")
        missing = [c for c in self.columns if c not in self.bounds]
        if missing:
            raise ValueError(f"bounds: give [min, max] for {', '.join(missing)}")
        for c in self.columns:
            (lo, hi), step = self.bounds[c], self.step(c)
            if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
                raise ValueError(f"bounds.{c}: the minimum must be below the maximum")
            if not (math.isfinite(step) and step > 0):
                raise ValueError(f"resolution.{c}: must be above 0")
            if self.levels(c) > MAX_LEVELS:
                raise ValueError(f"bounds.{c} / resolution.{c}: more than {MAX_LEVELS:,} "
                                 "steps from min to max; coarsen the resolution")
        return self

    def step(self, column: str) -> float:
        return float(self.resolution.get(column, 1.0))

    def levels(self, column: str) -> int:
        """The largest fixed-point value of ``column``: (max - min) / resolution."""
        lo, hi = self.bounds[column]
        return math.ceil((hi - lo) / self.step(column) - 1e-9)


class PsiSpec(Strict):
    """Parameters of a ``psi`` job: the size of the intersection of the nodes'
    identifier sets."""

    on: Name | dict[Name, Name] = Field(
        description="the identifier column, or node -> its identifier column")
    normalise: list[Normalise] = Field(
        default_factory=lambda: ["strip"],
        description="steps applied to text identifiers before hashing, in order")
    dp: PsiDP | None = Field(default=None, description="a noisy count or noisy sums: the "
                             "ε asked for")
    values: PsiValues | None = Field(
        default=None, description="aggregate these columns of one node over the rows "
        "whose identifier every other node holds; without it, the size of the intersection")

    @model_validator(mode="before")
    @classmethod
    def _on_key(cls, data: object) -> object:
        """YAML 1.1 (pyyaml) reads an unquoted ``on:`` key as the boolean true."""
        if isinstance(data, dict) and True in data and "on" not in data:
            data = {("on" if k is True else k): v for k, v in data.items()}
        return data

    @model_validator(mode="after")
    def _exact_filter(self) -> PsiSpec:
        if self.values is not None and self.dp is not None:
            raise ValueError("dp: psi with values is exact only (DP noise on the sums over "
                             "the intersection is not implemented); drop dp or values")
        return self

    @field_validator("normalise")
    @classmethod
    def _once(cls, v: list[str]) -> list[str]:
        return unique(v, "normalise step")

    def column(self, node: str) -> str:
        """The identifier column at ``node``."""
        if isinstance(self.on, str):
            return self.on
        if node not in self.on:
            raise UserError(f"psi.on names no identifier column for node {node} (it names "
                            f"{', '.join(sorted(self.on))})")
        return self.on[node]

    def referenced_columns(self) -> list[str]:
        # a column per node is checked by each node (the coordinator checks one list
        # against every node's catalog)
        return [self.on] if isinstance(self.on, str) else []
