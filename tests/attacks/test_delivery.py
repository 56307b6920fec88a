"""Attacks on delivery (node/delivery/): a researcher or a deviating coordinator tries to
get data the dataset's cell, the officer or the grant does not give. Real node and
coordinator cores, real PKI and sealing, the in-memory link."""

from __future__ import annotations

import hashlib
import io

import pandas as pd
import pytest
import yaml
from staff import REPO, staff_meta, staff_table

from coordinator import access_client as ac
from harness.approvers import officer_approves
from harness.inmemory import InMemoryFederation, researcher_client
from node.audit import AuditLog
from protos.scifed.v1 import coordinator_pb2 as pb
from scifed.delivery import (
    CHUNK_BYTES,
    AccessRequest,
    SealedReply,
    request_statement,
    sign_request,
)
from scifed.errors import UserError
from scifed.sealing import make_claim
from scifed.wire import b64e

NODE = "alpha"
ACCEPT = ["no_reidentification", "license:CC0-1.0"]
GRADES = {"open": ("G1", "OPEN"), "cond": ("G2", "CONDITIONAL"),
          "g3": ("G3", "CONDITIONAL"), "g5": ("G5", "CONDITIONAL"),
          "closed": ("G1", "CLOSED"), "closed2": ("G2", "CLOSED"),
          "g5closed": ("G5", "CLOSED"), "g6": ("G6", "CLOSED")}


def meta(grade: str, category: str) -> dict:
    m = staff_meta(grade, category)
    if grade in ("G3", "G5", "G6"):
        example = yaml.safe_load((REPO / "configs" / "datasets" /
                                  "contraception.yaml").read_text())
        m["grade_assessment"] = example["grade_assessment"]
        m["approvals"] = example["approvals"]
    return m


def big_staff(rows: int = 40_000) -> pd.DataFrame:
    """Enough rows for a download of several chunks."""
    base = staff_table().drop(columns="node")
    out = pd.concat([base] * (rows // len(base) + 1), ignore_index=True).iloc[:rows].copy()
    out["person_id"] = range(1, len(out) + 1)
    return out


@pytest.fixture(scope="module")
def fed(tmp_path_factory):
    fed = InMemoryFederation(tmp_path_factory.mktemp("delivery"), [NODE]).__enter__()
    table = staff_table().drop(columns="node")
    for name, (grade, category) in GRADES.items():
        frame = big_staff() if name == "open" else table
        fed.add_dataset(NODE, frame, meta(grade, category), name)
    fed.create_study("access", {NODE: "cond"})
    fed.table = table
    yield fed
    fed.__exit__(None, None, None)


def record_id(name: str) -> str:
    return f"urn:sdn:{NODE}:ds:{name}"


def core(fed):
    return fed.nodes[NODE]


def audited(fed, action: str) -> list[dict]:
    return [e.details for e in AuditLog(core(fed).store).entries() if e.action == action]


def ask(client, name: str, method: str = "download", **kw):
    kw.setdefault("accept", ACCEPT)
    kw.setdefault("purpose", "methods paper")
    return ac.request_access(client, record_id(name), method=method, **kw)


@pytest.mark.parametrize("name", ["g3", "g5", "closed"])
def test_download_of_a_cell_that_forbids_it_is_refused_and_audited(fed, name):
    client = researcher_client(fed)
    before = len(core(fed).delivery.grants.list())
    with pytest.raises(UserError, match="refuses download") as exc:
        ask(client, name, study="access")
    assert {"g3": "forbidden for G3", "g5": "never delivered",
            "closed": "not delivered over the network"}[name] in str(exc.value)
    assert len(core(fed).delivery.grants.list()) == before  # nothing half-written
    assert any(d["what"] == f"download of {record_id(name)}"
               for d in audited(fed, "access.refused"))


def test_g5_in_node_service_is_refused_too(fed):
    with pytest.raises(UserError, match="never delivered"):
        ask(researcher_client(fed), "g5", method="in_node_service", study="access")


def test_a_request_must_accept_the_conditions_and_be_signed_as_sent(fed):
    client = researcher_client(fed)
    with pytest.raises(UserError, match="no_reidentification"):
        ask(client, "open", accept=["license:CC0-1.0"])
    # whoever relays the signed request widens its columns: the node refuses it
    statement = request_statement(researcher="alice", record_id=record_id("open"),
                                  dataset=record_id("open"), method="download",
                                  columns=["age"], fmt="parquet", purpose="x",
                                  conditions_accepted=ACCEPT, study="", nonce="n")
    d = client.identity.path
    claim = make_claim(d, name="alice", role="researcher", cert_path=d / "alice.crt",
                       key_path=d / "researcher.key").to_dict()
    forged = AccessRequest(statement={**statement, "columns": ["age", "salary"]},
                           signature=sign_request(statement, d, "alice"), claim=claim)
    with pytest.raises(UserError, match="changed after signing"):
        fed.coordinator.access._ask(NODE, "access.request", forged.dumps())
    # replayed as signed, it is the same request: the same grant, not a second one
    honest = AccessRequest(statement=statement, signature=sign_request(statement, d, "alice"),
                           claim=claim).dumps()
    first = fed.coordinator.access._ask(NODE, "access.request", honest)
    assert fed.coordinator.access._ask(NODE, "access.request", honest) == first
    # nor may a researcher send a request signed in another's name
    with pytest.raises(UserError, match="not for the caller"):
        fed.coordinator.access.request("mallory", record_id("open"), forged.dumps())


def test_column_not_granted_is_not_delivered(fed):
    """A download grant of (age, department) delivers exactly those columns, whatever
    a later call names; a service grant's view holds only its columns."""
    client = researcher_client(fed)
    grant = ask(client, "open", columns=["age", "department"])
    assert grant.state == "granted"
    out = fed.root / "cols.parquet"
    ac.download(client, grant, out)
    got = pd.read_parquet(out)
    assert list(got.columns) == ["age", "department"]
    # a query naming salary under a service grant of (age, department) fails at the view
    svc = ask(client, "open", method="in_node_service", columns=["age", "department"])
    with pytest.raises(UserError, match="salary"):
        ac.query(client, svc, "SELECT salary FROM data")
    # the download grant is not a service grant, nor the other way round (changed method)
    with pytest.raises(UserError, match="is for download"):
        fed.coordinator.access.relay("access.query", "alice", record_id("open"),
                                     ac.signed_ref(client, grant, "query",
                                                   sql="SELECT * FROM data").dumps())


def test_another_researchers_grant_delivers_nothing(fed):
    alice = researcher_client(fed)
    grant = ask(alice, "open", columns=["age"])
    mallory = researcher_client(fed, "mallory")
    stolen = grant.model_copy(update={"researcher": "mallory"})
    with pytest.raises(UserError, match="another researcher's"):
        ac.manifest(mallory, stolen)
    assert any(d["reason"] == "the grant is another researcher's"
               for d in audited(fed, "access.refused"))


def test_expired_grant_is_refused(fed):
    client = researcher_client(fed)
    grant = ask(client, "cond", study="access", columns=["age"])
    assert grant.state == "pending"
    approvals = core(fed).approvals
    appr = next(a for a in approvals.list("pending") if a.job_id == grant.grant_id)
    officer_approves(approvals, appr.approval_id, expires_ms=None)
    ac.manifest(client, grant)  # approved: delivers
    # the approval runs out: the same grant delivers nothing more
    with core(fed).store.tx() as con:
        con.execute("UPDATE approvals SET expires_ms=1 WHERE approval_id=?",
                    (appr.approval_id,))
    with pytest.raises(UserError, match="expired"):
        ac.download(client, grant, fed.root / "late.parquet")


def _tamper_chunk(method, reply):
    if method != "AccessChunk":
        return reply
    sealed = bytearray(SealedReply.loads(reply.payload).sealed)
    sealed[60] ^= 0x01
    return pb.AccessAnswer(payload=SealedReply(sealed=bytes(sealed)).dumps())


def test_a_chunk_changed_by_the_coordinator_is_detected(fed):
    client = researcher_client(fed, tamper=_tamper_chunk)
    grant = ask(client, "open")
    out = fed.root / "tampered.csv"
    with pytest.raises(UserError, match="altered on the way"):
        ac.download(client, grant, out)
    assert not out.exists()


def test_a_chunk_swapped_for_another_is_detected(fed):
    """The coordinator answers chunk 1 with chunk 0 (valid, sealed to the researcher)."""
    client = researcher_client(fed)
    grant = ask(client, "open")
    first = {}

    def swap(method, reply):
        if method == "AccessChunk":
            first.setdefault("blob", reply)
            return first["blob"]
        return reply
    client.stub.tamper = swap
    with pytest.raises(UserError, match="chunk 1 .* altered on the way"):
        ac.download(client, grant, fed.root / "swapped.csv")


def test_the_coordinator_relays_only_ciphertext(fed):
    """Everything the coordinator relays for a download is sealed: no row, no column
    name, no value of the file appears in it."""
    seen: list[bytes] = []

    def record(method, reply):
        seen.append(reply.payload)
        return reply
    client = researcher_client(fed, tamper=record)
    grant = ask(client, "open")
    out = fed.root / "whole.csv"
    ac.download(client, grant, out)
    plain = out.read_bytes()
    relayed = [SealedReply.loads(p).sealed for p in seen if b'"sealed"' in p]
    assert len(relayed) >= 2  # the manifest and the chunks
    for blob in relayed:
        for probe in (b"person_id", b"department", plain[200:240]):
            assert probe not in blob
        assert b64e(plain[200:240]) not in b64e(blob)
    assert hashlib.sha256(plain).hexdigest() == hashlib.sha256(
        (core(fed).cfg.data_dir / "open.csv").read_bytes()).hexdigest()


def test_service_query_cannot_read_rows_of_a_cell_without_automatic_download(fed):
    """G2 CONDITIONAL: download needs the officer, so the service (automatic there)
    answers aggregates of at least k = 5 rows only."""
    client = researcher_client(fed)
    grant = ask(client, "cond", method="in_node_service", study="access")
    assert grant.state == "granted"
    attacks = [
        "SELECT * FROM data",
        "SELECT person_id, salary FROM data",
        "SELECT salary FROM data LIMIT 1",
        "SELECT department, min(salary) FROM data GROUP BY department",
        "SELECT department, max(salary) FROM data GROUP BY department",
        "SELECT department, list(salary) FROM data GROUP BY department",
        "SELECT department, avg(salary) FROM data WHERE person_id = 100001 "
        "GROUP BY department",
        "SELECT department, avg(salary) FROM (SELECT * FROM data) GROUP BY department",
        "SELECT department, avg(salary) FROM data GROUP BY department UNION "
        "SELECT zip_code, salary FROM data",
        "SELECT department, sum(salary + 0) FROM data GROUP BY department",
        "WITH t AS (SELECT * FROM data) SELECT count(*) FROM t",
        "SELECT count(*) FROM data; SELECT * FROM data",
        "SELECT * FROM read_csv('/etc/passwd')",
        "COPY data TO '/tmp/x.csv'",
    ]
    for sql in attacks:
        with pytest.raises(UserError, match="in-node service"):
            ac.query(client, grant, sql)
    # a group of one row (person_id) is withheld: no person's salary comes out
    frame, said = ac.query(client, grant,
                           "SELECT person_id, avg(salary) AS s FROM data GROUP BY person_id")
    assert frame.empty and said["withheld"] == len(fed.table)
    # an honest aggregate is answered, equal to pandas on the same rows
    frame, said = ac.query(client, grant, "SELECT department, count(*) AS n, "
                           "avg(salary) AS mean FROM data GROUP BY department")
    truth = fed.table.groupby("department").salary.agg(["count", "mean"])
    got = frame.set_index("department").sort_index()
    assert got.n.tolist() == truth["count"].tolist()
    assert got["mean"].round(6).tolist() == truth["mean"].round(6).tolist()
    assert len(audited(fed, "access.refused")) >= len(attacks)


def test_a_service_query_reaches_nothing_but_the_granted_columns(fed):
    """On open data an answer may hold rows, but only of table `data` (the granted
    columns): no file, no other table, no setting can be reached or changed."""
    client = researcher_client(fed)
    grant = ask(client, "open", method="in_node_service", columns=["age", "department"])
    for sql in ["SELECT * FROM read_csv('/etc/passwd')",
                f"SELECT * FROM read_csv('{core(fed).cfg.data_dir / 'open.csv'}')",
                f"SELECT * FROM '{core(fed).cfg.state_dir / 'node.db'}'",
                "SELECT * FROM glob('/*')",
                "SET enable_external_access = true",
                "ATTACH 'x.db'",
                "SELECT salary FROM data"]:
        with pytest.raises(UserError, match="in-node service"):
            ac.query(client, grant, sql)
    frame, said = ac.query(client, grant, "SELECT age, department FROM data "
                           "WHERE age > 60 ORDER BY age")
    truth = pd.read_csv(core(fed).cfg.data_dir / "open.csv").query("age > 60")
    assert said["mode"] == "rows" and len(frame) == len(truth)
    assert sorted(frame.age) == sorted(truth.age)


def test_a_revoked_grant_delivers_nothing(fed):
    client = researcher_client(fed)
    grant = ask(client, "open", columns=["age"])
    core(fed).delivery.revoke(grant.grant_id, "study ended", "officer")
    with pytest.raises(UserError, match="revoked"):
        ac.download(client, grant, fed.root / "revoked.parquet")


def test_the_extract_is_what_duckdb_gives_for_the_columns(fed):
    client = researcher_client(fed)
    grant = ask(client, "open", columns=["salary", "age"], fmt="csv")
    out = fed.root / "sub.csv"
    digest = ac.download(client, grant, out)
    assert digest == hashlib.sha256(out.read_bytes()).hexdigest()
    truth = pd.read_csv(core(fed).cfg.data_dir / "open.csv")[["salary", "age"]]
    pd.testing.assert_frame_equal(pd.read_csv(io.BytesIO(out.read_bytes())), truth)
    assert out.stat().st_size > CHUNK_BYTES // 4


def _offline(fed, dataset: str, signer, *, as_name: str | None = None, **changed):
    from harness.approvers import staff as people
    from node.delivery import OFFLINE_DOMAIN, offline_statement
    from scifed.approver_keys import sign
    from scifed.chain import canonical

    desk = core(fed).delivery
    person = people(core(fed).approvals)[signer]
    row = core(fed).registry.get(dataset)
    fields = {"dataset_id": row.dataset_id, "recipient": "alice", "what": "all rows",
              "sha256": "ab" * 32, "medium": "encrypted disk"}
    statement = offline_statement(node=NODE, approver=person.name, key=person.fingerprint,
                                  **fields)
    signature = sign(person.key, statement, OFFLINE_DOMAIN)
    return desk.record_offline(dataset=dataset, by=as_name or person.name,
                               statement=canonical(statement), signature=signature,
                               **{**{k: v for k, v in fields.items() if k != "dataset_id"},
                                  **changed})


def test_offline_transfer_records_only_what_the_officer_signed_where_the_cell_allows(fed):
    recorded = _offline(fed, "closed", "officer")
    assert recorded["by"] == "officer"
    assert any(d["delivery_id"] == recorded["delivery_id"]
               for d in audited(fed, "access.offline"))
    with pytest.raises(UserError, match="never delivered"):
        _offline(fed, "g5", "officer")
    # a changed recipient, or another approver's name on the officer's signature
    with pytest.raises(UserError, match="nothing was recorded"):
        _offline(fed, "closed", "officer", recipient="mallory")
    with pytest.raises(UserError, match="recorded by the data officer"):
        _offline(fed, "closed", "officer", as_name="security")


def _signed_request(client, name: str, method: str) -> bytes:
    statement = request_statement(researcher="alice", record_id=record_id(name),
                                  dataset=record_id(name), method=method, columns=[],
                                  fmt="parquet", purpose="x", conditions_accepted=ACCEPT,
                                  study="", nonce=f"{name}-{method}")
    d = client.identity.path
    claim = make_claim(d, name="alice", role="researcher", cert_path=d / "alice.crt",
                       key_path=d / "researcher.key").to_dict()
    return AccessRequest(statement=statement, signature=sign_request(statement, d, "alice"),
                         claim=claim).dumps()


@pytest.mark.parametrize("name", ["closed", "closed2", "g5", "g5closed", "g6"])
def test_closed_g5_and_g6_data_is_never_delivered_over_the_network(fed, name):
    """Whatever the record declares (G1/G2 CLOSED and G5 CONDITIONAL declare the
    in-node service), no request of these cells makes a grant: refused, audited. G6 is
    not even in the catalog; sent to the node by a coordinator, it is refused there."""
    client = researcher_client(fed)
    before = len(core(fed).delivery.grants.list())
    for method in ("download", "in_node_service"):
        with pytest.raises(UserError, match=f"refuses {method}") as exc:
            if name != "g6":
                ask(client, name, method=method, study="")
            else:
                with pytest.raises(UserError, match="no catalog record"):
                    ask(client, name, method=method, study="")
                fed.coordinator.access._ask(NODE, "access.request",
                                            _signed_request(client, name, method))
        assert ("not delivered over the network" if name.startswith("closed")
                else "never delivered") in str(exc.value)
        assert any(d["what"] == f"{method} of {record_id(name)}"
                   for d in audited(fed, "access.refused"))
    assert len(core(fed).delivery.grants.list()) == before


@pytest.mark.parametrize("name", ["closed", "closed2", "g5", "g5closed", "g6"])
def test_only_g1_and_g2_closed_data_is_recorded_as_an_offline_transfer(fed, name):
    offline = [d for d in core(fed).delivery.deliveries() if d["kind"] == "offline"]
    if name in ("closed", "closed2"):
        recorded = _offline(fed, name, "officer")
        assert recorded["dataset_id"] == record_id(name)
    else:
        with pytest.raises(UserError, match="never delivered, offline included"):
            _offline(fed, name, "officer")
        after = [d for d in core(fed).delivery.deliveries() if d["kind"] == "offline"]
        assert after == offline  # nothing recorded


def test_a_denied_request_delivers_nothing(fed):
    client = researcher_client(fed)
    grant = ask(client, "cond", study="access")
    approvals = core(fed).approvals
    appr = next(a for a in approvals.list("pending") if a.job_id == grant.grant_id)
    from harness.approvers import decide
    from harness.approvers import staff as people
    decide(approvals, people(approvals)["officer"], appr.approval_id, approve=False,
           reason="purpose too broad")
    (listed,) = [g for g in ac.list_access(client)[0] if g.grant_id == grant.grant_id]
    assert listed.state == "denied" and listed.conditions == "purpose too broad"
    with pytest.raises(UserError, match="the grant is denied"):
        ac.manifest(client, grant)


def test_a_revoked_researcher_gets_nothing_even_from_a_coordinator_that_relays(fed):
    """The CA revokes carol; a deviating coordinator still relays her calls (in memory
    the servicer is called without the interceptor that refuses her). The node, shown
    the new CRL, refuses both her grant's download and a new request."""
    from scifed.pki import revoke

    carol = researcher_client(fed, "carol")
    grant = ask(carol, "open", columns=["age"])
    revoke(fed.ca_dir, name="carol", role="researcher")
    fed.coordinator.crl_changed((fed.ca_dir / "crl.pem").read_bytes())
    with pytest.raises(UserError, match="revoked"):
        ac.download(carol, grant, fed.root / "carol.parquet")
    with pytest.raises(UserError, match="revoked"):
        ask(carol, "open", columns=["age"])
