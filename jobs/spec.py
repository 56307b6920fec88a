"""The researcher's ``job.yaml``: what to compute, over which nodes' datasets, in which
study.

The envelope (``study``, ``type``, ``datasets``, ``filter``) is the same for every job
type; ``type`` names a registered job type and selects the parameter section of the same
name (``stats:``), validated by that type's own ``Spec``. The schema is built from the
registry, so a new job type adds its section without touching this file. The coordinator
validates a spec at submission and every node validates it again before touching data,
so everything that can be checked without the data is checked here, one line per
problem.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal, Self

from pydantic import Field, create_model, field_validator, model_validator

from jobs import registry
from jobs.fields import Name, Strict
from jobs.limits import MAX_JOB_NODES, MAX_SPEC_BYTES, MAX_SPEC_DEPTH, MAX_SPEC_JSON_BYTES
from scifed.config import check_structure, parse_model, validate_model
from scifed.errors import UserError, excerpt, excerpt_repr
from scifed.filters import MAX_LENGTH as MAX_FILTER_LENGTH

_CATALOG_ID = re.compile(
    r"urn:sdn:(?P<node>[A-Za-z0-9][A-Za-z0-9._-]*):ds:(?P<slug>[A-Za-z0-9][A-Za-z0-9._-]*)"
)


class JobSpec(Strict):
    """A federated job. ``datasets`` maps node -> dataset, or lists catalog ids.

    The concrete model (one optional section per registered job type) comes from
    :func:`spec_model`; :attr:`params` is the section of this job's type."""

    study: Name = Field(description="study name or id")
    type: str
    datasets: dict[str, str] | list[str]
    filter: str | None = Field(default=None, description="row filter (scifed.filters)")

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
                             f"not {excerpt_repr(bad[0], 60)}")
        if len(v) > MAX_JOB_NODES:
            raise ValueError(f"more than {MAX_JOB_NODES} datasets (the limit), got {len(v)}")
        return v

    @field_validator("filter")
    @classmethod
    def _filter_length(cls, v: str | None) -> str | None:
        if v is not None and len(v) > MAX_FILTER_LENGTH:
            raise ValueError(f"longer than {MAX_FILTER_LENGTH} characters (the limit), "
                             f"got {len(v)}")
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
        if getattr(self, self.type, None) is None:
            raise ValueError(f"a '{self.type}' job needs a '{self.type}:' section")
        others = [t for t in registry.names()
                  if t != self.type and getattr(self, t, None) is not None]
        if others:
            raise ValueError(f"a '{self.type}' job takes no '{others[0]}:' section")
        job = registry.get(self.type)
        if self.filter is not None and job.filter_refusal:
            raise ValueError(f"{job.filter_refusal}; remove 'filter'")
        return self

    @property
    def params(self) -> Any:
        """This job type's parameter section (its ``Spec`` model)."""
        return getattr(self, self.type)

    @property
    def job(self):
        """The registered job type (:class:`jobs.base.JobType`)."""
        return registry.get(self.type)

    def referenced_columns(self) -> list[str]:
        """Columns named by the job's parameters (the filter's are checked when compiled)."""
        return self.params.referenced_columns()

    def conditions(self) -> dict[str, str]:
        """Each field holding an expression in the filter language (``scifed.filters``):
        ``filter``, and those of the type's parameters (a training job's derived
        ``label``), by field name; each is compiled against a dataset's columns."""
        out = {"filter": self.filter} if self.filter else {}
        derived = getattr(self.params, "derived_label", lambda: None)()
        if derived:
            out[f"{self.type}.label"] = derived
        return out

    def to_dict(self) -> dict:
        """JSON-able, in the job.yaml form (``parse_job_dict`` reads it back)."""
        return self.model_dump(mode="json", exclude_unset=True)


_models: dict[int, type[JobSpec]] = {}


def spec_model() -> type[JobSpec]:
    """The job-spec model for the job types registered now."""
    version = registry.version()
    model = _models.get(version)
    if model is None:
        names = registry.names()
        sections: dict[str, Any] = {
            name: (registry.get(name).Spec | None, None) for name in names}
        model = create_model("JobSpec", __base__=JobSpec,
                             type=(Literal[names], ...),  # type: ignore[valid-type]
                             **sections)
        _models.clear()
        _models[version] = model
    return model


def load_job(text: str, source: str) -> JobSpec:
    """Parse and validate a job spec (YAML or JSON text); ``source`` names it in errors.

    Text over :data:`jobs.limits.MAX_SPEC_BYTES` or nested deeper than
    :data:`~jobs.limits.MAX_SPEC_DEPTH` is refused before it is parsed further."""
    return parse_model(text, source, spec_model(), "job settings (study, type, datasets, ...)",
                       max_bytes=MAX_SPEC_BYTES, max_depth=MAX_SPEC_DEPTH)


def parse_job_dict(data: dict, source: str = "job spec") -> JobSpec:
    """A spec that travelled as JSON (in a task, in the coordinator's database), held to
    the same depth as job.yaml and to :data:`~jobs.limits.MAX_SPEC_JSON_BYTES`."""
    if not isinstance(data, dict):
        raise UserError(f"{excerpt(source, 100)}: expected a mapping of job settings, "
                        f"got a {type(data).__name__}")
    check_structure(data, source, max_depth=MAX_SPEC_DEPTH)
    try:
        size = len(json.dumps(data, separators=(",", ":"), default=str).encode())
    except (TypeError, ValueError, RecursionError):
        raise UserError(f"{excerpt(source, 100)}: not JSON-able job settings") from None
    if size > MAX_SPEC_JSON_BYTES:
        raise UserError(f"{excerpt(source, 100)}: larger than {MAX_SPEC_JSON_BYTES // 1024} KiB "
                        f"as JSON (the limit), got {size} bytes")
    return validate_model(data, source, spec_model())


def datasets_by_node(spec: JobSpec) -> dict[str, str]:
    """Node name -> dataset slug (or the node's own dataset id), from either form."""
    try:
        return _by_node(spec.datasets)
    except ValueError as exc:
        raise UserError(f"datasets: {excerpt(exc)}") from None


def slug(dataset: str) -> str:
    """A dataset's slug from a slug or a node-local id ``ds:slug``."""
    return dataset.rsplit(":", 1)[-1]


def _by_node(datasets: dict[str, str] | list[str]) -> dict[str, str]:
    if isinstance(datasets, dict):
        out = {}
        for node, ref in datasets.items():
            if ref.startswith("urn:"):
                owner, name = _parse_catalog_id(ref)
                if owner != node:
                    raise ValueError(f"{excerpt(ref, 80)} belongs to node "
                                     f"{excerpt_repr(owner, 60)}, not {excerpt_repr(node, 60)}")
                ref = name
            out[node] = ref
        return out
    out = {}
    for ref in datasets:
        node, name = _parse_catalog_id(ref)
        if node in out:
            raise ValueError(f"node {excerpt_repr(node, 60)} is named twice; a job reads one "
                             "dataset per node")
        out[node] = name
    return out


def _parse_catalog_id(ref: str) -> tuple[str, str]:
    match = _CATALOG_ID.fullmatch(ref)
    if match is None:
        raise ValueError(f"{excerpt_repr(ref, 80)} is not a catalog id of the form "
                         "urn:sdn:{node}:ds:{slug}")
    return match["node"], match["slug"]


__all__ = ["JobSpec", "datasets_by_node", "load_job", "parse_job_dict",
           "slug", "spec_model"]
