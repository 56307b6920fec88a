"""Coordinator database: node registry and federated catalog index, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import text

from coordinator import catalog, registry
from coordinator.db import Database
from scifed.errors import UserError


def record(
    rid: str,
    node: str = "alpha",
    *,
    zh: str | None = None,
    en: str | None = None,
    grade: str = "G1",
    category: str = "OPEN",
    subjects: tuple[str, ...] = (),
    keywords: tuple[str, ...] = (),
    columns: tuple[str, ...] = (),
    description: str | None = None,
    platform: str = "zju-ecology",
    **extra: Any,
) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "id": rid,
        "title": {"zh": zh, "en": en},
        "keywords": list(keywords),
        "subjects": list(subjects),
        "node_id": node,
        "platform_id": platform,
        "security_grade": grade,
        "sharing_category": category,
        "stub": False,
        **extra,
    }
    if description is not None:
        rec["description"] = {"zh": None, "en": description}
    if columns:
        rec["fields"] = [{"name": c, "type": "number"} for c in columns]
    return rec


PENGUINS = record(
    "alpha/penguins",
    zh="帕尔默企鹅数据集",
    en="Palmer penguins",
    description="Size measurements of three penguin species in the Antarctic",
    subjects=("Ecology",),
    keywords=("penguins", "Antarctica"),
    columns=("species", "island", "bill_length_mm"),
    record_count=344,
)
SEA_ICE = record(
    "alpha/seaice",
    zh="南极海冰观测",
    en="Antarctic sea ice extent",
    grade="G2",
    category="CONDITIONAL",
    subjects=("Earth Science",),
    keywords=("Sea Ice", "climate"),
    columns=("date", "extent_km2"),
)
COHORT = record(
    "beta/cohort",
    "beta",
    zh="肝癌队列临床数据",
    en="Liver cancer cohort",
    grade="G4",
    category="CONDITIONAL",
    subjects=("Medicine", "Biology"),
    keywords=("oncology",),
    columns=("age", "tumor_size_mm"),
    platform="hz-med",
)
GENOME = record(
    "beta/genome",
    "beta",
    en="Genome panel",
    grade="G5",
    category="CLOSED",
    subjects=("Biology",),
    platform="hz-med",
    stub=True,
)


def enrol(db: Database, *names: str) -> None:
    for name in names:
        registry.upsert_node(
            db,
            name=name,
            platform=f"platform-{name}",
            software_version="0.1.0",
            cert_fingerprint=f"sha256:{name}",
        )


@pytest.fixture
def loaded(db: Database) -> Database:
    enrol(db, "alpha", "beta")
    assert catalog.sync_records(db, "alpha", [PENGUINS, SEA_ICE]) == (2, 0)
    assert catalog.sync_records(db, "beta", [COHORT, GENOME]) == (2, 0)
    return db


def ids(db: Database, **kwargs: Any) -> set[str]:
    return {hit.record_id for hit in catalog.search(db, **kwargs)}


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("penguins", {"alpha/penguins"}),
        ("PALMER", {"alpha/penguins"}),
        ("pengu", {"alpha/penguins"}),  # prefix of the last word
        ("antarctic", {"alpha/penguins", "alpha/seaice"}),  # title or description
        ("liver cohort", {"beta/cohort"}),
        ("penguins cohort", set()),  # every word must match
        ("bill_length_mm", {"alpha/penguins"}),  # column names are indexed
        ("oncology", {"beta/cohort"}),  # keywords are indexed
        ("medicine", {"beta/cohort"}),  # subjects are indexed
        ("", {"alpha/penguins", "alpha/seaice", "beta/cohort", "beta/genome"}),
    ],
)
def test_search_free_text_english(loaded: Database, query: str, expected: set[str]) -> None:
    assert ids(loaded, query=query) == expected


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("企鹅", {"alpha/penguins"}),  # two characters: below the trigram length
        ("帕尔默企鹅", {"alpha/penguins"}),
        ("南极", {"alpha/seaice"}),
        ("临床数据", {"beta/cohort"}),
        ("海冰 extent", {"alpha/seaice"}),
        ("企鹅 cohort", set()),
    ],
)
def test_search_free_text_chinese(loaded: Database, query: str, expected: set[str]) -> None:
    assert ids(loaded, query=query) == expected


def test_search_hit_carries_listing_fields(loaded: Database) -> None:
    [hit] = catalog.search(loaded, query="penguins")
    assert (hit.record_id, hit.title, hit.node, hit.platform) == (
        "alpha/penguins",
        "帕尔默企鹅数据集",
        "alpha",
        "zju-ecology",
    )
    assert (hit.grade, hit.category, hit.subjects, hit.stub, hit.record_count) == (
        "G1",
        "OPEN",
        ["Ecology"],
        False,
        344,
    )
    assert hit.score > 0
    [stub] = catalog.search(loaded, categories=["CLOSED"])
    assert stub.stub and stub.record_count is None and stub.title == "Genome panel"


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"subjects": ["ecology"]}, {"alpha/penguins"}),
        ({"subjects": ["Ecology", "Medicine"]}, {"alpha/penguins", "beta/cohort"}),
        ({"platforms": ["hz-med"]}, {"beta/cohort", "beta/genome"}),
        ({"platforms": ["alpha"]}, {"alpha/penguins", "alpha/seaice"}),  # node name
        (
            {"platforms": ["alpha", "hz-med"]},
            {"alpha/penguins", "alpha/seaice", "beta/cohort", "beta/genome"},
        ),
        ({"grades": ["G4"]}, {"beta/cohort"}),
        ({"grades": ["G1", "G5"]}, {"alpha/penguins", "beta/genome"}),
        ({"categories": ["CLOSED"]}, {"beta/genome"}),
        ({"categories": ["CONDITIONAL"]}, {"alpha/seaice", "beta/cohort"}),
        ({"keywords": ["sea ice"]}, {"alpha/seaice"}),
        ({"keywords": ["sea"]}, set()),  # facets match whole values
        ({"columns": ["TUMOR_SIZE_MM"]}, {"beta/cohort"}),
        ({"columns": ["species", "extent_km2"]}, {"alpha/penguins", "alpha/seaice"}),
    ],
)
def test_search_each_filter(loaded: Database, filters: dict, expected: set[str]) -> None:
    assert ids(loaded, **filters) == expected


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"subjects": ["Biology"], "categories": ["CONDITIONAL"]}, {"beta/cohort"}),
        ({"subjects": ["Biology"], "platforms": ["beta"], "grades": ["G5"]}, {"beta/genome"}),
        ({"query": "antarctic", "grades": ["G2"], "platforms": ["alpha"]}, {"alpha/seaice"}),
        ({"query": "antarctic", "columns": ["island"]}, {"alpha/penguins"}),
        ({"query": "cohort", "grades": ["G1"]}, set()),
        ({"query": "企鹅", "keywords": ["antarctica"]}, {"alpha/penguins"}),
    ],
)
def test_search_combined_filters(loaded: Database, kwargs: dict, expected: set[str]) -> None:
    assert ids(loaded, **kwargs) == expected


@pytest.mark.parametrize(
    "query",
    [
        '"',
        '""',
        '"penguins',
        "penguin*",
        "*",
        "NEAR(palmer penguins, 2)",
        "-penguins",
        "title:penguins",
        "^palmer",
        "palmer OR cohort",
        "NOT AND OR",
        "' OR 1=1 --",
        "%",
        "_",
        "50%_off",
        "\\",
        ")(",
        "{title description}: penguins",
        "penguins & !cohort | x:*",
        '企鹅"*',
    ],
)
def test_search_query_syntax_is_never_interpreted(loaded: Database, query: str) -> None:
    hits = catalog.search(loaded, query=query)
    assert isinstance(hits, list)


def test_search_special_characters_only_separate_words(loaded: Database) -> None:
    assert ids(loaded, query='"penguins"') == {"alpha/penguins"}
    assert ids(loaded, query="penguin*") == {"alpha/penguins"}
    assert ids(loaded, query="NEAR(palmer penguins)") == set()  # "near" is just a word
    assert ids(loaded, query="title:penguins") == set()  # so is "title"


def test_search_limit(loaded: Database) -> None:
    assert len(catalog.search(loaded, limit=1)) == 1
    with pytest.raises(UserError, match="limit"):
        catalog.search(loaded, limit=0)


def test_resync_replaces_everything_the_node_published(loaded: Database) -> None:
    renamed = {**PENGUINS, "title": {"zh": "企鹅形态测量", "en": "Penguin morphometrics"}}
    assert catalog.sync_records(loaded, "alpha", [renamed]) == (1, 1)

    assert catalog.get_record(loaded, "alpha/seaice") is None
    assert ids(loaded, query="sea ice") == set()
    assert ids(loaded, query="南极") == set()
    assert ids(loaded, keywords=["sea ice"]) == set()
    assert ids(loaded, query="palmer") == set()  # the old title is gone from the index
    assert ids(loaded, query="morphometrics") == {"alpha/penguins"}
    assert catalog.get_record(loaded, "alpha/penguins") == (renamed, "alpha")
    assert ids(loaded, platforms=["beta"]) == {"beta/cohort", "beta/genome"}  # untouched

    assert catalog.sync_records(loaded, "alpha", []) == (0, 1)
    assert ids(loaded, platforms=["alpha"]) == set()
    if loaded.dialect == "sqlite":  # the FTS5 mirror holds exactly the indexed records
        with loaded.session() as session:
            fts = session.execute(text("SELECT record_id FROM records_fts")).scalars().all()
        assert sorted(fts) == ["beta/cohort", "beta/genome"]


def test_get_record_returns_record_and_node(loaded: Database) -> None:
    assert catalog.get_record(loaded, "beta/cohort") == (COHORT, "beta")
    assert catalog.get_record(loaded, "nope") is None


def test_node_cannot_publish_another_nodes_record_id(loaded: Database) -> None:
    stolen = {**PENGUINS, "node_id": "beta", "title": {"zh": None, "en": "Stolen"}}
    fresh = record("beta/new", "beta", en="Fresh dataset")
    with pytest.raises(UserError, match=r"'alpha/penguins'.*already published by node 'alpha'"):
        catalog.sync_records(loaded, "beta", [fresh, stolen])
    assert catalog.get_record(loaded, "alpha/penguins") == (PENGUINS, "alpha")
    assert ids(loaded, platforms=["beta"]) == {"beta/cohort", "beta/genome"}
    assert ids(loaded, query="fresh") == set()


def test_g6_record_is_refused_and_nothing_written(loaded: Database) -> None:
    core = record("alpha/core", zh="核心数据", grade="G6", category="CLOSED")
    new = record("alpha/new", en="New dataset")
    with pytest.raises(UserError, match=r"'alpha/core'.*G6"):
        catalog.sync_records(loaded, "alpha", [new, core])
    assert ids(loaded, platforms=["alpha"]) == {"alpha/penguins", "alpha/seaice"}
    assert catalog.get_record(loaded, "alpha/new") is None
    assert catalog.get_record(loaded, "alpha/core") is None
    assert ids(loaded, query="new dataset") == set()


def _without(key: str) -> dict[str, Any]:
    return {k: v for k, v in record("alpha/x", en="X").items() if k != key}


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (_without("id"), r"#2 from node 'alpha': missing 'id'"),
        (_without("title"), r"'alpha/x'.*missing 'title'"),
        (record("alpha/x", zh="", en=None), r"'alpha/x'.*missing 'title'"),
        (_without("security_grade"), r"'alpha/x'.*missing 'security_grade'"),
        (_without("sharing_category"), r"'alpha/x'.*missing 'sharing_category'"),
        (record("alpha/x", en="X", grade="G7"), r"'alpha/x'.*security_grade"),
        (record("alpha/x", en="X", category="SECRET"), r"'alpha/x'.*sharing_category"),
        (record("alpha/x", "beta", en="X"), r"'alpha/x'.*node_id is 'beta'"),
        ({**record("alpha/x", en="X"), "keywords": "oops"}, r"'alpha/x'.*'keywords'"),
        (record("alpha/x", en="X", fields=[{"type": "x"}]), r"'alpha/x'.*'fields'"),
        (record("alpha/x", en="X", record_count="many"), r"'alpha/x'.*'record_count'"),
    ],
)
def test_invalid_record_refuses_the_whole_sync(loaded: Database, bad: dict, message: str) -> None:
    with pytest.raises(UserError, match=message):
        catalog.sync_records(loaded, "alpha", [record("alpha/ok", en="Ok"), bad])
    assert ids(loaded, platforms=["alpha"]) == {"alpha/penguins", "alpha/seaice"}


def test_duplicate_id_and_unknown_node_are_refused(loaded: Database) -> None:
    twice = record("alpha/x", en="X")
    with pytest.raises(UserError, match="listed twice"):
        catalog.sync_records(loaded, "alpha", [twice, twice])
    with pytest.raises(UserError, match="'gamma' is not enrolled"):
        catalog.sync_records(loaded, "gamma", [record("gamma/x", "gamma", en="X")])
    assert ids(loaded, platforms=["alpha"]) == {"alpha/penguins", "alpha/seaice"}


def test_record_without_platform_id_takes_its_nodes_platform(loaded: Database) -> None:
    loose = {
        k: v for k, v in record("beta/loose", "beta", en="Loose").items() if k != "platform_id"
    }
    catalog.sync_records(loaded, "beta", [loose])
    assert ids(loaded, platforms=["platform-beta"]) == {"beta/loose"}


def test_concurrent_syncs_from_many_nodes(db: Database) -> None:
    names = [f"node{i}" for i in range(6)]
    enrol(db, *names)

    def sync(name: str) -> tuple[int, int]:
        recs = [record(f"{name}/{j}", name, en=f"Dataset {j} of {name}") for j in range(20)]
        catalog.sync_records(db, name, recs)
        return catalog.sync_records(db, name, recs[:10])

    with ThreadPoolExecutor(len(names)) as pool:
        assert list(pool.map(sync, names)) == [(10, 10)] * len(names)
    assert [n.datasets for n in registry.list_nodes(db, now_ms=0, offline_after_ms=1)] == [10] * 6


def test_registry_online_offline(db: Database) -> None:
    enrol(db, "beta", "alpha")
    assert registry.node_names(db) == ["alpha", "beta"]
    assert [
        (n.name, n.online, n.last_seen_ms)
        for n in registry.list_nodes(db, now_ms=1_000, offline_after_ms=500)
    ] == [("alpha", False, None), ("beta", False, None)]

    registry.mark_connected(db, "alpha", True, 1_000)
    registry.mark_connected(db, "beta", True, 1_000)
    registry.touch(db, "beta", 1_800)

    def online(now_ms: int) -> dict[str, bool]:
        return {
            n.name: n.online for n in registry.list_nodes(db, now_ms=now_ms, offline_after_ms=500)
        }

    assert online(1_500) == {"alpha": True, "beta": True}
    assert online(2_000) == {"alpha": False, "beta": True}  # alpha's heartbeats stopped
    registry.mark_connected(db, "beta", False, 2_100)
    assert online(2_100) == {"alpha": False, "beta": False}  # stream closed

    catalog.sync_records(db, "alpha", [PENGUINS, SEA_ICE])
    [alpha, beta] = registry.list_nodes(db, now_ms=2_100, offline_after_ms=500)
    assert (alpha.platform, alpha.datasets, alpha.software_version) == (
        "platform-alpha",
        2,
        "0.1.0",
    )
    assert (beta.datasets, beta.last_seen_ms) == (0, 2_100)


def test_reset_connections_and_reenrolment(db: Database) -> None:
    enrol(db, "alpha", "beta")
    registry.mark_connected(db, "alpha", True, 1_000)
    registry.mark_connected(db, "beta", True, 1_000)
    registry.upsert_node(
        db, name="alpha", platform="new-platform", software_version="0.2.0", cert_fingerprint="x"
    )
    [alpha, _] = registry.list_nodes(db, now_ms=1_000, offline_after_ms=500)
    assert (alpha.online, alpha.platform, alpha.software_version) == (True, "new-platform", "0.2.0")

    registry.reset_connections(db)
    assert not any(n.online for n in registry.list_nodes(db, now_ms=1_000, offline_after_ms=500))
    with pytest.raises(UserError, match="'gamma' is not enrolled"):
        registry.touch(db, "gamma", 1_000)
    with pytest.raises(UserError, match="'gamma' is not enrolled"):
        registry.mark_connected(db, "gamma", True, 1_000)


def test_reopening_keeps_data_and_index(loaded: Database) -> None:
    again = Database(loaded.engine.url.render_as_string(hide_password=False))
    try:
        assert ids(again, query="企鹅") == {"alpha/penguins"}
        assert ids(again, query="palmer penguins") == {"alpha/penguins"}
        assert catalog.sync_records(again, "alpha", [PENGUINS]) == (1, 1)
    finally:
        again.close()


def test_sqlite_connection_settings(tmp_path: Any) -> None:
    database = Database(f"sqlite:///{tmp_path / 'coord.db'}")
    try:
        with database.session() as session:
            assert session.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert session.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert database.dialect == "sqlite"
    finally:
        database.close()


def quality(grade: str) -> dict[str, Any]:
    """A published quality summary, as `node.scorecard.quality_summary` writes it."""
    return {
        "grade": grade,
        "score": {"A": 92.5, "B": 78.0, "C": 55.0, "D": 40.0}[grade],
        "gates_passed": grade != "D",
        "failed_gates": ["licence"] if grade == "D" else [],
        "dimensions": {"completeness": 1.0, "trainability": None},
        "computed_at": "2026-05-01T08:00:00+00:00",
        "scorecard_version": "1.0",
    }


@pytest.fixture
def graded(db: Database) -> Database:
    enrol(db, "alpha", "beta")
    catalog.sync_records(db, "alpha", [
        record("alpha/a", en="Graded A", quality=quality("A")),
        record("alpha/b", en="Graded B", quality=quality("B")),
        record("alpha/none", en="Never scored"),
    ])
    catalog.sync_records(db, "beta", [
        record("beta/c", "beta", en="Graded C", quality=quality("C")),
        record("beta/d", "beta", en="Graded D", quality=quality("D")),
    ])
    return db


@pytest.mark.parametrize(
    ("min_quality", "expected"),
    [
        ("A", {"alpha/a"}),
        ("B", {"alpha/a", "alpha/b"}),
        ("c", {"alpha/a", "alpha/b", "beta/c"}),  # case does not matter
        ("D", {"alpha/a", "alpha/b", "beta/c", "beta/d"}),  # never the unscored record
        (None, {"alpha/a", "alpha/b", "beta/c", "beta/d", "alpha/none"}),
    ],
)
def test_search_by_minimum_quality_grade(
    graded: Database, min_quality: str | None, expected: set[str]
) -> None:
    assert ids(graded, min_quality=min_quality) == expected


def test_minimum_quality_combines_with_other_filters(graded: Database) -> None:
    assert ids(graded, min_quality="C", platforms=["beta"]) == {"beta/c"}
    assert ids(graded, query="graded", min_quality="B") == {"alpha/a", "alpha/b"}
    hits = {h.record_id: h.quality for h in catalog.search(graded)}
    assert hits == {"alpha/a": "A", "alpha/b": "B", "beta/c": "C", "beta/d": "D",
                    "alpha/none": None}


def test_resync_updates_the_quality_grade(graded: Database) -> None:
    catalog.sync_records(graded, "beta", [
        record("beta/c", "beta", en="Graded C", quality=quality("A")),
        record("beta/d", "beta", en="Graded D"),
    ])
    assert ids(graded, min_quality="A") == {"alpha/a", "beta/c"}
    assert "beta/d" not in ids(graded, min_quality="D")


@pytest.mark.parametrize("bad", ["E", "", "AB", "excellent"])
def test_unknown_minimum_quality_grade_is_refused(graded: Database, bad: str) -> None:
    with pytest.raises(UserError, match="minimum quality grade must be one of A, B, C, D"):
        catalog.search(graded, min_quality=bad)


@pytest.mark.parametrize("bad", [{"grade": "E"}, {"score": 90.0}, "A", ["A"]])
def test_record_with_a_malformed_quality_summary_is_refused(
    graded: Database, bad: object
) -> None:
    with pytest.raises(UserError, match=r"'alpha/x'.*'quality' must be a quality summary"):
        catalog.sync_records(graded, "alpha", [record("alpha/x", en="X", quality=bad)])
    assert ids(graded, platforms=["alpha"]) == {"alpha/a", "alpha/b", "alpha/none"}


def test_database_from_before_quality_grades_gains_the_column(graded: Database) -> None:
    """A release before migrations and before quality grades made this database."""
    url = graded.engine.url.render_as_string(hide_password=False)
    with graded.session() as session:
        session.execute(text("DROP INDEX ix_records_quality_grade"))
        session.execute(text("ALTER TABLE records DROP COLUMN quality_grade"))
        session.execute(text("DROP TABLE alembic_version"))
        for column in ("restarts", "run_study"):  # added since migrations began (0002)
            session.execute(text(f"ALTER TABLE jobs DROP COLUMN {column}"))
    graded.close()
    upgraded = Database(url)
    try:
        # Old rows have no grade until their node syncs again; everything else still works.
        assert ids(upgraded, min_quality="D") == set()
        assert ids(upgraded, query="graded") == {"alpha/a", "alpha/b", "beta/c", "beta/d"}
        catalog.sync_records(upgraded, "alpha", [
            record("alpha/a", en="Graded A", quality=quality("A"))])
        assert ids(upgraded, min_quality="B") == {"alpha/a"}
    finally:
        upgraded.close()


def test_sqlite_state_is_wal_without_a_sync_per_commit_and_serves_many_threads(tmp_path):
    """The coordinator's SQLite: WAL with synchronous=NORMAL (a commit is not an fsync),
    and a pool that gives a 100-node fan-out a connection per thread without waiting."""
    db = Database(f"sqlite:///{tmp_path / 'coordinator.db'}")
    try:
        with db.engine.connect() as con:
            assert con.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert con.execute(text("PRAGMA synchronous")).scalar() == 1  # NORMAL
        barrier = threading.Barrier(100, timeout=20)

        def hold(_: int) -> int:
            with db.engine.connect() as con:  # all 100 at once: none may wait for another
                barrier.wait()
                return con.execute(text("SELECT 1")).scalar()

        with ThreadPoolExecutor(100) as pool:
            assert list(pool.map(hold, range(100))) == [1] * 100
    finally:
        db.close()


def test_list_nodes_carries_the_latest_audit_head(db: Database) -> None:
    """The operator sees each node's newest chain head and when it arrived; a head
    reported again (every heartbeat) keeps its first arrival, so its age is how long the
    chain has not moved."""
    enrol(db, "alpha", "beta")
    registry.record_audit_head(db, "alpha", 3, "c" * 64, 1_000)
    registry.record_audit_head(db, "alpha", 7, "d" * 64, 2_000)
    registry.record_audit_head(db, "alpha", 5, "e" * 64, 3_000)  # a late, older position
    registry.record_audit_head(db, "alpha", 7, "d" * 64, 4_000)  # the same head again
    heads = {n.name: n.audit_head
             for n in registry.list_nodes(db, now_ms=5_000, offline_after_ms=500)}
    assert heads == {"alpha": (7, "d" * 64, 2_000), "beta": None}


def test_a_heartbeat_that_finds_the_database_locked_is_skipped_not_raised(
        tmp_path, monkeypatch) -> None:
    """Another writer holding SQLite's lock past the busy timeout makes a heartbeat's
    writes fail; the beat is reported lost (False) and nothing raises, because raising
    ends the node's task stream (a 100-node benchmark lost 34 nodes that way). Once the
    lock is gone the next beat records both facts."""
    import sqlite3

    from coordinator import db as dbmod

    monkeypatch.setattr(dbmod, "BUSY_TIMEOUT_MS", 50)
    path = tmp_path / "coordinator.db"
    db = Database(f"sqlite:///{path}")
    try:
        enrol(db, "alpha")
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another writer holds the write lock
        try:
            assert registry.beat(db, "alpha", 9_000, 4, "f" * 64) is False
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert registry.beat(db, "alpha", 9_500, 4, "f" * 64) is True
        node = {n.name: n for n in registry.list_nodes(db, now_ms=9_600,
                                                       offline_after_ms=1_000)}["alpha"]
        assert node.last_seen_ms == 9_500 and node.audit_head == (4, "f" * 64, 9_500)
    finally:
        db.close()


def test_a_results_audit_head_that_finds_the_database_locked_is_skipped_not_raised(
        tmp_path, monkeypatch) -> None:
    """The head a task result carries is written before the result is handed to the job;
    a locked database there used to raise out of the stream's reader and end the stream,
    so the job lost the node's answer. It is now reported lost (False), and recorded once
    the lock is gone."""
    import sqlite3

    from coordinator import db as dbmod

    monkeypatch.setattr(dbmod, "BUSY_TIMEOUT_MS", 50)
    path = tmp_path / "coordinator.db"
    db = Database(f"sqlite:///{path}")
    try:
        enrol(db, "alpha")
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            assert registry.result_head(db, "alpha", 3, "e" * 64, 8_000) is False
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert registry.audit_heads(db, "alpha") == []
        assert registry.result_head(db, "alpha", 3, "e" * 64, 8_100) is True
        assert [(h.seq, h.hash) for h in registry.audit_heads(db, "alpha")] == [(3, "e" * 64)]
    finally:
        db.close()


def test_heartbeats_from_many_streams_at_once_take_turns_and_are_all_recorded(
        tmp_path, monkeypatch) -> None:
    """Many nodes' reader threads beating at the same moment: with SQLite left to sort
    them out, writers wait on its lock and, past the busy timeout, beats are lost; taking
    turns in the coordinator, every one is recorded, even with a 1 ms busy timeout."""
    from concurrent.futures import ThreadPoolExecutor

    from coordinator import db as dbmod

    monkeypatch.setattr(dbmod, "BUSY_TIMEOUT_MS", 1)
    db = Database(f"sqlite:///{tmp_path / 'coordinator.db'}")
    names = [f"n{i:02d}" for i in range(48)]
    try:
        for name in names:
            enrol(db, name)
        with ThreadPoolExecutor(len(names)) as pool:
            recorded = list(pool.map(
                lambda i: registry.beat(db, names[i], 10_000 + i, 1, f"{i:064x}"),
                range(len(names))))
        assert recorded == [True] * len(names)
        nodes = registry.list_nodes(db, now_ms=10_100, offline_after_ms=1_000)
        assert [(n.last_seen_ms, n.audit_head[0]) for n in nodes] == [
            (10_000 + i, 1) for i in range(len(names))]
    finally:
        db.close()
