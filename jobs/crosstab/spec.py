"""The ``crosstab:`` section of a job spec: the categorical columns of a two- or
three-way contingency table. Checked without the data, at submission and at every
node."""

from __future__ import annotations

from typing import Self

from pydantic import Field, model_validator

from jobs.fields import Name, Strict, unique
from jobs.privacy import DPRequest


class CrosstabSpec(Strict):
    """Parameters of a ``crosstab`` job."""

    rows: Name = Field(description="categorical column of the table's rows")
    columns: Name = Field(description="categorical column of the table's columns")
    layers: Name | None = Field(default=None,
                                description="optional third column: one table per level")
    dp: DPRequest | None = Field(default=None, description="noisy cell counts: the ε "
                                 "asked for (bounds are not needed)")

    @model_validator(mode="after")
    def _distinct(self) -> Self:
        unique(self.referenced_columns(), "columns in rows, columns and layers")
        return self

    def referenced_columns(self) -> list[str]:
        return [self.rows, self.columns, *([self.layers] if self.layers else [])]
