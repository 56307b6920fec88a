"""The job form: its fields as a job spec, checked exactly as `scifed job submit` is.

The form gathers the envelope of a job.yaml (study, type, the catalog ids of the
datasets, one per node, and an optional row filter) and the job type's parameter section
as YAML; :func:`spec_text` writes them as the job.yaml the researcher would have written, and
:func:`coordinator.client.load_spec_text` validates it with the same schema the
coordinator applies at submission, so the form shows the same one message per problem
before anything is sent, and the text it submits is that job.yaml."""

from __future__ import annotations

from dataclasses import dataclass, field

import yaml

from coordinator.client import load_spec_text
from jobs.limits import MAX_SPEC_BYTES
from scifed.errors import UserError

SOURCE = "the job form"


@dataclass
class JobForm:
    study: str = ""
    type: str = ""
    datasets: list[str] = field(default_factory=list)  # catalog ids, one per node
    filter: str = ""
    params: str = ""

    def section(self) -> object:
        if len(self.params.encode()) > MAX_SPEC_BYTES:
            raise UserError(f"{SOURCE}: parameters: longer than {MAX_SPEC_BYTES} bytes "
                            "(the limit of a job spec)")
        try:
            return yaml.safe_load(self.params) if self.params.strip() else {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" (line {mark.line + 1})" if mark is not None else ""
            problem = getattr(exc, "problem", None) or "unreadable"
            raise UserError(f"{SOURCE}: parameters: not YAML{where}: {problem}") from None


def spec_text(form: JobForm) -> str:
    """The form as job.yaml text (not yet validated)."""
    spec: dict = {"study": form.study, "type": form.type, "datasets": list(form.datasets)}
    if form.filter.strip():
        spec["filter"] = form.filter.strip()
    if form.type:
        spec[form.type] = form.section()
    return yaml.safe_dump(spec, sort_keys=False, allow_unicode=True)


def checked(form: JobForm) -> str:
    """The form's job.yaml once it passes the submission checks; else the UserError."""
    text = spec_text(form)
    load_spec_text(text, SOURCE)
    return text
