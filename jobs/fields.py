"""Field types every job-spec section shares: strict models, non-blank names, no
duplicates. One place, so every section words the same problem the same way."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict


def _nonblank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


Name = Annotated[str, AfterValidator(_nonblank)]


class Strict(BaseModel):
    """Unknown keys are errors: a misspelt option must not be silently ignored."""

    model_config = ConfigDict(extra="forbid")


def unique(values: list, what: str) -> list:
    seen: set = set()
    dups = [v for v in values if v in seen or seen.add(v)]
    if dups:
        raise ValueError(f"duplicate {what}: {', '.join(map(str, dict.fromkeys(dups)))}")
    return values
