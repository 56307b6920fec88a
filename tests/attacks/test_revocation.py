"""Attacks by a coordinator that deviates on revocation, run through the real pipeline.

The honest coordinator watches the CA's CRL and, within a second, closes the stream of a
revoked node and refuses the calls of a revoked researcher. A deviating one does not: it
keeps the revoked node connected, sends it tasks and relays what it contributes, runs a
revoked researcher's jobs, replays an older CRL, or stops forwarding CRLs at all. Before
nodes checked revocation themselves, each of these ran the job as if nobody was revoked
(checked on that code: a DP job with a node and the researcher revoked at the CA was
done, with the revoked node among its contributors, sealed to the revoked researcher and
charged at every node). Now every node keeps the newest CRL the CA signed (the
coordinator forwards it with every task), and refuses, audited, what a revoked party
touches or what it can no longer tell.
"""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
from islands import EXACT, ISLANDS, NOISED, island_federation, job
from typer.testing import CliRunner

import cli.researcher
import jobs.base
from coordinator import studies
from coordinator.db import Job, Node
from scifed.pki import identity_from_cert_pem, load_crl_serials, refresh_crl, revoke
from scifed.sealing import load_seal_key, open_result
from scifed.states import JobStatus
from scifed.tasks import KeygenRequest, TaskKind


@pytest.fixture
def fed(tmp_path, penguins, penguins_meta):
    fed = island_federation(tmp_path, penguins, penguins_meta)
    try:
        fed.lead = studies.get_study(fed.coordinator.db, fed.study_id).lead_node
        fed.revoked_node = max(n for n in ISLANDS if n != fed.lead)
        yield fed
    finally:
        fed.__exit__(None, None, None)


# -- what the CA does, and what the deviating coordinator does ----------------------------
def ca_crl(fed) -> bytes:
    """The CA's current CRL file."""
    return (fed.ca_dir / "crl.pem").read_bytes()


def forward_crl(fed) -> None:
    """The coordinator reads the CA's CRL file and forwards it (what its watcher does
    within a second of the file changing)."""
    fed.coordinator.crl_changed(ca_crl(fed))


def keep_revoked_connected(fed) -> None:
    """Modified code: the coordinator closes no revoked node's stream."""
    fed.coordinator.sessions.close_revoked = lambda serials: []


def send_crls(fed, crls: dict[str, bytes]) -> None:
    """Modified code: the coordinator sends ``crls[node]`` to that node instead of the
    newest CRL it holds (an older one, or b"": none)."""
    sessions = fed.coordinator.sessions
    honest = sessions.crl_for
    sessions.crl_for = lambda node: crls.get(node, honest(node))


def serial_of(fed, role: str, name: str) -> int:
    if role == "node":
        return identity_from_cert_pem(fed.nodes[name].cfg.tls.cert.read_bytes()).serial
    return identity_from_cert_pem((fed.researcher_dir / f"{name}.crt").read_bytes()).serial


def held_crl(fed, node: str) -> int:
    return fed.nodes[node].studies.trust.current().number


# -- the checks -------------------------------------------------------------------------------
def wait_for(condition, timeout: float = 30, what: str = "it") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout:.0f}s for {what}")
        time.sleep(0.02)


def assert_nothing_released_or_charged(fed, job_id: str) -> None:
    with fed.coordinator.db.session() as s:
        assert s.get(Job, job_id).sealed_result is None
    for node, core in fed.nodes.items():
        assert not [e for e in core.audit.entries() if e.action == "result.seal"
                    and e.details.get("job_id") == job_id], node
        assert not core.gate.ledger.spent(), node

        def unreserved(core=core) -> bool:
            with core.store.tx() as con:
                return not con.execute("SELECT count(*) FROM budget_reservations"
                                       ).fetchone()[0]

        wait_for(unreserved, what=f"{node}'s reservations to be released")


def refusals(fed, node: str, subject: str | None = None) -> list[str]:
    return [e.details["reason"] for e in fed.nodes[node].audit.entries()
            if e.action == "trust.refuse" and subject in (None, e.subject)]


# -- (f) a revoked node kept in the job ----------------------------------------------------
def test_coordinator_keeps_a_revoked_node_in_a_job(fed):
    """The CA revokes a node; the coordinator forwards the CRL to the others but keeps the
    revoked node connected, shows it the old CRL (so it computes), and relays its
    contribution into the sum. Before: the job was done with the revoked node among its
    contributors. Now the release node refuses: the coordinator holds no unrevoked
    certificate of that contributor."""
    bad, old = fed.revoked_node, ca_crl(fed)
    serial = revoke(fed.ca_dir, name=bad, role="node")
    keep_revoked_connected(fed)
    forward_crl(fed)
    send_crls(fed, {bad: old})
    job_id = fed.submit(job(EXACT))
    view = fed.wait(job_id)
    assert view.status == JobStatus.FAILED, view
    said = (f"node {fed.lead} releases nothing for job {job_id}: the certificate of "
            f"contributor {bad} (serial {serial}) is revoked (CRL number 2, signed ")
    assert said in view.error, view.error
    assert [r for r in refusals(fed, fed.lead, job_id) if r.startswith(said)]
    # the attack ran: the revoked node computed and the coordinator pooled it
    assert [e for e in fed.nodes[bad].audit.entries() if e.action == "task.release"
            and e.details["job_id"] == job_id]
    assert sorted(fed.job(job_id).contributors) == sorted(ISLANDS)
    assert_nothing_released_or_charged(fed, job_id)


class ResearcherClient:
    """The client `scifed job result` uses, on the in-memory federation: it opens and
    verifies a result as ``Client.open_result`` does, against the CRL in its identity
    directory (``crl.pem``) if there is one."""

    def __init__(self, fed) -> None:
        self.fed = fed
        self.identity = SimpleNamespace(path=fed.researcher_dir,
                                        tls=lambda: SimpleNamespace(ca=fed.ca_dir / "ca.crt"))

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass

    def open_result(self, job_id: str, *, allow_unsigned: bool = False, spec=None):
        fed, crl = self.fed, self.identity.path / "crl.pem"
        revoked = load_crl_serials(crl, fed.ca_dir / "ca.crt") if crl.exists() else set()
        return open_result(load_seal_key(fed.researcher_dir),
                           fed.coordinator.jobs.sealed_result(job_id, fed.researcher),
                           (fed.ca_dir / "ca.crt").read_bytes(), job_id=job_id,
                           researcher=fed.researcher, allow_unsigned=allow_unsigned,
                           revoked=revoked)


def test_coordinator_makes_the_revoked_node_the_release_node(fed, monkeypatch):
    """Same, and the coordinator picks the revoked node (shown the old CRL) to decrypt
    and sign: it releases, but `scifed job result --verify` refuses the result once the
    researcher holds the CA's CRL (crl.pem in the identity directory), and says which
    CRL it checked."""
    bad, old = fed.revoked_node, ca_crl(fed)
    serial = revoke(fed.ca_dir, name=bad, role="node")
    keep_revoked_connected(fed)
    forward_crl(fed)
    send_crls(fed, {bad: old})
    monkeypatch.setattr(jobs.base.Run, "release_node", lambda self, contributors: bad)
    view = fed.wait(fed.submit(job(EXACT)))
    assert view.status == JobStatus.DONE, view.error
    monkeypatch.setattr(cli.researcher, "_client", lambda identity: ResearcherClient(fed))

    def verify() -> tuple[int, str]:
        out = CliRunner().invoke(cli.researcher.job_app, ["result", view.job_id, "--verify"])
        return out.exit_code, " ".join(out.output.split())

    code, said = verify()  # no CRL at the researcher's: nothing tells
    assert code == 0 and "revocation: not checked: no crl.pem (a copy of the CA's " \
        "revocation list) in" in said, said
    (fed.researcher_dir / "crl.pem").write_bytes(ca_crl(fed))
    code, said = verify()
    assert code == 1, said
    assert (f"is signed with the certificate of node '{bad}' (serial {serial}), which has "
            "been revoked") in said


def test_verify_names_the_crl_it_checked(fed, monkeypatch):
    (fed.researcher_dir / "crl.pem").write_bytes(ca_crl(fed))
    view, _ = fed.run(job(EXACT))
    monkeypatch.setattr(cli.researcher, "_client", lambda identity: ResearcherClient(fed))
    out = CliRunner().invoke(cli.researcher.job_app, ["result", view.job_id, "--verify"])
    said = " ".join(out.output.split())
    assert out.exit_code == 0, said
    assert "revocation: the signer is not revoked by the CA's CRL number 1, signed " in said


def test_a_revoked_node_shown_the_crl_refuses_every_task(fed):
    """The revoked node itself, once it sees the CRL, takes no task that trusts others."""
    bad = fed.revoked_node
    serial = revoke(fed.ca_dir, name=bad, role="node")
    keep_revoked_connected(fed)
    forward_crl(fed)
    view = fed.wait(fed.submit(job(EXACT)))
    assert view.status == JobStatus.FAILED
    own = (f"node {bad} takes no tasks: its own certificate (serial {serial}) is revoked "
           "(CRL number 2")
    assert [r for r in refusals(fed, bad, view.job_id) if r.startswith(own)]
    assert_nothing_released_or_charged(fed, view.job_id)


# -- keys: a revoked lead, a revoked member ----------------------------------------------
def test_a_member_refuses_a_key_share_signed_by_a_revoked_lead(fed):
    """The study's lead is revoked; the coordinator keeps relaying the shares it signed
    (they are in every task header). A member that has not opened its share yet refuses
    it; the revoked lead refuses itself."""
    victim = fed.revoked_node  # not the lead, and holds no copy of the key yet
    serial = revoke(fed.ca_dir, name=fed.lead, role="node")
    keep_revoked_connected(fed)
    forward_crl(fed)
    view = fed.wait(fed.submit(job(NOISED)))
    assert view.status == JobStatus.FAILED
    entries = fed.nodes[victim].audit.entries()
    refused = [e for e in entries if e.action == "study.key.refuse"]
    assert len(refused) == 1
    assert (f"study key of 'penguins' v1 is not signed by the study's lead {fed.lead}: the "
            f"certificate of node {fed.lead!r} (serial {serial}) has been revoked"
            ) == refused[0].details["reason"]
    assert not [e for e in entries if e.action == "study.key.accept"]
    assert_nothing_released_or_charged(fed, view.job_id)


def test_the_lead_refuses_to_key_a_revoked_member(fed):
    """The coordinator asks the lead for a new key version sealed to every member, the
    revoked one too (as on a re-key after a membership change)."""
    bad = fed.revoked_node
    serial = revoke(fed.ca_dir, name=bad, role="node")
    keep_revoked_connected(fed)
    forward_crl(fed)
    with fed.coordinator.db.session() as s:
        claims = {n: s.get(Node, n).seal_claim for n in ISLANDS}
    request = KeygenRequest(study_id=fed.study_id, version=2, members=claims)
    result = fed.coordinator.sessions.send(fed.lead, TaskKind.KEYGEN,
                                           request.dumps()).result(30)
    assert not result.ok
    said = (f"node {fed.lead} keys no node whose certificate is revoked (CRL number 2, "
            f"signed ")
    assert result.error.startswith(said) and result.error.endswith(f": {bad} (serial {serial})")
    assert refusals(fed, fed.lead, fed.study_id) == [result.error]
    assert not [e for e in fed.nodes[fed.lead].audit.entries()
                if e.action == "study.key.sign" and e.details["version"] == 2]


# -- a revoked researcher ---------------------------------------------------------------------
def test_coordinator_runs_a_revoked_researcher_s_job(fed):
    """The CA revokes the researcher; the coordinator takes the job anyway (its
    interceptor would refuse the call) and sends its tasks, with the researcher's seal
    key claim, to every node. Before: computed, charged, sealed to the researcher."""
    serial = serial_of(fed, "researcher", fed.researcher)
    revoke(fed.ca_dir, name=fed.researcher, role="researcher")
    forward_crl(fed)
    job_id = fed.submit(job(NOISED))
    view = fed.wait(job_id)
    assert view.status == JobStatus.FAILED
    for node in ISLANDS:
        said = (f"node {node} refuses job {job_id} of researcher 'alice': the certificate "
                f"of researcher 'alice' (serial {serial}) is revoked (CRL number 2, signed ")
        assert [r for r in refusals(fed, node, job_id) if r.startswith(said)], node
        assert not [e for e in fed.nodes[node].audit.entries() if e.action == "task.allow"
                    and e.details["job_id"] == job_id]
    assert "is revoked (CRL number 2" in view.error
    assert_nothing_released_or_charged(fed, job_id)


# -- the CRL itself: replayed, withheld ----------------------------------------------------------
def test_coordinator_replays_an_older_crl_to_take_a_revocation_back(fed):
    """The nodes hold CRL 2, which revokes the researcher. The coordinator replays CRL 1
    (before the revocation; the CA signed it too) with every task: the nodes keep CRL 2,
    audit the replay once, and refuse the job still."""
    old = ca_crl(fed)
    revoke(fed.ca_dir, name=fed.researcher, role="researcher")
    forward_crl(fed)
    first = fed.wait(fed.submit(job(EXACT)))
    assert first.status == JobStatus.FAILED
    fed.coordinator.crl_changed(old)  # the coordinator's own copy does not go back either
    assert fed.coordinator.crl.number == 2
    send_crls(fed, dict.fromkeys(ISLANDS, old))
    for _ in range(2):
        view = fed.wait(fed.submit(job(NOISED)))
        assert view.status == JobStatus.FAILED
        assert "is revoked (CRL number 2" in view.error
        assert_nothing_released_or_charged(fed, view.job_id)
    for node, core in fed.nodes.items():
        assert held_crl(fed, node) == 2
        replays = [e for e in core.audit.entries() if e.action == "crl.refuse"]
        assert len(replays) == 1, node
        assert replays[0].details["reason"].startswith(
            f"node {node} keeps its CRL number 2, signed ")
        assert "the CRL number 1, signed " in replays[0].details["reason"]
        assert "is not newer (a lower CRL number cannot take a revocation back)" in \
            replays[0].details["reason"]


def test_coordinator_stops_forwarding_crls(fed):
    """The coordinator stops forwarding CRLs, so the nodes never see the one that revokes
    the researcher. A node refuses once its newest CRL is older than its limit
    (crl_max_age_seconds; 24 h by default, 3 s here)."""
    limit = 3.0
    for core in fed.nodes.values():
        core.cfg.crl_max_age_seconds = limit
    refresh_crl(fed.ca_dir)  # a CRL just signed: fresh
    forward_crl(fed)
    view, _ = fed.run(job(EXACT))
    assert view.status == JobStatus.DONE
    send_crls(fed, dict.fromkeys(ISLANDS, b""))  # from now on, none
    revoke(fed.ca_dir, name=fed.researcher, role="researcher")
    forward_crl(fed)  # the coordinator holds it; the nodes never get it
    assert all(held_crl(fed, n) == 2 for n in ISLANDS)
    signed = fed.nodes[fed.lead].studies.trust.current().this_update.timestamp()
    time.sleep(max(0.0, signed + limit + 1.05 - time.time()))
    job_id = fed.submit(job(NOISED))
    view = fed.wait(job_id)
    assert view.status == JobStatus.FAILED
    for node in ISLANDS:
        said = [r for r in refusals(fed, node, job_id)
                if r.startswith(f"node {node} refuses tasks that trust other parties: its "
                                "newest certificate revocation list (CRL number 2, signed ")]
        assert said, (node, refusals(fed, node))
        assert " s old, older than its limit crl_max_age_seconds = 3 (3.0 s); " in said[0]
    assert "older than its limit crl_max_age_seconds = 3" in view.error
    assert_nothing_released_or_charged(fed, job_id)
