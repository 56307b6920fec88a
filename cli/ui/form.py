"""The job form: its fields as a job spec, checked exactly as `scifed job submit` is.

The form gathers the envelope of a job.yaml (study, type, the catalog ids of the
datasets, one per node, and an optional row filter) and the job type's parameters. The
parameter fields are derived from the job type's own ``Spec`` model (:func:`type_fields`),
so a new job type, or a new option of one, appears on the form without touching the
console; what no simple field can hold (a mapping, a nested model such as ``dp``) goes in
the "advanced" YAML box, the section a job.yaml has under the type's name. A field filled
in replaces the same key of that YAML.

:func:`spec_text` writes the form as the job.yaml the researcher would have written, and
:func:`checked` validates it with the same schema the coordinator applies at submission
(:func:`coordinator.client.load_spec_text`). Its problems come back as one
:class:`FormProblems`: every problem at once, each under the field it names. A problem is
a sentence (:mod:`scifed.sentences`) where it has a key — the schema's generic ones and
the form's own — so the page shows it in its language; a job type's validator speaks
English only."""

from __future__ import annotations

import types
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel

from coordinator.client import load_spec_text
from jobs import registry
from jobs.limits import MAX_SPEC_BYTES
from scifed.errors import Invalid, UserError
from scifed.sentences import say

SOURCE = "the job form"
PREFIX = "p."  # the form's names of the type's fields: ``p.columns``
ENVELOPE = ("study", "type", "datasets", "filter")
ADVANCED = "params"  # the slot of the YAML box, and of problems no field names
GENERAL = "general"   # problems of the whole job


@dataclass(frozen=True)
class FieldSpec:
    """One parameter of a job type as a form field.

    ``kind``: ``text``, ``number``, ``bool``, ``choice`` (one of ``options``), ``list``
    (comma-separated; ``numeric`` items are read as numbers) or ``choices`` (a checkbox
    per option)."""

    name: str
    kind: str
    required: bool
    default: Any
    help: str = ""
    options: tuple[str, ...] = ()
    numeric: bool = False

    @property
    def input_name(self) -> str:
        return PREFIX + self.name

    def shown_default(self) -> str:
        """The default as the field's placeholder text ("" where there is none)."""
        if self.required or self.default is None or self.kind in ("bool", "choices"):
            return ""
        if isinstance(self.default, list):
            return ", ".join(map(str, self.default))
        return str(self.default)


def _kind(ann: Any) -> tuple[str, tuple[str, ...], bool] | None:
    """(kind, options, numeric items) of an annotation a simple field can hold, or None."""
    origin, args = get_origin(ann), get_args(ann)
    if origin is Annotated:
        return _kind(args[0])
    if origin in (Union, types.UnionType):  # the first arm a field can hold
        for arm in args:
            if arm is not type(None) and (kind := _kind(arm)) is not None:
                return kind
        return None
    if ann is bool:
        return "bool", (), False
    if ann in (int, float):
        return "number", (), True
    if ann is str:
        return "text", (), False
    if origin is Literal:
        return "choice", tuple(map(str, args)), False
    if origin is list and args:
        item = _kind(args[0])
        if item is None or item[0] in ("bool", "list", "choices"):
            return None
        if item[0] == "choice":
            return "choices", item[1], False
        return "list", (), item[0] == "number"
    return None


def type_fields(job_type: str) -> list[FieldSpec]:
    """The form fields of a job type's parameters, in the order its ``Spec`` declares
    them; a parameter no simple field can hold is left to the YAML box
    (:func:`advanced_only`). An unknown type has none."""
    if job_type not in registry.names():
        return []
    out = []
    for name, info in registry.get(job_type).Spec.model_fields.items():
        kind = _kind(info.annotation)
        if kind is None:
            continue
        default = None if info.is_required() else info.get_default(
            call_default_factory=True)
        out.append(FieldSpec(name, kind[0], info.is_required(), default,
                             info.description or "", kind[1], kind[2]))
    return out


def advanced_only(job_type: str) -> list[str]:
    """The parameters of a job type only the YAML box can set (mappings, nested models)."""
    if job_type not in registry.names():
        return []
    shown = {f.name for f in type_fields(job_type)}
    spec: type[BaseModel] = registry.get(job_type).Spec
    return [n for n in spec.model_fields if n not in shown]


def _number(text: str) -> Any:
    """A typed number as YAML reads it (``3`` an int, ``0.1`` a float); anything else is
    kept as typed, for the schema to name the field it does not fit."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return value if isinstance(value, int | float) and not isinstance(value, bool) else text


def field_value(f: FieldSpec, raw: list[str]) -> tuple[bool, Any]:
    """(given, value) of a field from what was posted. A blank field is not given (the
    spec's default holds); a checkbox field is given only where it differs from the
    default, so one left as it was leaves the YAML box's value."""
    if f.kind == "bool":
        value = bool(raw)
        return value != f.default, value
    if f.kind == "choices":
        value = [o for o in f.options if o in raw]
        return value != list(f.default or []), value
    text = (raw[0] if raw else "").strip()
    if f.kind == "list":
        items = [x.strip() for x in text.split(",") if x.strip()]
        return bool(items), [_number(x) for x in items] if f.numeric else items
    if not text:
        return False, None
    return True, _number(text) if f.kind == "number" else text


@dataclass
class JobForm:
    study: str = ""
    type: str = ""
    datasets: list[str] = field(default_factory=list)  # catalog ids, one per node
    filter: str = ""
    params: str = ""  # the advanced box: YAML of the type's section
    values: dict[str, list[str]] = field(default_factory=dict)  # posted, by field name
    shown: bool = False  # were the type's fields on the page that posted it

    def raw(self, name: str) -> list[str]:
        return self.values.get(name, [])

    def text(self, name: str) -> str:
        """A text field's value as posted, to show it again."""
        return (self.raw(name) or [""])[0]

    def checked(self, f: FieldSpec, option: str = "") -> bool:
        """Is a checkbox ticked: as posted, or by the default on a fresh form."""
        if f.name not in self.values:
            return bool(f.default) if f.kind == "bool" else option in (f.default or [])
        return bool(self.raw(f.name)) if f.kind == "bool" else option in self.raw(f.name)

    def yaml_section(self) -> object:
        if len(self.params.encode()) > MAX_SPEC_BYTES:
            raise FormProblems({ADVANCED: [say("form.too_long", limit=MAX_SPEC_BYTES)]})
        try:
            return yaml.safe_load(self.params) if self.params.strip() else {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" (line {mark.line + 1})" if mark is not None else ""
            problem = getattr(exc, "problem", None) or "unreadable"
            raise FormProblems({ADVANCED: [f"not YAML{where}: {problem}"]}) from None

    def section(self) -> object:
        """The type's section: the YAML box, with each field given replacing its key."""
        section = self.yaml_section()
        given = {f.name: v for f in type_fields(self.type) if f.name in self.values
                 for ok, v in [field_value(f, self.raw(f.name))] if ok}
        if not given:
            return section
        if not isinstance(section, dict):
            raise FormProblems({ADVANCED: [say("form.not_mapping", type=self.type,
                                               got=type(section).__name__)]})
        return {**section, **given}


class FormProblems(UserError):
    """Everything wrong with the form at once, by slot: an envelope field (``study``,
    ``datasets``...), ``p.NAME`` for a parameter field, :data:`ADVANCED` for the YAML box
    (and parameters no field shows), :data:`GENERAL` for the job as a whole."""

    def __init__(self, by_slot: dict[str, list[str]]) -> None:
        self.by_slot = by_slot
        super().__init__("\n".join(f"{SOURCE}: {slot_label(s)}{m}"
                                   for s, ms in by_slot.items() for m in ms))


def without_fields(by_slot: dict[str, list[str]]) -> dict[str, list[str]]:
    """The same problems with those of parameter fields moved to :data:`GENERAL`, each
    naming its field (for a page that does not show those fields)."""
    out: dict[str, list[str]] = {}
    for slot, messages in by_slot.items():
        if slot.startswith(PREFIX):
            out.setdefault(GENERAL, []).extend(
                say("form.at", where=slot.removeprefix(PREFIX), problem=m) for m in messages)
        else:
            out.setdefault(slot, []).extend(messages)
    return out


def slot_label(slot: str) -> str:
    return "" if slot == GENERAL else f"{slot.removeprefix(PREFIX)}: "


def _slot(where: str, job_type: str, names: set[str]) -> tuple[str, str]:
    """The slot of a problem at ``where`` (a dotted path), and what of it to say there."""
    parts = where.split(".") if where else []
    if not parts:
        return GENERAL, ""
    if parts[0] in ENVELOPE:
        return parts[0], ".".join(parts[1:])
    if parts[0] == job_type and len(parts) > 1 and parts[1] in names:
        return PREFIX + parts[1], ".".join(parts[2:])
    if parts[0] == job_type:
        return ADVANCED, ".".join(parts[1:])
    return GENERAL, where


def spec_text(form: JobForm) -> str:
    """The form as job.yaml text (not yet validated)."""
    spec: dict = {"study": form.study, "type": form.type, "datasets": list(form.datasets)}
    if form.filter.strip():
        spec["filter"] = form.filter.strip()
    if form.type:
        spec[form.type] = form.section()
    return yaml.safe_dump(spec, sort_keys=False, allow_unicode=True)


def checked(form: JobForm) -> str:
    """The form's job.yaml once it passes the submission checks; else
    :class:`FormProblems` with every problem the submission check found."""
    text = spec_text(form)
    try:
        load_spec_text(text, SOURCE)
    except Invalid as exc:
        names = {f.name for f in type_fields(form.type)}
        by_slot: dict[str, list[str]] = {}
        for where, message in exc.problems:
            slot, rest = _slot(where, form.type, names)
            by_slot.setdefault(slot, []).append(
                say("form.at", where=rest, problem=message) if rest else message)
        raise FormProblems(by_slot) from None
    except FormProblems:
        raise
    except UserError as exc:  # a limit of the whole text (size, depth)
        raise FormProblems({GENERAL: [str(exc).removeprefix(f"{SOURCE}: ")]}) from None
    return text
