"""Attacks by a coordinator that deviates from the protocol, run through the real pipeline.

The design lets the coordinator relay and store everything but read nothing, and assumes
it may run modified code. Each attack here is such a coordinator: it rewrites its own
database or the tasks it sends, with only what it legitimately holds (every member's
certified seal key, the public contexts, the sealed blobs, its own certificate), and
tries to read what a node contributes or to make a node act for it. This module collects
those attacks; the first family plants a study key of the coordinator's own making.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import yaml
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from coordinator import studies
from coordinator.db import Node, StudyKeyShare
from harness.inmemory import InMemoryFederation
from node.studies import key_context
from scifed.errors import UserError
from scifed.he import StudyKey
from scifed.sealing import (
    KeyStatement,
    SealKeyClaim,
    SignedKeyShare,
    seal,
    share_context,
    sign_key_shares,
    verify_claim,
)
from scifed.states import JobStatus, StudyStatus
from scifed.tasks import KeygenRequest, TaskKind

ISLANDS = {"biscoe": "Biscoe", "dream": "Dream", "torgersen": "Torgersen"}
OUTSIDER = "outsider"  # enrolled in the federation, not invited to the study
EXACT = {"columns": ["body_mass_g"]}
NOISED = {"columns": ["body_mass_g"], "dp": {"epsilon": 1.0,
                                             "bounds": {"body_mass_g": [2000, 7000]}}}


def job(stats: dict) -> str:
    return yaml.safe_dump({"study": "penguins", "type": "stats",
                           "datasets": {n: "penguins" for n in ISLANDS}, "stats": stats},
                          sort_keys=False)


@pytest.fixture
def fed(tmp_path, penguins, penguins_meta):
    """A fresh federation per attack: a member keeps a key version once it has opened
    it, so each attack needs members that hold no copy of the planted version yet."""
    fed = InMemoryFederation(tmp_path, [*ISLANDS, OUTSIDER]).__enter__()
    try:
        for node, island in ISLANDS.items():
            fed.add_dataset(node, penguins[penguins.island == island], penguins_meta,
                            "penguins")
        fed.study_id = fed.create_study("penguins", {n: "penguins" for n in ISLANDS})
        lead = studies.get_study(fed.coordinator.db, fed.study_id).lead_node
        fed.victim = next(n for n in ISLANDS if n != lead)  # the lead keeps its own key
        fed.victim_rows = penguins[penguins.island == ISLANDS[fed.victim]]
        yield fed
    finally:
        fed.__exit__(None, None, None)


# -- what the deviating coordinator does ------------------------------------------------
def seal_public(fed, node: str) -> bytes:
    """The seal key ``node`` certified: the coordinator holds the claim legitimately (it
    relays it to every lead)."""
    with fed.coordinator.db.session() as s:
        claim = s.get(Node, node).seal_claim
    return verify_claim(SealKeyClaim.from_dict(claim), (fed.ca_dir / "ca.crt").read_bytes(),
                        expect_role="node", expect_name=node)


def stored_share(fed, node: str, version: int) -> bytes:
    with fed.coordinator.db.session() as s:
        return s.get(StudyKeyShare, (fed.study_id, version, node)).sealed_secret


def bare_seal(fed, node: str, version: int, key: StudyKey) -> bytes:
    """The key sealed to ``node`` as a lead seals it, nothing beside it: the seal is
    anonymous, so nothing in it says who made the key."""
    return seal(seal_public(fed, node), key.secret_bytes(),
                context=key_context(fed.study_id, version, node))


def lead_statement_own_seal(fed, node: str, version: int, key: StudyKey) -> bytes:
    """The lead's genuine signed statement (it travels beside the seal, readable), with
    the sealed secret replaced by the coordinator's key, sealed under that statement's
    associated data exactly as the lead seals."""
    genuine = SignedKeyShare.loads(stored_share(fed, node, version))
    context = share_context(key_context(fed.study_id, version, node), genuine.statement)
    return SignedKeyShare(genuine.statement, genuine.signature, genuine.cert_pem,
                          seal(seal_public(fed, node), key.secret_bytes(),
                               context=context)).dumps()


def signed_by_coordinator(fed, node: str, version: int, key: StudyKey) -> bytes:
    """A statement of the coordinator's key naming the real lead, signed with the
    coordinator's own certificate key (from the federation CA, but no node's)."""
    genuine = SignedKeyShare.loads(stored_share(fed, node, version)).statement
    statement = KeyStatement.of(study_id=fed.study_id, key_version=version,
                                lead=genuine.lead, members=genuine.members,
                                key_id=key.key_id, public_context=key.public_bytes())
    pem = (fed.ca_dir / "coordinator.key").read_bytes()
    signing = serialization.load_pem_private_key(pem, password=None)
    signature = signing.sign(statement.message(), ec.ECDSA(hashes.SHA256()))
    context = share_context(key_context(fed.study_id, version, node), statement)
    return SignedKeyShare(statement, signature, (fed.ca_dir / "coordinator.crt").read_bytes(),
                          seal(seal_public(fed, node), key.secret_bytes(),
                               context=context)).dumps()


def signed_by_outsider(fed, node: str, version: int, key: StudyKey) -> bytes:
    """A node of the federation that is not in the study colludes: it signs, as lead and
    with its own node certificate, a statement of the coordinator's key."""
    tls = fed.nodes[OUTSIDER].cfg.tls
    statement = KeyStatement.of(study_id=fed.study_id, key_version=version, lead=OUTSIDER,
                                members=[node, OUTSIDER], key_id=key.key_id,
                                public_context=key.public_bytes())
    recipients = {n: (seal_public(fed, n), key_context(fed.study_id, version, n))
                  for n in statement.members}
    return sign_key_shares(statement, key.secret_bytes(), recipients, cert_path=tls.cert,
                           key_path=tls.key)[node]


def plant_in_database(fed, node: str, version: int, forge=bare_seal) -> StudyKey:
    """Overwrite ``node``'s stored share of ``version`` with one of the coordinator's key."""
    key = StudyKey.generate()
    blob = forge(fed, node, version, key)
    with fed.coordinator.db.session() as s:
        s.get(StudyKeyShare, (fed.study_id, version, node)).sealed_secret = blob
    return key


def plant_in_headers(fed, node: str, version: int) -> StudyKey:
    """Leave the database alone; put the coordinator's share in every task header it
    sends ``node`` (what a modified driver would do)."""
    key = StudyKey.generate()
    blob = bare_seal(fed, node, version, key)
    jobs = fed.coordinator.jobs
    honest = jobs.header

    def header(run, target):
        h = honest(run, target)
        return h.model_copy(update={"key_share": blob}) if target == node else h

    jobs.header = header
    return key


def capture_contributions(fed) -> dict[str, bytes]:
    """What the coordinator receives: every node's encrypted contribution, by node."""
    seen: dict[str, bytes] = {}
    jobs = fed.coordinator.jobs
    honest = jobs.fanout

    def fanout(run, phase, kind, payloads, reply):
        answers, failed = honest(run, phase, kind, payloads, reply)
        if kind == TaskKind.COMPUTE:
            seen.update({n: a.ciphertext for n, a in answers.items()})
        return answers, failed

    jobs.fanout = fanout
    return seen


def read(key: StudyKey, captured: dict[str, bytes], node: str) -> np.ndarray | None:
    """The node's contribution in clear, if the coordinator's key opens it."""
    if node not in captured:
        return None
    try:
        return key.decrypt(captured[node])
    except UserError:  # encrypted under another key
        return None


# -- the checks ---------------------------------------------------------------------------
def assert_refused(fed, job_id: str, version: int, captured: dict[str, bytes],
                   planted: StudyKey, why: str = "") -> None:
    """The victim refused the key: nothing computed, nothing charged, the refusal audited
    with one clear message that reaches the researcher, and the key not kept."""
    victim = fed.victim
    view = fed.wait(job_id)
    stolen = read(planted, captured, victim)
    if stolen is not None:  # the layout: rows, rows_flag, n, missing, Σx, Σx², flags
        pytest.fail(f"the coordinator read {victim}'s contribution: {stolen[0]:.0f} rows, "
                    f"Σ body_mass_g = {stolen[4]:.1f} (the node holds "
                    f"{len(fed.victim_rows)} rows, Σ = {fed.victim_rows.body_mass_g.sum():.1f})")
    assert view.status == JobStatus.FAILED, view
    said = f"study key of 'penguins' v{version} is not signed by the study's lead "
    assert said in view.error and why in view.error, view.error
    assert not captured, "a node computed although one refused its key"
    core = fed.nodes[victim]
    with core.store.tx() as con:  # the planted key is not kept
        assert not con.execute("SELECT count(*) FROM study_keys WHERE study_id=? AND "
                               "version=?", (fed.study_id, version)).fetchone()[0]
    entries = core.audit.entries()
    refusals = [e for e in entries if e.action == "study.key.refuse"]
    assert [(e.subject, e.details["version"]) for e in refusals] == [(fed.study_id, version)]
    message = refusals[0].details["reason"]
    assert message.startswith(said) and message in view.error and why in message
    assert not [e for e in entries if e.action in ("task.allow", "task.release")
                and e.details.get("job_id") == job_id]
    for node, other in fed.nodes.items():  # charged at no node, and what the others
        assert not other.gate.ledger.spent(), node  # reserved is given back

        def unreserved(core=other) -> bool:
            with core.store.tx() as con:
                return not con.execute("SELECT count(*) FROM budget_reservations"
                                       ).fetchone()[0]

        wait_for(unreserved, what="the reservations to be released")


# -- the attacks --------------------------------------------------------------------------
@pytest.mark.parametrize(("forge", "why"), [
    (bare_seal, "(one of biscoe, dream, torgersen): the share carries no key statement "
                "signed by a lead"),
    (lead_statement_own_seal, "is not the key the lead signed"),
    (signed_by_coordinator, "signed with the certificate of coordinator 'coordinator', "
                            "not of node"),
    (signed_by_outsider, "its signer 'outsider' is not a node of the study as this node's "
                         "officer accepted it (biscoe, dream, torgersen)"),
], ids=["bare-seal", "lead-statement-own-seal", "signed-by-coordinator",
        "signed-by-outsider-node"])
def test_coordinator_plants_its_own_key_in_its_database(fed, forge, why):
    """The coordinator swaps the victim's stored share for one of its own key, then a job
    runs: the victim would encrypt its contribution under a key the coordinator holds."""
    planted = plant_in_database(fed, fed.victim, 1, forge)
    captured = capture_contributions(fed)
    assert_refused(fed, fed.submit(job(EXACT)), 1, captured, planted, why)


def test_coordinator_plants_its_own_key_in_the_task_header(fed):
    """Same, through the task header it sends, on a job under DP (so a charge would
    show): the database still holds the lead's share."""
    planted = plant_in_headers(fed, fed.victim, 1)
    captured = capture_contributions(fed)
    assert_refused(fed, fed.submit(job(NOISED)), 1, captured, planted,
                   "carries no key statement signed by a lead")


def test_coordinator_asks_for_a_rotation_and_plants_the_new_version(fed):
    """The victim already holds version 1 (a job ran). The coordinator asks the lead for
    a new version, as on a membership change, and plants its own key as that version."""
    view, _ = fed.run(job(EXACT))
    assert view.status == JobStatus.DONE
    db = fed.coordinator.db
    with db.session() as s:
        s.get(studies.Study, fed.study_id).status = StudyStatus.KEYING
    fed.coordinator.keys.rotate_pending()
    wait_for(lambda: studies.get_study(db, fed.study_id).key_version == 2
             and studies.get_study(db, fed.study_id).status == StudyStatus.ACTIVE)
    planted = plant_in_database(fed, fed.victim, 2, lead_statement_own_seal)
    captured = capture_contributions(fed)
    lead = studies.get_study(db, fed.study_id).lead_node
    assert_refused(fed, fed.submit(job(EXACT)), 2, captured, planted,
                   f"the study's lead {lead}: the key it carries")


def wait_for(condition, timeout: float = 30, what: str = "the study key to rotate") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout:.0f}s for {what}")
        time.sleep(0.02)


def test_coordinator_asks_the_lead_to_key_a_node_outside_the_study(fed):
    """The coordinator adds a colluding node that is not in the study to a key request:
    the lead would seal the real key to it. The lead keys only the study's nodes as its
    officer accepted them."""
    db = fed.coordinator.db
    st = studies.get_study(db, fed.study_id)
    with db.session() as s:
        claims = {n: s.get(Node, n).seal_claim for n in [*ISLANDS, OUTSIDER]}
    request = KeygenRequest(study_id=fed.study_id, version=st.key_version + 1, members=claims)
    result = fed.coordinator.sessions.send(st.lead_node, TaskKind.KEYGEN,
                                           request.dumps()).result(30)
    assert not result.ok
    assert (f"node {st.lead_node} keys no node outside study 'penguins' as its officer "
            f"accepted it: {OUTSIDER}") in result.error
    assert not [e for e in fed.nodes[st.lead_node].audit.entries()
                if e.action == "study.key.sign" and e.details["version"] == 2]
