"""The ``quality:`` section of a job spec (pooled scorecard metrics, governance §3.4)."""

from __future__ import annotations

from pydantic import Field, field_validator

from jobs.fields import Name, Strict, unique


class QualitySpec(Strict):
    """Parameters of a ``quality`` job (pooled scorecard metrics, governance §3.4)."""

    target: Name | None = Field(default=None,
                                description="label column; default: the record's first target")
    columns: list[Name] = Field(default_factory=list,
                                description="columns to count missing values and moments in; "
                                            "default: every column")

    @field_validator("columns")
    @classmethod
    def _no_duplicate_columns(cls, v: list[str]) -> list[str]:
        return unique(v, "column")

    def referenced_columns(self) -> list[str]:
        """Every column the job names, in first-mention order (for early checks)."""
        return list(dict.fromkeys([*([self.target] if self.target else []), *self.columns]))
