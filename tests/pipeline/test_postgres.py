"""The coordinator on PostgreSQL: every table keeps what it is given (and cascades as the
schema says), and a real stats job (the coordinator's driver against real node runners)
runs end to end with all the coordinator's state there, giving the pooled pandas answer."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from inmemory_cases import ISLANDS, build, stats_job
from sqlalchemy.exc import IntegrityError

from coordinator.db import (
    AuditHead,
    Base,
    CoordinatorAuditEntry,
    Database,
    Job,
    JobProgress,
    JobTask,
    Node,
    Record,
    RecordTerm,
    Study,
    StudyKeyShare,
    StudyMember,
    StudyResearcher,
)
from scifed.states import JobStatus, TaskState

MS = 1_764_000_000_000
"""A millisecond timestamp of today: beyond a 32-bit integer, as every *_ms column holds."""


def every_table() -> list[Base]:
    """One object of every model, parents first, each column given a value that a
    careless type would lose: timestamps past 2³¹, bytes with NUL and 0xFF, nested JSON
    with Chinese text, booleans, NULLs where allowed."""
    blob = bytes(range(256))
    return [
        Node(name="alpha", platform="浙江大学 生态平台", software_version="0.1.0",
             cert_fingerprint="sha256:" + "ab" * 32, connected=True, last_seen_ms=MS,
             seal_claim={"cert_pem": "-----BEGIN-----", "keys": [1, 2.5, None, True]}),
        Record(record_id="alpha/penguins", node_name="alpha",
               record_json={"title": {"zh": "帕尔默企鹅", "en": "Palmer penguins"},
                            "fields": [{"name": "island", "enum": ["Biscoe", "Dream"]}]},
               title="Palmer penguins", grade="G2", category="CONDITIONAL",
               platform="浙江大学 生态平台", stub=False, record_count=2**40,
               quality_grade="B", updated_ms=MS + 1, search_text="palmer penguins 帕尔默企鹅"),
        RecordTerm(record_id="alpha/penguins", kind="keyword", value_norm="企鹅"),
        Study(study_id="s-1", name="penguins", purpose="体重 by island", min_nodes=3,
              status="active", created_by="operator", created_ms=MS + 2, key_version=2**33,
              lead_node="alpha", public_context=blob),
        StudyMember(study_id="s-1", node_name="alpha", state="accepted",
                    datasets=["penguins", "企鹅"], answered_ms=MS + 3),
        StudyResearcher(study_id="s-1", researcher="alice"),
        StudyKeyShare(study_id="s-1", version=2**33, node_name="alpha",
                      sealed_secret=blob[::-1]),
        Job(job_id="j-1", study_id="s-1", researcher="alice", job_type="stats",
            spec={"stats": {"quantiles": {"body_mass_g": [0.0, 0.5, 1.0]}}},
            seal_claim={"name": "alice", "nested": {"deep": ["x"]}}, status="running",
            phase="round 2", phase_round=2, phase_rounds=7, error="", contributors=["alpha"],
            created_ms=MS + 4, updated_ms=MS + 5, sealed_result=blob * 64, restarts=2,
            run_study={"key_version": 3, "members": ["alpha", "beta"]}),
        JobTask(job_id="j-1", node_name="alpha", phase="compute", state="refused",
                detail="", sealed_reason=b"\x00\xff", updated_ms=MS + 6),
        JobProgress(job_id="j-1", round=3, sealed=blob, created_ms=MS + 7),
        AuditHead(node_name="alpha", seq=2**35, hash="cd" * 32, received_ms=MS + 8),
        CoordinatorAuditEntry(seq=1, ts_ms=MS + 9, actor="operator", action="study.create",
                              subject="s-1", details='{"name":"penguins","目的":"体重"}',
                              prev_hash="0" * 64, hash="e" * 64),
    ]


def store(database: Database, objects: list[Base]) -> None:
    """Insert in the order given (the models declare no relationships to order by)."""
    with database.session() as session:
        for obj in objects:
            session.add(obj)
            session.flush()


def columns(obj: Base) -> dict[str, Any]:
    return {c.key: getattr(obj, c.key) for c in sa.inspect(type(obj)).columns}


@pytest.fixture
def pg(postgres_url: str) -> Iterator[Database]:
    database = Database(postgres_url)
    yield database
    database.close()


def test_every_coordinator_table_round_trips_on_postgresql(pg: Database) -> None:
    assert pg.dialect == "postgresql"
    written = every_table()
    assert {type(o).__tablename__ for o in written} == set(Base.metadata.tables)
    expected = [(type(o), columns(o)) for o in written]
    store(pg, written)
    with pg.session() as session:
        for model, values in expected:
            [got] = session.scalars(sa.select(model)).all()
            assert columns(got) == values, model.__tablename__


def test_postgresql_cascades_and_refuses_as_the_schema_says(pg: Database) -> None:
    store(pg, every_table())
    # a study with jobs cannot go; a job takes its tasks and progress with it
    with pytest.raises(IntegrityError), pg.session() as session:
        session.execute(sa.delete(Study))
    with pg.session() as session:
        session.execute(sa.delete(Job))
    with pg.session() as session:
        assert session.scalars(sa.select(JobTask)).all() == []
        assert session.scalars(sa.select(JobProgress)).all() == []
        session.execute(sa.delete(Study))
    with pg.session() as session:
        for model in (StudyMember, StudyResearcher, StudyKeyShare):
            assert session.scalars(sa.select(model)).all() == [], model.__tablename__
        # a node takes its catalog records and their terms with it
        session.execute(sa.delete(Node))
    with pg.session() as session:
        assert session.scalars(sa.select(Record)).all() == []
        assert session.scalars(sa.select(RecordTerm)).all() == []


def test_a_stats_job_runs_end_to_end_with_the_coordinator_on_postgresql(
    tmp_path, penguins, penguins_meta, postgres_url: str
) -> None:
    fed = build(tmp_path, penguins, penguins_meta, database=postgres_url)
    try:
        assert fed.coordinator.db.dialect == "postgresql"
        probs = [0.0, 0.25, 0.5, 0.9, 1.0]
        view, res = fed.run(stats_job(columns=["body_mass_g"],
                                      quantiles={"body_mass_g": probs},
                                      group_counts=["species"]))
        # the pooled answer, as pandas gives it on the whole table
        x = penguins.body_mass_g
        summary = res["columns"]["body_mass_g"]
        assert summary["count"] == x.count()
        assert summary["mean"] == pytest.approx(x.mean(), rel=1e-9)
        assert summary["variance"] == pytest.approx(x.var(ddof=1), rel=1e-9)
        for p in probs:
            assert res["quantiles"]["body_mass_g"][str(p)] == pytest.approx(
                x.quantile(p), rel=1e-9)
        assert dict(zip(res["groups"]["species"]["values"], res["groups"]["species"]["counts"],
                        strict=True)) == penguins.species.value_counts().to_dict()
        assert sorted(view.contributors) == sorted(ISLANDS)
    finally:
        fed.__exit__(None, None, None)
    # Everything the coordinator kept is in PostgreSQL (no SQLite file beside it), and a
    # coordinator opening the database again reads it.
    assert not (tmp_path / "coordinator" / "coordinator.db").exists()
    again = Database(postgres_url)
    try:
        with again.session() as session:
            def count(model: type[Base]) -> int:
                return session.scalar(sa.select(sa.func.count()).select_from(model))

            assert count(Node) == count(Record) == 3
            assert count(StudyMember) == 3 and count(StudyResearcher) == 1
            assert count(StudyKeyShare) >= 3
            [job] = session.scalars(sa.select(Job)).all()
            assert (job.job_id, job.status) == (view.job_id, JobStatus.DONE)
            assert job.sealed_result and job.spec["stats"]["group_counts"] == ["species"]
            states = session.scalars(sa.select(JobTask.state)).all()
            assert states and set(states) == {TaskState.DONE}
            assert count(AuditHead) > 0
            assert {"job.submit", "study.create"} <= set(
                session.scalars(sa.select(CoordinatorAuditEntry.action)))
    finally:
        again.close()
