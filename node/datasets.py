"""Dataset registration at the node: check the file, profile it, validate the metadata,
build the catalog record, store it, and ask the link to republish the catalog.

Every check runs before anything is written, so a refused registration changes nothing.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from node.audit import AuditLog
from node.constraints import Violation, check_constraints
from node.profiling import check_file, profile_file
from node.store import DatasetRow, NodeStore
from scifed.errors import NotFound, UserError, excerpt, join_problems
from scifed.limits import MAX_MESSAGE_CHARS
from scifed.record import (
    CatalogRecord,
    ConstraintViolation,
    build_record,
    check_metadata,
    data_problems,
    problem_report,
    published_form,
    record_fields,
)


def _change(record: CatalogRecord, path: str) -> dict:
    """What the audit log keeps of a dataset change: identity, grade, checksum, and the
    constraint violations an officer registered it with."""
    change = {"path": path, "sha256": record.distributions[0].sha256,
              "grade": record.security_grade, "category": record.sharing_category,
              "version": record.version}
    if record.constraint_violations:
        change["constraint_violations"] = [v.model_dump() for v in
                                           record.constraint_violations]
    return change


def _refusal(meta_name: str, path: Path, problems: list[str],
             violations: list[Violation]) -> str:
    """One message for everything wrong with a registration: the metadata's problems
    (its own and what the data contradicts), then the rows breaking the dictionary."""
    parts = []
    if problems:
        parts.append(problem_report(meta_name, problems, MAX_MESSAGE_CHARS // 2))
    if violations:
        noun = "constraint" if len(violations) == 1 else "constraints"
        lines = join_problems([v.describe() for v in violations], MAX_MESSAGE_CHARS // 2,
                              indent="  ")
        parts.append(
            f"{excerpt(path.name, 100)} breaks {len(violations)} {noun} of its column "
            f"dictionary ({excerpt(meta_name, 100)}):\n{lines}\nfix the data or the "
            "metadata, or register it anyway with --accept-violations (the counts are "
            "recorded)")
    return "\n".join(parts)


def slugify(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    if not slug:
        raise UserError(f"cannot derive a dataset id from '{excerpt(name, 100)}'; pass --id")
    return slug[:63]


class DatasetRegistry:
    def __init__(self, store: NodeStore, *, node_name: str, platform: str, data_dir: Path,
                 on_change: Callable[[], None] = lambda: None) -> None:
        self.store = store
        self.audit = AuditLog(store)
        self.node_name = node_name
        self.platform = platform
        self.data_dir = Path(data_dir).resolve()
        self.on_change = on_change

    def resolve_path(self, path: str) -> Path:
        """The data file, which must resolve (symlinks included) inside the data directory."""
        if not path:
            raise UserError("no data file given")
        p = Path(path)
        name = excerpt(path, 200)
        try:
            full = (p if p.is_absolute() else self.data_dir / p).resolve()
            regular = full.is_file()
        except (OSError, RuntimeError) as exc:  # a name too long, a symlink loop
            raise UserError(f"{name}: cannot resolve ({getattr(exc, 'strerror', None) or exc})"
                            ) from None
        if not full.is_relative_to(self.data_dir):
            raise UserError(f"{name}: outside the node's data directory {self.data_dir}; "
                            "copy or link the file inside it first")
        if not regular:
            raise UserError(f"{name}: no such file in the node's data directory")
        return full

    def _build(self, path: Path, meta_yaml: str, meta_name: str, slug: str,
               accept_violations: bool) -> CatalogRecord:
        """The catalog record, once the metadata, what it says about the file and the
        column dictionary's constraints all hold; every problem of the three in one
        UserError.

        Rows breaking the dictionary refuse the registration (each column, constraint
        and row count is named, never a value) unless the officer accepts them: then the
        counts are kept in the record (and audited), for the catalog and the scorecard
        to show. A dictionary that cannot apply to its data (a bound that is not a number
        for a numeric column) is refused either way."""
        # The registration limits first, from the file's size and header alone: a file
        # too wide or too large is refused before anything reads it whole.
        check_file(path)
        checked = check_metadata(meta_yaml, meta_name)
        profile = profile_file(path)
        problems = [*checked.problems, *data_problems(checked, profile)]
        dictionary = check_constraints(path, record_fields(checked, profile))
        problems += dictionary.problems
        violations = dictionary.violations
        if problems or (violations and not accept_violations):
            raise UserError(_refusal(meta_name, path, problems, violations))
        assert checked.meta is not None  # no problems
        record = build_record(checked.meta, profile, node_id=self.node_name,
                              platform_id=self.platform, slug=slug)
        if not violations:
            return record
        return record.model_copy(update={"constraint_violations": [
            ConstraintViolation(column=v.column, constraint=v.constraint, rows=v.rows, of=v.of)
            for v in violations]})

    def add(self, path: str, meta_yaml: str, meta_name: str, slug: str = "",
            actor: str = "officer", accept_violations: bool = False) -> DatasetRow:
        full = self.resolve_path(path)
        slug = slugify(slug or full.stem)
        if self.store.get_dataset(slug):
            raise UserError(f"dataset '{excerpt(slug, 100)}' is already registered; use "
                            "`scifed node dataset update` or choose another --id")
        record = self._build(full, meta_yaml, meta_name, slug, accept_violations)
        rel = str(full.relative_to(self.data_dir))
        with self.store.tx() as con:
            self.store.insert_dataset(con, record.id, slug, rel, record.model_dump(mode="json"),
                                      meta_yaml)
            self.audit.append_in(con, actor, "dataset.add", record.id, _change(record, rel))
        self.on_change()
        return self.get(record.id)

    def update(self, key: str, meta_yaml: str = "", meta_name: str = "",
               refresh_data: bool = False, actor: str = "officer",
               accept_violations: bool = False) -> DatasetRow:
        row = self.get(key)
        full = self.resolve_path(row.path)
        if not meta_yaml and not refresh_data:
            raise UserError("nothing to update: give --meta FILE and/or --refresh-data")
        text = meta_yaml or row.meta_yaml
        name = meta_name if meta_yaml else f"stored metadata of {row.slug}"
        record = self._build(full, text, name, row.slug, accept_violations)
        if not refresh_data:
            # The officer changed only the description: the file must still be the one
            # that was registered, else the record would describe other data.
            if record.distributions[0].sha256 != row.record["distributions"][0]["sha256"]:
                raise UserError(f"{excerpt(row.path, 200)} changed since it was registered; "
                                "pass --refresh-data to re-read it")
        with self.store.tx() as con:
            self.store.update_dataset(con, row.dataset_id, row.path,
                                      record.model_dump(mode="json"), text)
            self.audit.append_in(con, actor, "dataset.update", row.dataset_id,
                                 {**_change(record, row.path), "refresh_data": refresh_data})
        self.on_change()
        return self.get(row.dataset_id)

    def remove(self, key: str, actor: str = "officer") -> str:
        row = self.get(key)
        with self.store.tx() as con:
            self.store.delete_dataset(con, row.dataset_id)
            self.audit.append_in(con, actor, "dataset.remove", row.dataset_id,
                                 {"path": row.path})
        self.on_change()
        return row.dataset_id

    def get(self, key: str) -> DatasetRow:
        row = self.store.get_dataset(key)
        if row is None:
            raise NotFound(f"no dataset '{excerpt(key, 100)}' at node {self.node_name}")
        return row

    def list(self) -> list[DatasetRow]:
        return self.store.list_datasets()

    def published_records(self) -> list[dict]:
        """What the coordinator may see: each record in its published form, G6 never."""
        out = []
        for row in self.list():
            form = published_form(CatalogRecord.model_validate(row.record))
            if form is not None:
                out.append(form)
        return out

    def assess_quality(self, key: str, *, fast: bool, overrides: dict[str, str], actor: str,
                       progress: Callable[[str], None]):
        """Run the AI-readiness scorecard, keep its summary in the record (published with
        it) and audit the assessment; returns the full report."""
        from node.scorecard import compute_scorecard, quality_summary

        row = self.get(key)
        record = CatalogRecord.model_validate(row.record)
        report = compute_scorecard(self.data_path(row.dataset_id), record, fast=fast,
                                   overrides=overrides, progress=progress,
                                   rules=record.rules, officer=actor)
        updated = {**row.record, "quality": quality_summary(report)}
        with self.store.tx() as con:
            self.store.update_dataset(con, row.dataset_id, row.path, updated, row.meta_yaml)
            self.audit.append_in(con, actor, "dataset.quality", row.dataset_id,
                                 {"grade": report.grade, "score": report.score,
                                  "overrides": [o.model_dump() for o in report.overrides]})
        self.on_change()
        return report

    def data_path(self, key: str) -> Path:
        """Local path of a dataset's file, for in-node computation only."""
        return self.resolve_path(self.get(key).path)
