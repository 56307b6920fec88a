"""Federated catalog index: the records nodes publish (metadata only), and search over them.

A node's sync replaces everything it published before, so the index never holds a record
its owner has withdrawn. Records are validated here, at the boundary, because the
coordinator must never store a G6 record or let one node speak for another.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Float,
    Select,
    String,
    delete,
    func,
    insert,
    literal,
    literal_column,
    or_,
    select,
    text,
)
from sqlalchemy.orm import Session

from coordinator.db import (
    FTS_COLUMNS,
    FTS_TABLE,
    FTS_WEIGHTS,
    Database,
    Node,
    Record,
    RecordTerm,
    TermKind,
)
from scifed.errors import UserError

PUBLISHABLE_GRADES = ("G1", "G2", "G3", "G4", "G5")
SHARING_CATEGORIES = ("OPEN", "CONDITIONAL", "CLOSED")
QUALITY_GRADES = ("A", "B", "C", "D")  # best first (governance §3.3)

# Words (any script) possibly joined by underscores, as in column names; everything else in
# a query, including all FTS5 and tsquery syntax, only separates tokens.
_WORD = re.compile(r"[^\W_]+(?:_+[^\W_]+)*")
# Chinese, Japanese and Korean: PostgreSQL's parser makes a whole run of them one lexeme.
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")
_TRIGRAM = 3
_ID_CHUNK = 500  # stays far below SQLite's bound-parameter limit


@dataclass(frozen=True)
class Hit:
    """One search result: enough to list it; ``get_record`` has the rest."""

    record_id: str
    title: str  # zh when the record has it, else en
    node: str
    platform: str
    grade: str
    category: str
    subjects: list[str]
    stub: bool
    record_count: int | None
    score: float  # higher is better; 0.0 when the query has no indexed word
    quality: str | None = None  # A–D, None without a published quality report


@dataclass(frozen=True)
class _Entry:
    """A validated record with the text and facets the index derives from it."""

    record: dict[str, Any]
    title: str
    texts: dict[str, str]  # FTS column -> lower-cased text
    terms: set[tuple[TermKind, str]]
    quality_grade: str | None


def _lang_texts(value: object) -> list[str]:
    if not isinstance(value, dict):
        return []
    return [v for v in (value.get("zh"), value.get("en")) if isinstance(v, str) and v.strip()]


def _strings(label: str, raw: dict[str, Any], key: str) -> list[str]:
    value = raw.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise UserError(f"{label}: {key!r} must be a list of strings")
    return value


def _column_names(label: str, raw: dict[str, Any]) -> list[str]:
    fields = raw.get("fields", [])
    if not isinstance(fields, list) or not all(
        isinstance(f, dict) and isinstance(f.get("name"), str) for f in fields
    ):
        raise UserError(f"{label}: 'fields' must be a list of objects with a 'name'")
    return [f["name"] for f in fields]


def _validate(node_name: str, position: int, raw: object) -> _Entry:
    """Check one record against the node-side contract and derive what the index stores."""
    if not isinstance(raw, dict):
        raise UserError(f"catalog record #{position} from node {node_name!r} is not an object")
    record_id = raw.get("id")
    if not isinstance(record_id, str) or not record_id.strip():
        raise UserError(f"catalog record #{position} from node {node_name!r}: missing 'id'")
    label = f"catalog record {record_id!r} from node {node_name!r}"
    if raw.get("node_id") != node_name:
        raise UserError(
            f"{label}: node_id is {raw.get('node_id')!r}; a node publishes only its own records"
        )
    titles = _lang_texts(raw.get("title"))
    if not titles:
        raise UserError(f"{label}: missing 'title' (needs a zh or en text)")
    grade = raw.get("security_grade")
    if grade is None:
        raise UserError(f"{label}: missing 'security_grade'")
    if grade == "G6":
        raise UserError(f"{label}: G6 (core data) records are never published to the coordinator")
    if grade not in PUBLISHABLE_GRADES:
        raise UserError(f"{label}: security_grade must be one of G1..G5, got {grade!r}")
    category = raw.get("sharing_category")
    if category is None:
        raise UserError(f"{label}: missing 'sharing_category'")
    if category not in SHARING_CATEGORIES:
        raise UserError(
            f"{label}: sharing_category must be one of {', '.join(SHARING_CATEGORIES)}, "
            f"got {category!r}"
        )
    count = raw.get("record_count")
    if count is not None and (isinstance(count, bool) or not isinstance(count, int)):
        raise UserError(f"{label}: 'record_count' must be an integer")
    quality = raw.get("quality")
    if quality is not None and (
        not isinstance(quality, dict) or quality.get("grade") not in QUALITY_GRADES
    ):
        raise UserError(f"{label}: 'quality' must be a quality summary whose grade is one of "
                        f"{', '.join(QUALITY_GRADES)}")
    keywords = _strings(label, raw, "keywords")
    subjects = _strings(label, raw, "subjects")
    columns = _column_names(label, raw)
    texts = {
        "title": " ".join(titles),
        "keywords": " ".join(keywords),
        "subjects": " ".join(subjects),
        "columns": " ".join(columns),
        "description": " ".join(_lang_texts(raw.get("description"))),
    }
    terms = {
        (kind, value.strip().lower())
        for kind, values in (
            (TermKind.SUBJECT, subjects),
            (TermKind.KEYWORD, keywords),
            (TermKind.COLUMN, columns),
        )
        for value in values
        if value.strip()
    }
    return _Entry(
        record=raw,
        title=titles[0],
        texts={k: v.lower() for k, v in texts.items()},
        terms=terms,
        quality_grade=quality["grade"] if quality is not None else None,
    )


def _chunks(items: Sequence[str]) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), _ID_CHUNK):
        yield items[start : start + _ID_CHUNK]


def sync_records(db: Database, node_name: str, records: list[dict]) -> tuple[int, int]:
    """Replace everything ``node_name`` published with ``records``, in one transaction.

    Returns (indexed, removed): how many records the node now publishes, and how many it
    published before but no longer does. Any invalid record refuses the whole sync.
    """
    entries = [_validate(node_name, i, raw) for i, raw in enumerate(records, start=1)]
    ids = [e.record["id"] for e in entries]
    seen: set[str] = set()
    for record_id in ids:
        if record_id in seen:
            raise UserError(f"catalog record {record_id!r} from node {node_name!r} is listed twice")
        seen.add(record_id)

    now_ms = time.time_ns() // 1_000_000
    with db.session() as session:
        # Writing first takes SQLite's write lock, so the ownership check below cannot race
        # another node's sync.
        if db.dialect == "sqlite":
            session.execute(
                text(
                    f"DELETE FROM {FTS_TABLE} WHERE record_id IN "
                    "(SELECT record_id FROM records WHERE node_name = :node)"
                ),
                {"node": node_name},
            )
        previous = session.scalars(
            delete(Record).where(Record.node_name == node_name).returning(Record.record_id)
        ).all()  # record_terms go with them (ON DELETE CASCADE)
        node = session.get(Node, node_name)
        if node is None:
            raise UserError(f"node {node_name!r} is not enrolled with this coordinator")
        _refuse_foreign_ids(session, node_name, ids)
        if entries:
            _insert(session, db.dialect, node, entries, now_ms)
    return len(entries), len(set(previous) - seen)


def _refuse_foreign_ids(session: Session, node_name: str, ids: Sequence[str]) -> None:
    """Record ids are unique across the federation: one node cannot replace another's."""
    for chunk in _chunks(ids):
        taken = session.execute(
            select(Record.record_id, Record.node_name).where(Record.record_id.in_(chunk))
        ).first()
        if taken is not None:
            raise UserError(
                f"catalog record {taken.record_id!r} from node {node_name!r}: "
                f"that id is already published by node {taken.node_name!r}"
            )


def _insert(session: Session, dialect: str, node: Node, entries: list[_Entry], now_ms: int) -> None:
    """Write the records, their facets and (on SQLite) their FTS rows."""
    session.execute(
        insert(Record),
        [
            {
                "record_id": e.record["id"],
                "node_name": node.name,
                "record_json": e.record,
                "title": e.title,
                "grade": e.record["security_grade"],
                "category": e.record["sharing_category"],
                # A record without platform_id belongs to its node's platform.
                "platform": e.record.get("platform_id") or node.platform,
                "stub": bool(e.record.get("stub", False)),
                "record_count": e.record.get("record_count"),
                "quality_grade": e.quality_grade,
                "updated_ms": now_ms,
                "search_text": " ".join(t for t in e.texts.values() if t),
            }
            for e in entries
        ],
    )
    terms = [
        {"record_id": e.record["id"], "kind": kind, "value_norm": value}
        for e in entries
        for kind, value in sorted(e.terms)
    ]
    if terms:
        session.execute(insert(RecordTerm), terms)
    if dialect == "sqlite":
        session.execute(
            text(
                f"INSERT INTO {FTS_TABLE} (record_id, {', '.join(FTS_COLUMNS)}) "
                f"VALUES (:record_id, {', '.join(':' + c for c in FTS_COLUMNS)})"
            ),
            [{"record_id": e.record["id"], **e.texts} for e in entries],
        )


def _fts5_expression(tokens: Sequence[str]) -> str:
    """Every token becomes a quoted FTS5 string, ANDed: user text is never FTS5 syntax.

    Trigram strings match anywhere in a word, which subsumes prefix matching.
    """
    return " AND ".join('"' + token.replace('"', '""') + '"' for token in tokens)


def _match_text(
    stmt: Select[Any], dialect: str, tokens: list[str]
) -> tuple[Select[Any], ColumnElement[Any]]:
    """Restrict ``stmt`` to records containing every token; return it with a score column.

    SQLite's trigram index cannot match fewer than three characters, and PostgreSQL's
    parser does not segment Chinese (a whole run of it is one lexeme), so those tokens go
    to a LIKE over ``search_text`` instead.
    """
    if dialect == "sqlite":
        indexed = [t for t in tokens if len(t) >= _TRIGRAM]
        like = [t for t in tokens if len(t) < _TRIGRAM]
    else:
        indexed = [t for t in tokens if not _CJK.search(t)]
        like = [t for t in tokens if _CJK.search(t)]
    for token in like:
        stmt = stmt.where(Record.search_text.contains(token, autoescape=True))
    if not indexed:
        return stmt, literal(0.0)

    if dialect == "sqlite":
        weights = ", ".join(str(w) for w in (0.0, *FTS_WEIGHTS))  # 0.0: record_id
        matches = (
            text(
                f"SELECT record_id, -bm25({FTS_TABLE}, {weights}) AS score "
                f"FROM {FTS_TABLE} WHERE {FTS_TABLE} MATCH :expr"
            )
            .bindparams(expr=_fts5_expression(indexed))
            .columns(record_id=String(), score=Float())
            .subquery("fts")
        )
        return stmt.join(matches, matches.c.record_id == Record.record_id), matches.c.score

    *head, last = indexed
    tsquery = func.to_tsquery("simple", func.quote_literal(last).concat(":*"))  # prefix
    if head:
        tsquery = func.plainto_tsquery("simple", " ".join(head)).op("&&")(tsquery)
    tsv = literal_column("records.tsv")
    return stmt.where(tsv.op("@@")(tsquery)), func.ts_rank(tsv, tsquery)


def search(
    db: Database,
    *,
    query: str = "",
    subjects: Iterable[str] = (),
    platforms: Iterable[str] = (),
    grades: Iterable[str] = (),
    categories: Iterable[str] = (),
    keywords: Iterable[str] = (),
    columns: Iterable[str] = (),
    min_quality: str | None = None,
    limit: int = 50,
) -> list[Hit]:
    """Records matching the free text and every given filter, best match first.

    Filters AND across kinds and OR within one (subjects=["Ecology", "Biology"] matches
    either). ``platforms`` matches a record's platform_id or its node's name.
    ``min_quality`` keeps records whose quality grade is that good or better ("B" keeps A
    and B); a record without a quality report never matches it. A query with no
    searchable word does not restrict the results.
    """
    if limit < 1:
        raise UserError(f"search limit must be at least 1, got {limit}")
    if min_quality is not None and min_quality.strip().upper() not in QUALITY_GRADES:
        raise UserError(f"minimum quality grade must be one of {', '.join(QUALITY_GRADES)}, "
                        f"got {min_quality!r}")
    tokens = [t.lower() for t in _WORD.findall(query)]
    stmt, score = _match_text(select(Record), db.dialect, tokens)

    for kind, values in (
        (TermKind.SUBJECT, subjects),
        (TermKind.KEYWORD, keywords),
        (TermKind.COLUMN, columns),
    ):
        wanted = sorted({v.strip().lower() for v in values if v.strip()})
        if wanted:
            stmt = stmt.where(
                Record.record_id.in_(
                    select(RecordTerm.record_id).where(
                        RecordTerm.kind == kind, RecordTerm.value_norm.in_(wanted)
                    )
                )
            )
    if platforms := sorted(set(platforms)):
        stmt = stmt.where(or_(Record.platform.in_(platforms), Record.node_name.in_(platforms)))
    if grades := sorted({g.upper() for g in grades}):
        stmt = stmt.where(Record.grade.in_(grades))
    if categories := sorted({c.upper() for c in categories}):
        stmt = stmt.where(Record.category.in_(categories))
    if min_quality is not None:
        worst = QUALITY_GRADES.index(min_quality.strip().upper())
        stmt = stmt.where(Record.quality_grade.in_(QUALITY_GRADES[: worst + 1]))

    stmt = (
        stmt.add_columns(score.label("score"))
        .order_by(score.desc(), Record.title, Record.record_id)
        .limit(limit)
    )
    with db.session() as session:
        rows = session.execute(stmt).all()
    return [
        Hit(
            record_id=r.record_id,
            title=r.title,
            node=r.node_name,
            platform=r.platform,
            grade=r.grade,
            category=r.category,
            subjects=list(r.record_json.get("subjects", [])),
            stub=r.stub,
            record_count=r.record_count,
            score=float(s),
            quality=r.quality_grade,
        )
        for r, s in rows
    ]


def get_record(db: Database, record_id: str) -> tuple[dict, str] | None:
    """The record as published, and the node that holds its data; None if not indexed."""
    with db.session() as session:
        record = session.get(Record, record_id)
        return None if record is None else (record.record_json, record.node_name)
