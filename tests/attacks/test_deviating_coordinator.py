"""Attacks by a coordinator that deviates from the protocol, run through the real pipeline.

The design lets the coordinator relay and store everything but read nothing, and assumes
it may run modified code. Each attack here is such a coordinator: it rewrites its own
database or the tasks it sends, with only what it legitimately holds (every member's
certified seal key, the public contexts, the sealed blobs, its own certificate), and
tries to read what a node contributes or to make a node act for it. This module collects
those attacks; the first family plants a study key of the coordinator's own making.
"""

from __future__ import annotations

import base64
import json
import time

import numpy as np
import pytest
import yaml
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from islands import EXACT, ISLANDS, NOISED, island_federation, job
from typer.testing import CliRunner

import cli.researcher
from coordinator import studies
from coordinator.client import spec_checks
from coordinator.db import Job, Node, StudyKeyShare
from jobs.spec import load_job
from node.studies import key_context
from scifed.errors import UserError
from scifed.he import StudyKey, sum_ciphertexts
from scifed.sealing import (
    RESULT_SIGNATURE,
    KeyStatement,
    SealKeyClaim,
    SignedKeyShare,
    _result_message,
    canonical_sha256,
    load_seal_key,
    open_result,
    result_context,
    result_digest,
    seal,
    share_context,
    sign_key_shares,
    sign_result,
    verify_claim,
)
from scifed.states import JobStatus, StudyStatus
from scifed.tasks import KeygenRequest, TaskKind

OUTSIDER = "outsider"  # enrolled in the federation, not invited to the study


@pytest.fixture
def fed(tmp_path, penguins, penguins_meta):
    """A fresh federation per attack: a member keeps a key version once it has opened
    it, so each attack needs members that hold no copy of the planted version yet."""
    fed = island_federation(tmp_path, penguins, penguins_meta, [OUTSIDER])
    try:
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


# -- results: the release node signs them, the researcher checks ----------------------------
# The coordinator stores each job's sealed result and holds the researcher's certified seal
# key, so it can seal a result of its own making to the researcher. It cannot alter a
# genuine result in place (the seal is authenticated) or read one; it can replace one —
# with a result it made, or with a genuine one it obtained in clear (researchers export and
# publish results: `scifed job result --json`). Before results were signed, the client
# opened every such replacement and showed it, with nothing to say who made it.
def ca_pem(fed) -> bytes:
    return (fed.ca_dir / "ca.crt").read_bytes()


def store_result(fed, job_id: str, document: dict | None = None, *,
                 blob: bytes | None = None) -> None:
    """Replace the job's stored result: ``document`` sealed to the researcher's certified
    seal key (which the coordinator holds with the job), or a sealed ``blob``."""
    with fed.coordinator.db.session() as s:
        job_row = s.get(Job, job_id)
        if blob is None:
            public = verify_claim(SealKeyClaim.from_dict(job_row.seal_claim), ca_pem(fed),
                                  expect_role="researcher", expect_name=fed.researcher)
            blob = seal(public, json.dumps(document).encode(), context=result_context(job_id))
        job_row.sealed_result = blob


def report_contributors(fed, job_id: str, nodes: list[str]) -> None:
    """Rewrite who the coordinator says contributed (what `scifed job status` shows)."""
    with fed.coordinator.db.session() as s:
        s.get(Job, job_id).contributors = sorted(nodes)


def researcher_opens(fed, job_id: str, spec: dict | None = None, **kw):
    """What the researcher's client does before it shows a result (``Client.open_result``,
    which `scifed job result` calls): open it with its seal key and verify it against the
    CA, this job, this researcher, the contributors the coordinator reports and, given,
    the spec the researcher submitted."""
    return open_result(load_seal_key(fed.researcher_dir),
                       fed.coordinator.jobs.sealed_result(job_id, fed.researcher), ca_pem(fed),
                       job_id=job_id, researcher=fed.researcher,
                       reported_contributors=fed.job(job_id).contributors,
                       **(spec_checks(spec) if spec else {}), **kw)


def as_submitted(spec_yaml: str) -> dict:
    """The spec as the researcher's client keeps it when it submits."""
    return load_job(spec_yaml, "job.yaml").to_dict()


def genuine_job(fed, stats: dict = EXACT) -> tuple[str, dict]:
    """A job run honestly, and its result as the researcher exported it (in clear)."""
    view, exported = fed.run(job(stats))
    return view.job_id, exported


def made_up(fed, job_id: str, genuine: dict) -> dict:
    """A result of the coordinator's making: numbers it chose, the job's meta."""
    return {"type": "stats", "rows": 9999, "suppression": {},
            "columns": {"body_mass_g": {"count": 9999, "missing": 0, "mean": 1.0,
                                        "variance": 0.0, "std": 0.0}},
            "meta": genuine["meta"]}


def signed_by_the_coordinator(fed, job_id: str, genuine: dict) -> dict:
    """Made up, with the genuine provenance, signed with the coordinator's certificate
    key (the federation CA issued it, but to no node)."""
    doc = {**made_up(fed, job_id, genuine), "provenance": genuine["provenance"]}
    key = serialization.load_pem_private_key((fed.ca_dir / "coordinator.key").read_bytes(),
                                             password=None)
    signature = key.sign(_result_message(doc), ec.ECDSA(hashes.SHA256()))
    return {**doc, RESULT_SIGNATURE: {
        "alg": "ECDSA-P256-SHA256", "value": base64.b64encode(signature).decode(),
        "cert_pem": (fed.ca_dir / "coordinator.crt").read_text()}}


def signed_by_an_outsider(fed, job_id: str, genuine: dict) -> dict:
    """A node of the federation outside the study colludes: it signs, with its own node
    certificate, a made-up result naming itself release node and contributor; the
    coordinator reports the same contributors, so the two agree."""
    contributors = sorted([*genuine["provenance"]["contributors"], OUTSIDER])
    provenance = {**genuine["provenance"], "released_by": OUTSIDER,
                  "contributors": contributors}
    report_contributors(fed, job_id, contributors)
    tls = fed.nodes[OUTSIDER].cfg.tls
    return sign_result({**made_up(fed, job_id, genuine), "provenance": provenance},
                       node=OUTSIDER, cert_path=tls.cert, key_path=tls.key)


def test_a_genuine_result_is_signed_by_its_release_node_with_its_provenance(fed):
    """What the release node signs, checked against what each party knows."""
    job_id, _ = genuine_job(fed, NOISED)
    doc, verified = researcher_opens(fed, job_id, as_submitted(job(NOISED)))
    prov, signer = verified.provenance, verified.signer
    assert verified.spec_checked and prov["released_by"] == signer == doc["meta"]["released_by"]
    assert prov["spec_sha256"] == canonical_sha256(as_submitted(job(NOISED)))
    assert (prov["job_id"], prov["job_type"], prov["stage"], prov["researcher"]) == \
        (job_id, "stats", "final", fed.researcher)
    st = studies.get_study(fed.coordinator.db, fed.study_id)
    assert (prov["study_id"], prov["key_version"]) == (fed.study_id, st.key_version)
    assert prov["contributors"] == sorted(ISLANDS) == sorted(fed.job(job_id).contributors)
    core = fed.nodes[signer]
    record = core.studies.attached(fed.study_id, "penguins").record
    assert prov["datasets"][signer] | {"source": ""} == {
        "dataset": "penguins", "record_id": record["id"], "version": record["version"],
        "sha256": record["distributions"][0]["sha256"], "schema_hash": record["schema_hash"],
        "source": ""}
    for node in ISLANDS:  # every contributor's dataset, as it attested it
        own = fed.nodes[node].studies.attached(fed.study_id, "penguins").record
        assert prov["datasets"][node] == {
            "dataset": "penguins", "record_id": own["id"], "version": own["version"],
            "sha256": own["distributions"][0]["sha256"], "schema_hash": own["schema_hash"],
            "source": f"attested by {node}"}
    assert sorted(prov["attestations"]) == [n for n, _ in verified.attested] == sorted(ISLANDS)
    policy = core.gate.policies.effective(record)
    assert (prov["policy"]["grade"], prov["policy"]["category"],
            prov["policy"]["min_cell_count"]) == (policy.grade, policy.category,
                                                  policy.min_cell_count)
    assert prov["rules"]["release"] == "dp"
    assert sorted(prov["dp"]) == sorted(ISLANDS)
    assert all(r["epsilon"] == 1.0 for r in prov["dp"].values())
    # the audit head it names is in the release node's chain, and the entry that follows
    # it records the digest of what was signed
    entries = {e.seq: e for e in core.audit.entries()}
    head = prov["audit_head"]
    assert head["node"] == signer and entries[head["seq"]].hash == head["hash"]
    sealed = [e for e in entries.values() if e.action == "result.seal"
              and e.details["job_id"] == job_id]
    assert len(sealed) == 1 and sealed[0].seq > head["seq"]
    assert sealed[0].details["result_sha256"] == result_digest(doc)


@pytest.mark.parametrize(("forge", "said"), [
    (made_up, "this result carries no signature (released before results were signed"),
    (signed_by_the_coordinator, "is signed with the certificate of coordinator "
                                "'coordinator', not of a node"),
    (signed_by_an_outsider, "names contributors outsider that your job spec does not name"),
], ids=["unsigned", "signed-by-coordinator", "signed-by-outsider-node"])
def test_coordinator_forges_a_result(fed, forge, said):
    """(a) The coordinator seals a result of its own making to the researcher and stores
    it as the job's result. Before results were signed the client showed it."""
    job_id, genuine = genuine_job(fed)
    store_result(fed, job_id, forge(fed, job_id, genuine))
    with pytest.raises(UserError) as refused:
        researcher_opens(fed, job_id, as_submitted(job(EXACT)))
    assert said in str(refused.value) and job_id in str(refused.value)


def swap_a_number(doc: dict) -> None:
    doc["columns"]["body_mass_g"]["mean"] += 500.0


def swap_a_dataset_hash(doc: dict) -> None:
    release_node = doc["provenance"]["released_by"]
    doc["provenance"]["datasets"][release_node]["sha256"] = "0" * 64


@pytest.mark.parametrize("alter", [swap_a_number, swap_a_dataset_hash],
                         ids=["result-number", "provenance-dataset-hash"])
def test_coordinator_alters_a_genuine_result(fed, alter):
    """(b) The coordinator holds the genuine result in clear (the researcher exported it),
    changes a number and seals it back as the job's result."""
    job_id, genuine = genuine_job(fed)
    alter(genuine)
    store_result(fed, job_id, genuine)
    with pytest.raises(UserError) as refused:
        researcher_opens(fed, job_id)
    signer = genuine["provenance"]["released_by"]
    assert (f"the result of job {job_id}: the signature of node {signer!r} does not "
            "verify: the result or its provenance was altered after it was signed"
            ) == str(refused.value)


def test_coordinator_replays_another_job_s_genuine_result(fed):
    """(c) The same job asked again later: the coordinator answers with the earlier job's
    genuine, signed result — resealed as this job's (it holds it in clear), or its sealed
    blob as stored (which the seal's job binding already refused before signing)."""
    first, genuine = genuine_job(fed)
    second, _ = genuine_job(fed)
    store_result(fed, second, genuine)
    with pytest.raises(UserError, match=f"node '{genuine['provenance']['released_by']}' "
                                        f"signed it as the result of job {first}, not of "
                                        "this job \\(a replay\\)"):
        researcher_opens(fed, second)
    store_result(fed, second, blob=fed.coordinator.jobs.sealed_result(first, fed.researcher))
    with pytest.raises(UserError, match="sealed message could not be authenticated"):
        researcher_opens(fed, second)


def test_coordinator_drops_a_node_from_the_contributors_it_reports(fed):
    """(d) The coordinator reports that one node did not contribute (the result stays
    genuine): what it says and what the release node signed disagree."""
    job_id, genuine = genuine_job(fed)
    dropped = next(n for n in ISLANDS if n != genuine["provenance"]["released_by"])
    report_contributors(fed, job_id, [n for n in ISLANDS if n != dropped])
    with pytest.raises(UserError) as refused:
        researcher_opens(fed, job_id)
    others = ", ".join(sorted(set(ISLANDS) - {dropped}))
    assert (f"the coordinator reports contributors {others}, the result node "
            f"{genuine['provenance']['released_by']!r} signed names "
            f"{', '.join(sorted(ISLANDS))}: the coordinator's record of the job was altered"
            ) in str(refused.value)


def test_coordinator_alters_the_job_spec_it_relays(fed):
    """The coordinator sends the nodes another spec than the researcher submitted (a
    different column): every node computes it and the release node signs it honestly.
    The researcher's copy of the spec tells."""
    jobs = fed.coordinator.jobs
    honest = jobs.header

    def header(run, target):
        h = honest(run, target)
        return h.model_copy(update={"spec": {**h.spec, "stats": {
            "columns": ["flipper_length_mm"]}}})

    jobs.header = header
    job_id, _ = genuine_job(fed)
    researcher_opens(fed, job_id)  # signed, and for this job: only the spec tells
    with pytest.raises(UserError, match="released a job whose spec \\(sha256 [0-9a-f]{16}…\\) "
                                        "is not the one you submitted"):
        researcher_opens(fed, job_id, as_submitted(job(EXACT)))


@pytest.mark.parametrize("claim", ["alice's", "none"])
def test_coordinator_runs_queries_under_an_invented_researcher(fed, claim):
    """The coordinator writes the task header, and the refusal allowance counts by the
    researcher it names: a coordinator that names researchers nobody certified ("mallory",
    with alice's public seal key claim or with none) would get a fresh allowance per
    name, and read which queries the nodes refuse. Every node refuses the job before it
    opens its data: nothing computed, nothing released, no allowance spent."""
    jobs = fed.coordinator.jobs
    honest = jobs.header

    def header(run, target):
        h = honest(run, target)
        return h.model_copy(update={"researcher": "mallory", **(
            {"researcher_claim": {}} if claim == "none" else {})})

    jobs.header = header
    job_id = fed.submit(job(EXACT))
    view = fed.wait(job_id)
    assert view.status == JobStatus.FAILED, view
    for name in ISLANDS:
        node = fed.nodes[name]
        entries = [e for e in node.audit.entries() if e.details.get("job_id") == job_id
                   or e.subject == job_id]
        actions = {e.action for e in entries}
        assert "trust.refuse" in actions, (name, actions)
        assert not actions & {"task.allow", "task.release", "budget.charge"}, (name, actions)
        [refusal] = [e for e in entries if e.action == "trust.refuse"][:1]
        assert "no valid seal key claim of researcher 'mallory'" in refusal.details["reason"]


class InMemoryResearcher:
    """The client `scifed job result` uses, on the in-memory federation: it opens a
    result as ``Client.open_result`` does, with the spec it kept at submission."""

    def __init__(self, fed, spec_yaml: str) -> None:
        self.fed, self.spec = fed, as_submitted(spec_yaml)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass

    def open_result(self, job_id: str, *, allow_unsigned: bool = False,
                    spec: dict | None = None):
        return researcher_opens(self.fed, job_id, spec or self.spec,
                                allow_unsigned=allow_unsigned)


def test_scifed_job_result_shows_provenance_and_verify_fails_on_forgeries(fed, monkeypatch):
    """`scifed job result [--verify]` on a genuine, a forged and an altered result."""
    monkeypatch.setattr(cli.researcher, "_client",
                        lambda identity: InMemoryResearcher(fed, job(EXACT)))

    def scifed_job_result(*args: str) -> tuple[int, str]:
        out = CliRunner().invoke(cli.researcher.job_app, ["result", job_id, *args])
        return out.exit_code, " ".join(out.output.split())

    job_id, genuine = genuine_job(fed)
    signer = genuine["provenance"]["released_by"]
    code, said = scifed_job_result("--verify")
    assert code == 0, said
    assert said.startswith(f"verified: signed by node {signer} (certificate serial ")
    assert f"job {job_id}, contributors biscoe, dream, torgersen" in said
    assert "(matches your job spec)" in said
    code, said = scifed_job_result()
    assert code == 0, said
    assert "provenance (signed by the release node)" in said and "datasets" in said
    assert genuine["provenance"]["datasets"][signer]["sha256"][:16] in said
    code, said = scifed_job_result("--verify", "--json")
    assert code == 0 and json.loads(said)["provenance"]["released_by"] == signer

    store_result(fed, job_id, made_up(fed, job_id, genuine))  # (a): unsigned
    for args in (("--verify",), (), ("--verify", "--allow-unsigned")):
        code, said = scifed_job_result(*args)
        assert code == 1 and "this result carries no signature" in said, (args, said)
    code, said = scifed_job_result("--allow-unsigned")  # shown, marked, on request only
    assert code == 0 and "unverified: this result carries no signature" in said, said

    swap_a_number(genuine)  # (b)
    store_result(fed, job_id, genuine)
    code, said = scifed_job_result("--verify")
    assert code == 1 and f"the signature of node '{signer}' does not verify" in said, said


# -- contributions: what the release node sums --------------------------------------------
# The coordinator holds every node's ciphertext and the study's public context, so it can
# make any sum of them — or of ciphertexts of other jobs of the same study — and give it to
# the release node as the job's pooled result, naming all contributors. Leaving a node out,
# or counting it twice, makes a result whose difference from the genuine one is that
# node's exact share (the researcher colludes: both results are released to them).
# Each node therefore signs what it contributed, and the release node sums only
# ciphertexts whose contributors attested them for this job.
FILTERED = "sex == 'male'"  # another job of the study, with the same layout


def filtered_job(stats: dict = EXACT) -> str:
    spec = yaml.safe_load(job(stats))
    return yaml.safe_dump({**spec, "filter": FILTERED}, sort_keys=False)


def attested_protocol(request) -> bool:
    """Whether the release task carries the contributions themselves (the attested
    protocol) rather than a pooled sum of the coordinator's making."""
    return "contributions" in type(request).model_fields


def deviate_at_release(fed, tamper) -> dict[str, dict]:
    """The coordinator rewrites the release tasks it sends: ``tamper(fed, run, request,
    computed)`` returns the request to send (``computed``: every node's compute reply of
    the job, which the coordinator receives). Returns the compute replies by job."""
    seen: dict[str, dict] = {}
    jobs = fed.coordinator.jobs
    honest = jobs.fanout

    def fanout(run, phase, kind, payloads, reply):
        if kind == TaskKind.RELEASE and getattr(fed, "tampering", True):
            payloads = {n: tamper(fed, run, r, seen.get(run.job_id, {}))
                        for n, r in payloads.items()}
        answers, failed = honest(run, phase, kind, payloads, reply)
        if kind == TaskKind.COMPUTE:
            seen.setdefault(run.job_id, {}).update(answers)
        return answers, failed

    jobs.fanout = fanout
    return seen


def pooled(fed, blobs: list[bytes]) -> bytes:
    """A sum of the coordinator's making, with the study's public context."""
    return sum_ciphertexts(studies.get_study_public_context(fed.coordinator.db,
                                                            fed.study_id), blobs)


def leave_the_victim_out(fed, run, request, computed):
    """(i) The victim's ciphertext left out of the sum; every node still named."""
    if attested_protocol(request):
        return request.model_copy(update={"contributions": [
            c for c in request.contributions if c.node != fed.victim]})
    return request.model_copy(update={"aggregates": {"sum": pooled(
        fed, [computed[n].ciphertext for n in sorted(computed) if n != fed.victim])}})


def own_sum_leaving_the_victim_out(fed, run, request, computed):
    """(i) The same, handing the release node a pooled sum of the coordinator's making
    beside the contributions (as the coordinator used to)."""
    partial = pooled(fed, [computed[n].ciphertext for n in sorted(computed)
                           if n != fed.victim])
    return request.model_copy(update={"aggregates": {"sum": partial}})


def the_victim_twice(fed, run, request, computed):
    """(iii) The victim's ciphertext counted twice."""
    if attested_protocol(request):
        mine = next(c for c in request.contributions if c.node == fed.victim)
        return request.model_copy(update={"contributions": [*request.contributions, mine]})
    blobs = [computed[n].ciphertext for n in sorted(computed)]
    return request.model_copy(update={"aggregates": {"sum": pooled(
        fed, [*blobs, computed[fed.victim].ciphertext])}})


def the_victim_named_twice(fed, run, request, computed):
    """(iii) The victim named twice among the contributors, its ciphertext summed twice."""
    named = sorted([*request.contributors, fed.victim])
    if attested_protocol(request):
        mine = next(c for c in request.contributions if c.node == fed.victim)
        return request.model_copy(update={"contributors": named, "contributions": [
            *request.contributions, mine]})
    blobs = [computed[n].ciphertext for n in sorted(computed)]
    return request.model_copy(update={"contributors": named, "aggregates": {"sum": pooled(
        fed, [*blobs, computed[fed.victim].ciphertext])}})


def swap_in(fed, request, computed, *, ciphertext: bytes, attestation=None):
    """The victim's contribution replaced by ``ciphertext`` (with ``attestation``, else
    the victim's own attestation of this job)."""
    if attested_protocol(request):
        return request.model_copy(update={"contributions": [
            c.model_copy(update={"ciphertext": ciphertext,
                                 "attestation": attestation or c.attestation})
            if c.node == fed.victim else c for c in request.contributions]})
    return request.model_copy(update={"aggregates": {"sum": pooled(
        fed, [ciphertext if n == fed.victim else computed[n].ciphertext
              for n in sorted(computed)])}})


def other_job_with_its_attestation(fed, run, request, computed):
    """(ii) The victim's ciphertext of another job, with the victim's attestation of it."""
    other = fed.other[fed.victim]
    return swap_in(fed, request, computed, ciphertext=other.ciphertext,
                   attestation=getattr(other, "attestation", None))


def other_job_under_this_attestation(fed, run, request, computed):
    """(ii) The victim's ciphertext of another job, under its attestation of this one."""
    return swap_in(fed, request, computed, ciphertext=fed.other[fed.victim].ciphertext)


def forged(fed, request, computed, sign) -> object:
    """(iv) The other job's ciphertext, under the victim's attestation of this job with
    the ciphertext's hash put in, signed by ``sign(statement)`` (None: the signature
    kept, so the statement is altered)."""
    import hashlib

    other = fed.other[fed.victim].ciphertext
    if not attested_protocol(request):
        return swap_in(fed, request, computed, ciphertext=other)
    genuine = next(c for c in request.contributions if c.node == fed.victim).attestation
    statement = {**genuine["statement"],
                 "ciphertext_sha256": hashlib.sha256(other).hexdigest()}
    attestation = {**genuine, "statement": statement}
    if sign is not None:
        attestation = sign(fed, statement)
    return swap_in(fed, request, computed, ciphertext=other, attestation=attestation)


def sign_with(cert: bytes, key_pem: bytes, statement: dict) -> dict:
    from scifed.sealing import attestation_message

    key = serialization.load_pem_private_key(key_pem, password=None)
    signature = key.sign(attestation_message(statement), ec.ECDSA(hashes.SHA256()))
    return {"statement": statement, "alg": "ECDSA-P256-SHA256",
            "value": base64.b64encode(signature).decode(), "cert_pem": cert.decode()}


def altered_attestation(fed, run, request, computed):
    return forged(fed, request, computed, None)


def attestation_by_the_coordinator(fed, run, request, computed):
    return forged(fed, request, computed, lambda fed, st: sign_with(
        (fed.ca_dir / "coordinator.crt").read_bytes(),
        (fed.ca_dir / "coordinator.key").read_bytes(), st))


def attestation_by_an_outsider(fed, run, request, computed):
    tls = fed.nodes[OUTSIDER].cfg.tls
    return forged(fed, request, computed, lambda fed, st: sign_with(
        tls.cert.read_bytes(), tls.key.read_bytes(), st))


def attestation_by_another_contributor(fed, run, request, computed):
    """A colluding contributor of the study signs the victim's forged attestation."""
    colluder = next(n for n in ISLANDS if n != fed.victim)
    tls = fed.nodes[colluder].cfg.tls
    return forged(fed, request, computed, lambda fed, st: sign_with(
        tls.cert.read_bytes(), tls.key.read_bytes(), st))


def lowered_k(fed, run, request, computed):
    """The coordinator reports a smaller k than the contributors' policies set (and no
    DP), so the release node's disclosure rules run looser."""
    return request.model_copy(update={"k": 1, "min_contributors": 1})


def released_from(fed, job_id: str, genuine: dict, victim_rows: int) -> str:
    """What the researcher learns from a result released under a deviating sum."""
    result = fed.result_json(job_id)
    g, f = genuine["columns"]["body_mass_g"], result["columns"]["body_mass_g"]
    rows = result["rows"] - genuine["rows"]
    mass = f["mean"] * f["count"] - g["mean"] * g["count"]
    return (f"the release node released job {job_id} as the pooled result of "
            f"{', '.join(result['meta']['contributors'])}: {result['rows']} rows (the "
            f"genuine result has {genuine['rows']}; {fed.victim} holds {victim_rows}): "
            f"{rows:+d} rows and Σ body_mass_g {mass:+.1f} apart, so the researcher reads "
            f"{fed.victim}'s share by difference")


def assert_release_refused(fed, job_id: str, said: str) -> None:
    """The release node refused with one clear message (the researcher reads it), audited
    it, sealed nothing; the coordinator holds no result."""
    view = fed.wait(job_id)
    release_node = studies.get_study(fed.coordinator.db, fed.study_id).lead_node
    prefix = f"node {release_node} releases nothing for job {job_id}: "
    assert view.status == JobStatus.FAILED, view
    assert prefix in view.error and said in view.error, view.error
    core = fed.nodes[release_node]
    entries = [e for e in core.audit.entries() if e.details.get("job_id") == job_id]
    refusals = [e for e in entries if e.action == "release.refuse"]
    assert len(refusals) == 1 and said in refusals[0].details["reason"], refusals
    assert refusals[0].details["reason"].startswith(prefix)
    assert not [e for e in entries if e.action in ("result.seal", "result.progress")]
    with pytest.raises(UserError, match="has no result"):
        fed.coordinator.jobs.sealed_result(job_id, fed.researcher)


def run_attack(fed, tamper, said: str, stats: dict = EXACT) -> None:
    """Another job of the study (its ciphertexts are the coordinator's to reuse) and the
    job run honestly (the researcher holds its genuine result), then the job again with
    the deviating coordinator: refused at the release node, or the leak reported.
    ``said``: the refusal's words ({victim}, {other}: the other job, {colluder})."""
    fed.tampering = False
    seen = deviate_at_release(fed, tamper)
    other, _ = fed.run(filtered_job(stats))
    fed.other = seen[other.job_id]
    _, genuine = fed.run(job(stats))
    fed.tampering = True
    job_id = fed.submit(job(stats))
    view = fed.wait(job_id)
    if view.status == JobStatus.DONE:
        pytest.fail(released_from(fed, job_id, genuine, len(fed.victim_rows)))
    colluder = next(n for n in ISLANDS if n != fed.victim)
    assert_release_refused(fed, job_id, said.format(victim=fed.victim, other=other.job_id,
                                                    colluder=colluder))


@pytest.mark.parametrize(("tamper", "said"), [
    (leave_the_victim_out, "names {victim} as a contributor, but carries no contribution "
                           "of it"),
    (own_sum_leaving_the_victim_out, "carries a pooled sum of the coordinator's making; "
                                     "this node sums the contributors' attested "
                                     "ciphertexts itself"),
], ids=["contribution-left-out", "coordinator-s-own-sum"])
def test_coordinator_leaves_a_node_out_of_the_sum(fed, tamper, said):
    """(i) The sum the release node decrypts leaves the victim out, while the release
    task names every contributor: the released result differs from the genuine one by
    the victim's exact share."""
    run_attack(fed, tamper, said)


@pytest.mark.parametrize(("tamper", "said"), [
    (other_job_with_its_attestation, "the attestation of {victim}'s contribution is of "
                                     "job {other}, not of this job"),
    (other_job_under_this_attestation, "the ciphertext given as {victim}'s is not the "
                                       "one its attestation names"),
], ids=["with-its-own-attestation", "under-this-job-s-attestation"])
def test_coordinator_substitutes_another_job_s_ciphertext(fed, tamper, said):
    """(ii) The victim's ciphertext of another job of the study (same layout, a filter)
    stands in for its contribution to this one."""
    run_attack(fed, tamper, said)


@pytest.mark.parametrize(("tamper", "said"), [
    (the_victim_twice, "carries two contributions of {victim} (one attestation per node)"),
    (the_victim_named_twice, "names contributor {victim} twice"),
], ids=["contribution-twice", "contributor-named-twice"])
def test_coordinator_counts_a_node_twice(fed, tamper, said):
    """(iii) The victim's ciphertext summed twice: the result differs from the genuine
    one by the victim's share."""
    run_attack(fed, tamper, said)


@pytest.mark.parametrize(("tamper", "said"), [
    (altered_attestation, "the signature of {victim}'s attestation does not verify: it "
                          "was altered after {victim} signed it"),
    (attestation_by_the_coordinator, "the attestation of {victim}'s contribution is "
                                     "signed with the certificate of coordinator "
                                     "'coordinator', not of node '{victim}'"),
    (attestation_by_an_outsider, "the attestation of {victim}'s contribution is signed "
                                 "with the certificate of node 'outsider', not of node "
                                 "'{victim}'"),
    (attestation_by_another_contributor, "the attestation of {victim}'s contribution is "
                                         "signed with the certificate of node "
                                         "'{colluder}', not of node '{victim}'"),
], ids=["altered", "signed-by-coordinator", "signed-by-outsider-node",
        "signed-by-another-contributor"])
def test_coordinator_forges_an_attestation(fed, tamper, said):
    """(iv) Another job's ciphertext of the victim's, under an attestation the
    coordinator altered to name it, or signed anew (by itself, a node outside the study,
    a colluding contributor)."""
    run_attack(fed, tamper, said)


def test_coordinator_lowers_the_k_it_reports(fed):
    """The release node used to take k and the fewest contributors from the coordinator;
    the contributors now attest their own, and a task that reports less is refused."""
    core = fed.nodes[fed.victim]  # the victim's officer asks for k = 10
    core.gate.policies.set(core.registry.get("penguins").record, "min_cell_count: 10\n",
                           "k.yaml", "officer")
    fed.tampering = False
    deviate_at_release(fed, lowered_k)
    _, genuine = fed.run(job(EXACT))
    k = genuine["meta"]["k"]
    assert k == 10
    fed.tampering = True
    job_id = fed.submit(job(EXACT))
    if fed.wait(job_id).status == JobStatus.DONE:
        rules = fed.result_json(job_id)["provenance"]["rules"]
        pytest.fail(f"the release node released job {job_id} under k = {rules['k']}, "
                    f"fewest contributors {rules['min_contributors']} (the nodes' "
                    f"policies ask k = {k})")
    assert_release_refused(fed, job_id, f"the task reports k = 1, the contributors "
                                        f"attest k = {k}")


def test_a_genuine_result_lists_every_contributor_s_attested_dataset_and_audit_head(
        fed, monkeypatch):
    """Each contributor's dataset sha256 in the signed provenance is the sha256 of the
    file that node holds, its audit head is in that node's chain (the entry recording
    the release of its contribution), and `scifed job result --verify` checks every
    attestation and shows them."""
    import hashlib

    job_id, _ = genuine_job(fed, NOISED)
    doc, verified = researcher_opens(fed, job_id, as_submitted(job(NOISED)))
    prov = verified.provenance
    assert sorted(prov["attestations"]) == sorted(prov["audit_heads"]) == sorted(ISLANDS)
    for node in ISLANDS:
        core = fed.nodes[node]
        row = core.studies.attached(fed.study_id, "penguins")
        held = hashlib.sha256(core.registry.data_path(row.dataset_id).read_bytes())
        assert prov["datasets"][node]["sha256"] == held.hexdigest(), node
        head = prov["audit_heads"][node]
        entry = {e.seq: e for e in core.audit.entries()}[head["seq"]]
        assert entry.hash == head["hash"]
        assert (entry.action, entry.details["job_id"]) == ("task.release", job_id)
        statement = prov["attestations"][node]["statement"]
        assert statement["dp"] == prov["dp"][node] and statement["stage"] == "compute"
    assert dict(verified.attested).keys() == set(ISLANDS)

    monkeypatch.setattr(cli.researcher, "_client",
                        lambda identity: InMemoryResearcher(fed, job(NOISED)))

    def scifed_job_result(*args: str) -> tuple[int, str]:
        out = CliRunner().invoke(cli.researcher.job_app, ["result", job_id, *args])
        return out.exit_code, " ".join(out.output.split())

    code, said = scifed_job_result("--verify")
    assert code == 0, said
    assert "each contributor's attestation of its contribution checked (3 signatures" in said
    assert "contributions (each attested by its node, signature checked)" in said
    for node in ISLANDS:
        assert prov["datasets"][node]["sha256"][:16] in said
        assert f"#{prov['audit_heads'][node]['seq']} " in said
    code, said = scifed_job_result("--verify", "--json")
    assert code == 0 and sorted(json.loads(said)["attested"]) == sorted(ISLANDS)

    # a release node that signs a provenance with a contributor's attestation altered
    # (here: the dataset hash it names) is caught by the researcher's check of it
    signer = verified.signer
    victim = next(n for n in ISLANDS if n != signer)
    forged = json.loads(json.dumps(doc))
    forged["provenance"]["attestations"][victim]["statement"]["dataset"]["sha256"] = "0" * 64
    forged["provenance"]["datasets"][victim]["sha256"] = "0" * 64
    tls = fed.nodes[signer].cfg.tls
    store_result(fed, job_id, sign_result(forged, node=signer, cert_path=tls.cert,
                                          key_path=tls.key))
    code, said = scifed_job_result("--verify")
    assert code == 1, said
    assert (f"the signature of {victim}'s attestation does not verify: it was altered "
            f"after {victim} signed it") in said
    # and one that leaves a contributor's attestation out
    dropped = json.loads(json.dumps(doc))
    del dropped["provenance"]["attestations"][victim]
    store_result(fed, job_id, sign_result(dropped, node=signer, cert_path=tls.cert,
                                          key_path=tls.key))
    code, said = scifed_job_result("--verify")
    assert code == 1 and f"signed attestations of {', '.join(sorted(set(ISLANDS) - {victim}))}" \
        f", but names contributors {', '.join(sorted(ISLANDS))}" in said, said


QUANTILES = {"columns": ["body_mass_g"], "quantiles": {"body_mass_g": [0.5]}}


def in_a_further_round(change):
    """A tamper of the release tasks of later rounds only (the exact quantile search
    sums one more set of counts per round); ``change(fed, request, held)`` gets every
    round contribution of the victim the coordinator received so far."""
    held: list = []

    def tamper(fed, run, request, computed):
        if request.state is None:
            return request
        mine = next(c for c in request.contributions if c.node == fed.victim)
        held.append(mine)
        return change(fed, request, held)

    return tamper


def round_without_the_victim(fed, request, held):
    return request.model_copy(update={"contributions": [
        c for c in request.contributions if c.node != fed.victim]})


def round_with_an_earlier_round_s_answer(fed, request, held):
    if len(held) < 2:
        return request
    return request.model_copy(update={"contributions": [
        held[0] if c.node == fed.victim else c for c in request.contributions]})


@pytest.mark.parametrize(("change", "said"), [
    (round_without_the_victim, "names {victim} as a contributor, but carries no "
                               "contribution of it"),
    (round_with_an_earlier_round_s_answer, "the attestation of {victim}'s contribution "
                                           "names round 1, not 2 as this release"),
], ids=["left-out", "an-earlier-round-s-answer"])
def test_coordinator_deviates_in_a_further_round(fed, change, said):
    """The exact quantile search runs further rounds of sums of counts: each round's
    contributions are attested for the query the release node sealed for that round, so
    a round's sum leaving the victim out, or with its answer to an earlier round, is
    refused as the compute's would be. (Written with the defence: before it, the
    coordinator summed every round itself, as it summed the compute.)"""
    fed.tampering = True
    deviate_at_release(fed, in_a_further_round(change))
    job_id = fed.submit(job(QUANTILES))
    assert fed.wait(job_id).status == JobStatus.FAILED
    assert_release_refused(fed, job_id, said.format(victim=fed.victim))
