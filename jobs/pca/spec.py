"""The ``pca:`` section of a job spec: the numeric columns, covariance or correlation,
and how many components to release. Everything here is checked without the data, at
submission and again at every node."""

from __future__ import annotations

from typing import Self

from pydantic import Field, field_validator, model_validator

from jobs.fields import Name, Strict, unique
from jobs.privacy import DPRequest

MAX_COLUMNS = 40   # p(p+1)/2 cross-products per node: 820 at most


class PcaSpec(Strict):
    """Parameters of a ``pca`` job."""

    columns: list[Name] = Field(min_length=2, max_length=MAX_COLUMNS,
                                description="numeric columns, in the loadings' order")
    standardize: bool = Field(default=False,
                              description="true: the correlation matrix (each column "
                                          "scaled to unit variance); false: the covariance")
    n_components: int | None = Field(default=None, ge=1,
                                     description="components released (default: all)")
    dp: DPRequest | None = Field(default=None, description="noisy sums: the ε asked for "
                                 "and the columns' clipping bounds")

    @field_validator("columns")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        return unique(v, "columns")

    @model_validator(mode="after")
    def _components(self) -> Self:
        if self.n_components is not None and self.n_components > len(self.columns):
            raise ValueError(f"n_components ({self.n_components}) exceeds the number of "
                             f"columns ({len(self.columns)})")
        return self

    @property
    def components(self) -> int:
        return self.n_components or len(self.columns)

    def referenced_columns(self) -> list[str]:
        return list(self.columns)
