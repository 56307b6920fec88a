"""The ``psi:`` section of a job spec: the identifier column (one name for every node, or
one per node), how identifiers are normalised before they are hashed, and optional DP.
Everything here is checked without the data, at submission and again at every node."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from jobs.fields import Name, Strict, unique
from scifed.errors import UserError

# Applied in the order given, to text identifiers (numeric columns are rendered
# canonically instead, see jobs/psi/ids.py).
Normalise = Literal["strip", "lower", "upper", "nfkc", "collapse_spaces", "integers"]
MAX_EPSILON = 10.0


class PsiDP(Strict):
    epsilon: float = Field(gt=0, le=MAX_EPSILON, description="ε of the released count")


class PsiSpec(Strict):
    """Parameters of a ``psi`` job: the size of the intersection of the nodes'
    identifier sets."""

    on: Name | dict[Name, Name] = Field(
        description="the identifier column, or node -> its identifier column")
    normalise: list[Normalise] = Field(
        default_factory=lambda: ["strip"],
        description="steps applied to text identifiers before hashing, in order")
    dp: PsiDP | None = None

    @model_validator(mode="before")
    @classmethod
    def _on_key(cls, data: object) -> object:
        """YAML 1.1 (pyyaml) reads an unquoted ``on:`` key as the boolean true."""
        if isinstance(data, dict) and True in data and "on" not in data:
            data = {("on" if k is True else k): v for k, v in data.items()}
        return data

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
