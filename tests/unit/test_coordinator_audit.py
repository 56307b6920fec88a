"""The coordinator's own audit chain (coordinator/audit.py), on SQLite and PostgreSQL:
appends chain in turn under concurrency; edits, deletions, reorderings and a wiped
table are caught, and so is a study or job whose entry was cut from the tail."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, text, update
from typer.testing import CliRunner

from cli.main import app
from coordinator import audit, registry, studies
from coordinator.db import CoordinatorAuditEntry, Database, Job, Study
from scifed.config import CoordinatorConfig, TlsConfig, write_config
from scifed.states import JobStatus
from scifed.wire import now_ms


@pytest.fixture
def chain(db: Database) -> Database:
    for i in range(6):
        audit.append(db, "operator", "note", f"s{i}", {"i": i})
    return db


def sql(db: Database, statement: str, **params: Any) -> None:
    with db.session() as s:
        s.execute(text(statement), params)


def test_an_intact_chain_verifies(chain):
    v = audit.verify(chain)
    assert v.ok and v.entries == 6 and (v.head_seq, v.head_hash) == audit.head(chain)
    assert [e.subject for e in audit.entries(chain, since=4)] == ["s4", "s5"]


@pytest.mark.parametrize("statement,needle", [
    ("UPDATE coordinator_audit SET details = :forged WHERE seq = 3", "entry 3 was altered"),
    ("UPDATE coordinator_audit SET actor = 'mallory' WHERE seq = 5", "entry 5 was altered"),
    ("DELETE FROM coordinator_audit WHERE seq = 2", "entry 2 is missing"),
    ("DELETE FROM coordinator_audit WHERE seq = 1", "entry 1 is missing"),
    ("UPDATE coordinator_audit SET prev_hash = hash WHERE seq = 4",
     "entry 4 does not follow entry 3"),
])
def test_editing_or_deleting_an_entry_is_detected(chain, statement, needle):
    sql(chain, statement, **({"forged": '{"i":99}'} if ":forged" in statement else {}))
    v = audit.verify(chain)
    assert not v.ok and needle in v.problem, v.problem


def test_reordering_is_detected(chain):
    rows = {e.seq: e for e in audit.entries(chain)}
    with chain.session() as s:  # entries 3 and 4 swap places, each keeping its hashes
        for seq, other in ((3, rows[4]), (4, rows[3])):
            s.execute(update(CoordinatorAuditEntry).where(CoordinatorAuditEntry.seq == seq)
                      .values(ts_ms=other.ts_ms, actor=other.actor, action=other.action,
                              subject=other.subject, details=audit.canonical(other.details),
                              prev_hash=other.prev_hash, hash=other.hash))
    v = audit.verify(chain)
    assert not v.ok and "entry 3" in v.problem


def test_concurrent_appends_chain_in_turn(db):
    def go(worker: int) -> None:
        for i in range(10):
            audit.append(db, f"w{worker}", "note", f"{worker}-{i}")

    with ThreadPoolExecutor(6) as pool:
        list(pool.map(go, range(6)))
    v = audit.verify(db)
    assert v.ok and v.entries == 60, v.problem


def test_an_append_rolls_back_with_its_act(db):
    with pytest.raises(RuntimeError), db.session() as s:
        audit.append_in(s, "operator", "note", "never")
        raise RuntimeError("the act failed")
    assert audit.entries(db) == [] and audit.verify(db).ok


# -- the chain against the tables it describes ---------------------------------------------
@pytest.fixture
def study(db: Database) -> str:
    for name in ("alpha", "beta"):
        registry.upsert_node(db, name=name, platform=name, software_version="t",
                             cert_fingerprint="f")
    return studies.create_study(db, name="s1", purpose="p", nodes=["alpha", "beta"],
                                min_nodes=2, created_by="operator").study_id


def add_job(db: Database, study_id: str, *, status: JobStatus, sealed: bytes = b"") -> str:
    """A job row with the entries the driver writes beside it (coordinator/driver.py)."""
    job_id = f"job-{uuid.uuid4().hex[:12]}"
    with db.session() as s:
        s.add(Job(job_id=job_id, study_id=study_id, researcher="alice", job_type="stats",
                  spec={}, seal_claim={}, status=JobStatus.SUBMITTED, created_ms=now_ms(),
                  updated_ms=now_ms()))
        audit.append_in(s, "alice", "job.submit", job_id, {"study_id": study_id})
    with db.session() as s:
        job = s.get(Job, job_id)
        job.status, job.sealed_result = status, sealed or None
        details = {"status": str(status)}
        if status == JobStatus.DONE:
            details["result_sha256"] = audit.sha256_hex(sealed)
        audit.append_in(s, "coordinator", "job.end", job_id, details)
    return job_id


def test_a_study_creation_is_chained(db, study):
    (entry,) = audit.entries(db)
    assert (entry.actor, entry.action, entry.subject) == ("operator", "study.create", study)
    assert entry.details["nodes"] == ["alpha", "beta"] and audit.verify(db).ok


def test_a_study_whose_entry_was_cut_from_the_tail_is_caught(db):
    for name in ("alpha", "beta"):
        registry.upsert_node(db, name=name, platform=name, software_version="t",
                             cert_fingerprint="f")
    audit.append(db, "operator", "note", "earlier")
    study = studies.create_study(db, name="s1", purpose="p", nodes=["alpha", "beta"],
                                 min_nodes=2, created_by="operator").study_id
    sql(db, "DELETE FROM coordinator_audit WHERE seq = 2")  # what is left is consistent
    v = audit.verify(db)
    assert not v.ok and f"study s1 ({study}) has no study.create entry" in v.problem


def test_a_wiped_table_is_caught_when_studies_exist(db, study):
    sql(db, "DELETE FROM coordinator_audit")
    v = audit.verify(db)
    assert not v.ok and v.problem.startswith("the chain has 0 entries but the database "
                                             "holds 1 studies"), v.problem


def test_a_key_version_must_match_its_activation_entry(db, study):
    with db.session() as s:
        st = s.get(Study, study)
        st.key_version, st.public_context = 1, b"context"
        audit.append_in(s, "coordinator", "study.key.activate", study,
                        {"version": 1, "public_context_sha256": audit.sha256_hex(b"context")})
    assert audit.verify(db).ok
    sql(db, "UPDATE studies SET public_context = :c", c=b"planted")
    v = audit.verify(db)
    assert not v.ok and "public context differs" in v.problem
    sql(db, "UPDATE studies SET key_version = 2")
    v = audit.verify(db)
    assert not v.ok and "key version 2 has no study.key.activate entry" in v.problem


def test_a_job_end_cut_from_the_tail_or_a_swapped_result_is_caught(db, study):
    done = add_job(db, study, status=JobStatus.DONE, sealed=b"sealed result")
    add_job(db, study, status=JobStatus.FAILED)
    assert audit.verify(db).ok
    sql(db, "UPDATE jobs SET sealed_result = :r WHERE job_id = :j", r=b"other", j=done)
    v = audit.verify(db)
    assert not v.ok and f"job {done}: the sealed result differs" in v.problem
    sql(db, "UPDATE jobs SET sealed_result = :r WHERE job_id = :j", r=b"sealed result", j=done)
    last = audit.head(db)[0]
    with db.session() as s:
        s.execute(delete(CoordinatorAuditEntry).where(CoordinatorAuditEntry.seq == last))
    v = audit.verify(db)
    assert not v.ok and "ended failed but has no job.end entry" in v.problem, v.problem


def test_rows_older_than_the_chain_are_not_checked(db):
    """A database from before the chain: its studies predate the first entry."""
    for name in ("alpha", "beta"):
        registry.upsert_node(db, name=name, platform=name, software_version="t",
                             cert_fingerprint="f")
    studies.create_study(db, name="old", purpose="p", nodes=["alpha"], min_nodes=1,
                         created_by="operator")
    sql(db, "UPDATE studies SET created_ms = 1")
    sql(db, "DELETE FROM coordinator_audit")
    audit.append(db, "operator", "note", "the first act of the new version")
    assert audit.verify(db).ok


def test_cli_prints_intact_or_tampered(tmp_path: Path):
    state = tmp_path / "state"
    cfg = tmp_path / "coordinator.yaml"
    write_config(cfg, CoordinatorConfig(state_dir=state, tls=TlsConfig(
        ca=tmp_path / "ca.crt", cert=tmp_path / "c.crt", key=tmp_path / "c.key")))
    state.mkdir()
    db = Database(f"sqlite:///{state / 'coordinator.db'}")
    for i in range(3):
        audit.append(db, "operator", "note", f"s{i}")
    runner = CliRunner()
    out = runner.invoke(app, ["coordinator", "audit", "verify", "--config", str(cfg)])
    assert out.exit_code == 0 and "coordinator audit chain intact" in out.output
    assert "3 entries" in out.output
    sql(db, "UPDATE coordinator_audit SET subject = 'x' WHERE seq = 2")
    db.close()
    out = runner.invoke(app, ["coordinator", "audit", "verify", "--config", str(cfg)])
    assert out.exit_code == 1 and "tampered: entry 2 was altered" in out.output, out.output
