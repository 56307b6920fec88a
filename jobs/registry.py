"""The one registry of job types. The node's handler table, the coordinator's plans, the
job-spec schema and the policy's job-type list all come from here, so adding a type is a
folder under `jobs/` and one :func:`register` call (in `jobs/__init__.py`, or in a test).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from scifed.errors import UserError

if TYPE_CHECKING:
    from jobs.base import JobType
    from scifed.grading import Access, CellDefaults

REGISTRY: dict[str, JobType] = {}
_version = [0]  # bumped on every change, so schemas built from the registry are rebuilt


def register(job: JobType) -> JobType:
    """Add a job type; its ``name`` must be new."""
    if job.name in REGISTRY and REGISTRY[job.name] is not job:
        raise ValueError(f"a job type named {job.name!r} is already registered")
    REGISTRY[job.name] = job
    _version[0] += 1
    return job


def unregister(name: str) -> None:
    """Remove a job type (tests that register their own)."""
    if REGISTRY.pop(name, None) is not None:
        _version[0] += 1


def version() -> int:
    return _version[0]


def get(name: str) -> JobType:
    try:
        return REGISTRY[name]
    except KeyError:
        raise UserError(f"unknown job type {name!r} (known: {', '.join(REGISTRY)})") from None


def names() -> tuple[str, ...]:
    return tuple(REGISTRY)


def cell_access(cell: CellDefaults) -> dict[str, Access]:
    """How a (grade, category) cell of the policy matrix admits each registered job type
    by default (its family's column: aggregates or federated learning). The node's policy
    starts from it (an officer's override may only tighten it); the researcher console
    shows it as what a dataset admits before any override."""
    return {name: cell.agg if job.family == "agg" else cell.fl
            for name, job in REGISTRY.items()}
