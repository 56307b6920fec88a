"""The one registry of job types. The node's handler table, the coordinator's plans, the
job-spec schema and the policy's job-type list all come from here, so adding a type is a
folder under `jobs/` and one :func:`register` call (in `jobs/__init__.py`, or in a test).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from scifed.errors import UserError

if TYPE_CHECKING:
    from jobs.base import JobType

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
