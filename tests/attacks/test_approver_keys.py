"""Approvers are people with keys: a G5 task needs the officer AND the security lead,
two registered approvers with distinct keys, and the registry of approvers changes only
with both their countersignatures (after the first officer and security lead). The
attacker is one shell on the node's host (the officer's account, which can open the
admin socket, and often holds the officer's key) trying to give both approvals itself,
to register a second person it made up, or to make one signature count where it was not
given. Each attack
runs a G5 / CONDITIONAL job (DP, three nodes) through the real pipeline on the
in-memory federation, and must end with nothing approved, nothing computed or
released, and no ε charged."""

from __future__ import annotations

import json
import time

import pytest
import staff
import yaml
from staff import NODES, federation, stats

from harness.approvers import (
    AdminShell,
    Approver,
    Refused,
    countersignatures,
    on_the_wire,
    register,
    request,
    signed,
)
from node.audit import AuditLog
from node.budget import BudgetLedger
from protos.scifed.v1 import node_admin_pb2 as pb
from scifed.approver_keys import new_key, sign, sign_change
from scifed.wire import now_ms

STAFF_META = staff.staff_meta
G5_JOB = stats(columns=["age"], measures=["count", "mean"], dp={"bounds": {"age": [18, 70]}})


def g5_meta(grade: str = "G5", category: str = "CONDITIONAL") -> dict:
    """The staff table graded G5: the grading record and approvals a G5 record needs."""
    meta = STAFF_META(grade, category)
    example = yaml.safe_load((staff.REPO / "configs" / "datasets" /
                              "contraception.yaml").read_text())
    meta["grade_assessment"] = example["grade_assessment"]
    meta["approvals"] = example["approvals"]
    return meta


@pytest.fixture
def g5(tmp_path, monkeypatch):
    monkeypatch.setattr(staff, "staff_meta", g5_meta)
    fed, _ = federation(tmp_path, grade="G5", category="CONDITIONAL", min_nodes=3)
    yield fed
    fed.__exit__(None, None, None)


def held(fed, job_id: str, timeout: float = 30) -> dict:
    """The job's pending request at every node, once each node has put it in its queue."""
    deadline = time.monotonic() + timeout
    while True:
        found = {n: a for n, core in fed.nodes.items() for a in core.approvals.list("pending")
                 if a.job_id == job_id}
        if len(found) == len(NODES):
            return found
        assert time.monotonic() < deadline, fed.job(job_id)
        time.sleep(0.02)


def assert_nothing_given(fed, job_id: str, settle: float = 1.0) -> None:
    """No node approved, computed, released or charged anything for the job."""
    time.sleep(settle)  # give a wrongly approved task time to run
    view = fed.job(job_id)
    assert view.status != "done", view
    for node, core in fed.nodes.items():
        states = {a.state for a in core.approvals.list() if a.job_id == job_id}
        assert "approved" not in states, (node, states)
        actions = [e.action for e in AuditLog(core.store).entries()
                   if e.details.get("job_id") == job_id]
        assert not {"task.allow", "task.release", "budget.reserve",
                    "budget.charge"} & set(actions), (node, actions)
        assert BudgetLedger(core.store).spent() == [], node


def test_one_shell_cannot_approve_g5_as_officer_and_security_lead_by_name(g5):
    """The old way: node.yaml `approvers:` named wang (officer) and zhao (security lead),
    and the approver was whoever the shell said (`--as NAME`, $SCIFED_ACTOR). One shell
    said both names, the G5 tasks were approved, computed, released and charged."""
    for core in g5.nodes.values():  # what node.yaml `approvers:` configured
        core.approvals.approvers = {"wang": "officer", "zhao": "security_lead"}
    job_id = g5.submit(G5_JOB)
    refusals = []
    for node, req in held(g5, job_id).items():
        shell = AdminShell(g5, node)
        for name in ("wang", "zhao"):
            try:
                shell("ApprovalDecide", pb.ApprovalDecision(
                    approval_id=req.approval_id, approve=True, by=name))
            except Refused as exc:
                refusals.append(str(exc))
    assert_nothing_given(g5, job_id)
    assert len(refusals) == 2 * len(NODES)
    assert all("must be signed with the approver's own key" in r for r in refusals)


def refused(shell: AdminShell, method: str, req, needle: str) -> str:
    """The shell's call is refused with one message that says ``needle``."""
    with pytest.raises(Refused) as exc:
        shell(method, req)
    assert needle in str(exc.value), str(exc.value)
    return str(exc.value)


def people(fed, *, one_key_each: bool = False) -> dict[str, dict[str, Approver]]:
    """At every node, wang (officer) and zhao (security lead), each with their own key,
    which the attacking shell does not hold (a key per node, or with ``one_key_each``
    the same key of each person at every node)."""
    keys = {"wang": new_key(), "zhao": new_key()} if one_key_each else {}
    return {n: {"wang": register(core.approvals, "wang", "officer", keys.get("wang")),
                "zhao": register(core.approvals, "zhao", "security_lead", keys.get("zhao"))}
            for n, core in fed.nodes.items()}


def test_the_officer_and_the_security_lead_with_their_own_keys_approve_g5(g5):
    """The control: two registered people, each signing with their own key, give a G5
    task its two approvals, and the nodes compute (and charge ε). The result then waits
    for the output review G5 results need (node/review.py)."""
    staff_ = people(g5)
    job_id = g5.submit(G5_JOB)
    for node, req in held(g5, job_id).items():
        shell, approvals = AdminShell(g5, node), g5.nodes[node].approvals
        first = shell("ApprovalDecide", request(req.approval_id, signed(
            approvals, staff_[node]["wang"], req.approval_id)))
        assert '"state": "pending"' in first.json
        shell("ApprovalDecide", request(req.approval_id, signed(
            approvals, staff_[node]["zhao"], req.approval_id)))
        appr = approvals.get(req.approval_id)
        assert appr.state == "approved"
        assert [(d["by"], d["role"], d["key"]) for d in appr.decisions] == [
            ("wang", "officer", staff_[node]["wang"].fingerprint),
            ("zhao", "security_lead", staff_[node]["zhao"].fingerprint)]
    deadline = time.monotonic() + 60
    while g5.job(job_id).phase.name != "in output review":
        assert time.monotonic() < deadline and not g5.job(job_id).status.stopped, \
            g5.job(job_id)
        time.sleep(0.05)
    assert [r.job_id for r in g5.nodes["alpha"].reviews.list("pending")] == [job_id]
    for node, core in g5.nodes.items():
        entries = [e for e in AuditLog(core.store).entries()
                   if e.action == "approval.approve" and e.details["job_id"] == job_id]
        assert [(e.actor, e.details["role"], e.details["key"]) for e in entries] == [
            ("wang", "officer", staff_[node]["wang"].fingerprint),
            ("zhao", "security_lead", staff_[node]["zhao"].fingerprint)]
        assert all(e.details["signature"] for e in entries)
        assert BudgetLedger(core.store).spent()  # computed, so charged


def test_one_key_cannot_count_twice_under_two_names(g5):
    """The shell holds wang's key (the officer's own account) and tries to make it count
    as the security lead too: registering it again under another name, signing under a
    name that has no key here, signing twice as wang."""
    job_id = g5.submit(G5_JOB)
    for node, req in held(g5, job_id).items():
        shell, approvals = AdminShell(g5, node), g5.nodes[node].approvals
        wang = register(approvals, "wang", "officer")
        refused(shell, "ApproverAdd", pb.ApproverAddRequest(
            name="zhao", role="security_lead", public_key_pem=public(wang)),
            "already registered to approver wang")
        shell("ApprovalDecide", request(req.approval_id, signed(approvals, wang,
                                                                req.approval_id)))
        as_zhao = Approver("zhao", "security_lead", wang.key)
        refused(shell, "ApprovalDecide", request(req.approval_id, signed(
            approvals, as_zhao, req.approval_id)), "'zhao' is not a registered approver")
        refused(shell, "ApprovalDecide", request(req.approval_id, signed(
            approvals, wang, req.approval_id)), "wang (key SHA256:")
        assert approvals.get(req.approval_id).state == "pending"
        assert [a.name for a in approvals.registry.list()] == ["wang"]
    assert_nothing_given(g5, job_id)


def public(person: Approver) -> str:
    from scifed.approver_keys import public_pem

    return public_pem(person.key)


def test_a_signature_does_not_carry_over_to_another_approval(g5):
    """wang and zhao signed their approvals of one job (the shell saw them go by, and
    keeps them from the node); it replays them onto another job's request at the same
    node, and onto the same job's request at another node (where they hold the same
    keys)."""
    staff_ = people(g5, one_key_each=True)
    first = g5.submit(G5_JOB)
    first_held = held(g5, first)
    second = g5.submit(G5_JOB)
    for node, req in held(g5, second).items():
        shell, approvals = AdminShell(g5, node), g5.nodes[node].approvals
        for name in ("wang", "zhao"):
            seen = signed(approvals, staff_[node][name], first_held[node].approval_id)
            refused(shell, "ApprovalDecide", request(req.approval_id, seen),
                    f"made for approval '{first_held[node].approval_id}'")
    alpha = g5.nodes["alpha"].approvals
    for name in ("wang", "zhao"):
        seen = signed(alpha, staff_["alpha"][name], first_held["alpha"].approval_id)
        refused(AdminShell(g5, "beta"), "ApprovalDecide",
                request(first_held["beta"].approval_id, seen), "at node 'alpha'")
    assert_nothing_given(g5, first)
    assert_nothing_given(g5, second, settle=0)


def test_an_unregistered_key_approves_nothing(g5):
    """The shell makes its own key and signs with it as zhao (a registered name whose key
    it does not hold), and as someone the node never registered."""
    people(g5)
    job_id = g5.submit(G5_JOB)
    for node, req in held(g5, job_id).items():
        shell, approvals = AdminShell(g5, node), g5.nodes[node].approvals
        mine = new_key()
        refused(shell, "ApprovalDecide", request(req.approval_id, signed(
            approvals, Approver("zhao", "security_lead", mine), req.approval_id)),
            "the decision differs from what was signed (key:")
        forged = signed(approvals, Approver("zhao", "security_lead", mine), req.approval_id)
        forged["statement"] = signed(approvals, people_key(approvals, "zhao"),
                                     req.approval_id)["statement"]
        refused(shell, "ApprovalDecide", request(req.approval_id, forged),
                "the signature is not zhao's")
        refused(shell, "ApprovalDecide", request(req.approval_id, signed(
            approvals, Approver("mallory", "security_lead", mine), req.approval_id)),
            "'mallory' is not a registered approver")
    assert_nothing_given(g5, job_id)


def people_key(approvals, name: str) -> Approver:
    """A stand-in with the registered name and fingerprint but not the key: the statement
    the registered person would sign (the shell can write it; it cannot sign it)."""
    (person,) = [p for p in approvals.registry.list() if p.name == name]

    class _Public(Approver):
        @property
        def fingerprint(self) -> str:
            return person.fingerprint

    return _Public(name, person.role, new_key())


def test_a_removed_approver_approves_nothing(g5):
    """zhao left the unit and was removed (zhou, their successor, registered first: both
    changes countersigned); the shell still has a copy of zhao's key (and passphrase)
    and signs with it, and tries to register that key again."""
    staff_ = people(g5)
    job_id = g5.submit(G5_JOB)
    for node, req in held(g5, job_id).items():
        shell, approvals = AdminShell(g5, node), g5.nodes[node].approvals
        wang, zhou = staff_[node]["wang"], Approver("zhou", "security_lead", new_key())
        shell("ApproverAdd", add_request(approvals, zhou, (wang, staff_[node]["zhao"])))
        shell("ApproverRemove", remove_request(approvals, "zhao", (wang, zhou)))
        shell("ApprovalDecide", request(req.approval_id, signed(
            approvals, staff_[node]["wang"], req.approval_id)))
        refused(shell, "ApprovalDecide", request(req.approval_id, signed(
            approvals, staff_[node]["zhao"], req.approval_id)), "approver zhao was removed")
        refused(shell, "ApproverAdd", pb.ApproverAddRequest(
            name="zhao2", role="security_lead", public_key_pem=public(staff_[node]["zhao"])),
            "already registered to approver zhao (removed")
        assert approvals.get(req.approval_id).state == "pending"
        actions = [e.action for e in AuditLog(g5.nodes[node].store).entries()]
        assert actions.count("approver.add") == 3 and actions.count("approver.remove") == 1
    assert_nothing_given(g5, job_id)


def test_a_tampered_reason_expiry_or_decision_is_refused(g5):
    """The shell changes what wang and zhao signed: a longer expiry (or none), another
    reason, a denial turned into an approval; or changes the statement along with it."""
    staff_ = people(g5)
    job_id = g5.submit(G5_JOB)
    day = 86_400_000
    for node, req in held(g5, job_id).items():
        shell, approvals = AdminShell(g5, node), g5.nodes[node].approvals
        wang, zhao = staff_[node]["wang"], staff_[node]["zhao"]
        aid = req.approval_id
        good = signed(approvals, wang, aid, expires_ms=now_ms() + day)
        for expires in (now_ms() + 30 * day, None):
            refused(shell, "ApprovalDecide", request(aid, {**good, "expires_ms": expires}),
                    "differs from what was signed (expires_ms: signed")
        refused(shell, "ApprovalDecide", request(aid, {**good, "reason": "fine by me"}),
                "differs from what was signed (reason: signed ''")
        longer = signed(approvals, wang, aid, expires_ms=now_ms() + 30 * day)
        refused(shell, "ApprovalDecide", request(aid, {**good, "expires_ms": longer[
            "expires_ms"], "statement": longer["statement"]}), "the signature is not wang's")
        no = signed(approvals, zhao, aid, approve=False, reason="purpose unclear")
        refused(shell, "ApprovalDecide", request(aid, {**no, "approve": True, "reason": ""}),
                "differs from what was signed (decision: signed 'deny', sent 'approve'")
        assert approvals.get(aid).state == "pending" and not approvals.get(aid).decisions
    assert_nothing_given(g5, job_id)



# -- dual control over the registry ---------------------------------------------------
def add_request(approvals, person: Approver, countersign=(), sigs=None) -> pb.ApproverAddRequest:
    """`scifed node approver add` of ``person`` as the socket carries it, countersigned by
    ``countersign`` (or with the countersignatures ``sigs``, as the shell has them)."""
    if sigs is None:
        sigs = countersignatures(approvals, countersign, "add", person.name, person.role,
                                 person.fingerprint)
    return pb.ApproverAddRequest(name=person.name, role=person.role,
                                 public_key_pem=public(person),
                                 countersignatures=on_the_wire(sigs))


def remove_request(approvals, name: str, countersign=(), sigs=None) -> pb.ApproverRemoveRequest:
    if sigs is None:
        (p,) = [p for p in approvals.registry.list() if p.name == name]
        sigs = countersignatures(approvals, countersign, "remove", name, p.role,
                                 p.fingerprint)
    return pb.ApproverRemoveRequest(name=name, countersignatures=on_the_wire(sigs))


def registry(approvals) -> list[tuple[str, str]]:
    return [(p.name, p.role) for p in approvals.registry.list()]


def attempt(shell: AdminShell, method: str, req) -> str | None:
    """The shell's call: None if the node took it, else its refusal."""
    try:
        shell(method, req)
    except Refused as exc:
        return str(exc)
    return None


def test_one_shell_with_the_officers_key_cannot_register_a_second_person(g5):
    """The shell is the officer's account: it holds wang's key (and passphrase), and can
    open the admin socket. zhao, the real security lead, is registered and holds their
    own key. The shell registers a security lead it made up (mallory, with a key it
    made): without countersignatures, countersigned by wang alone, by wang twice, by wang
    and mallory; then approves the G5 task as wang and as mallory. (Before dual control
    over the registry, the plain registration was taken, and every node approved,
    computed, released and charged the task.)"""
    staff_ = people(g5)
    job_id = g5.submit(G5_JOB)
    for node, req in held(g5, job_id).items():
        shell, approvals = AdminShell(g5, node), g5.nodes[node].approvals
        wang = staff_[node]["wang"]
        mallory = Approver("mallory", "security_lead", new_key())
        for countersign, needle in (
                ((), "countersigned by nobody"),
                ((wang,), "countersigned by wang (officer)"),
                ((wang, wang), "wang countersigned twice"),
                ((wang, mallory), "'mallory' is not a registered approver")):
            why = attempt(shell, "ApproverAdd", add_request(approvals, mallory, countersign))
            assert why is not None and needle in why, why
        shell("ApprovalDecide", request(req.approval_id, signed(approvals, wang,
                                                                req.approval_id)))
        refused(shell, "ApprovalDecide", request(req.approval_id, signed(
            approvals, mallory, req.approval_id)), "'mallory' is not a registered approver")
        assert approvals.get(req.approval_id).state == "pending"
        assert registry(approvals) == [("wang", "officer"), ("zhao", "security_lead")]
        actions = [e.action for e in AuditLog(g5.nodes[node].store).entries()]
        assert actions.count("approver.add") == 2
    assert_nothing_given(g5, job_id)


def test_a_countersignature_does_not_carry_over_to_another_change(g5):
    """wang and zhao countersigned one change (liaison li's registration; the shell saw
    the signatures go by, the same keys at every node). The shell replays them onto
    another change (mallory as security lead, with or without the statement rewritten),
    onto the same change at another node, and onto the registry after it moved on (a
    change they signed but was not sent before another was made)."""
    staff_ = people(g5, one_key_each=True)
    job_id = g5.submit(G5_JOB)
    li = Approver("li", "liaison", new_key())
    mallory = Approver("mallory", "security_lead", new_key())
    alpha = g5.nodes["alpha"].approvals
    seen_at_alpha = countersignatures(alpha, list(staff_["alpha"].values()), "add", "li",
                                      "liaison", li.fingerprint)
    for node, req in held(g5, job_id).items():
        shell, approvals = AdminShell(g5, node), g5.nodes[node].approvals
        both = list(staff_[node].values())
        seen = countersignatures(approvals, both, "add", "li", "liaison", li.fingerprint)
        refused(shell, "ApproverAdd", add_request(approvals, mallory, sigs=seen),
                "the change differs from what wang countersigned (name: signed 'li', "
                "sent 'mallory'")
        # the statement the shell writes for mallory, under li's signatures
        written = countersignatures(approvals, both, "add", "mallory", "security_lead",
                                    mallory.fingerprint)
        rewritten = [{**s, "statement": w["statement"]}
                     for s, w in zip(seen, written, strict=True)]
        refused(shell, "ApproverAdd", add_request(approvals, mallory, sigs=rewritten),
                "the countersignature is not wang's")
        if node != "alpha":
            refused(shell, "ApproverAdd", add_request(approvals, li, sigs=seen_at_alpha),
                    "countersignature was made for node 'alpha'")
        # signed for the registry as it was: another change came first
        stale = countersignatures(approvals, both, "add", "mallory", "security_lead",
                                  mallory.fingerprint)
        shell("ApproverAdd", add_request(approvals, li, sigs=seen))  # the change they signed
        refused(shell, "ApproverAdd", add_request(approvals, mallory, sigs=stale),
                "made for the registry at version 2")
        refused(shell, "ApproverRemove", remove_request(approvals, "li", sigs=seen),
                "made for the registry at version 2")  # li's registration, as li's removal
        assert registry(approvals) == [("wang", "officer"), ("zhao", "security_lead"),
                                       ("li", "liaison")]
        shell("ApprovalDecide", request(req.approval_id, signed(
            approvals, staff_[node]["wang"], req.approval_id)))
        refused(shell, "ApprovalDecide", request(req.approval_id, signed(
            approvals, mallory, req.approval_id)), "'mallory' is not a registered approver")
    assert_nothing_given(g5, job_id)


def test_a_removed_approvers_countersignature_counts_for_nothing(g5):
    """zhao left: zhou became security lead (countersigned by wang and zhao) and zhao was
    removed (by wang and zhou). The shell holds wang's key and still a copy of zhao's:
    it countersigns mallory's registration, and a removal of li (a liaison), with the
    two."""
    staff_ = people(g5)
    job_id = g5.submit(G5_JOB)
    for node, req in held(g5, job_id).items():
        shell, approvals = AdminShell(g5, node), g5.nodes[node].approvals
        wang, zhao = staff_[node]["wang"], staff_[node]["zhao"]
        zhou = Approver("zhou", "security_lead", new_key())
        shell("ApproverAdd", add_request(approvals, Approver("li", "liaison", new_key()),
                                         (wang, zhao)))
        shell("ApproverAdd", add_request(approvals, zhou, (wang, zhao)))
        shell("ApproverRemove", remove_request(approvals, "zhao", (wang, zhou)))
        mallory = Approver("mallory", "security_lead", new_key())
        refused(shell, "ApproverAdd", add_request(approvals, mallory, (wang, zhao)),
                "approver zhao was removed")
        refused(shell, "ApproverRemove", remove_request(approvals, "li", (wang, zhao)),
                "approver zhao was removed")
        for person, needle in ((wang, None), (mallory, "'mallory' is not a registered"),
                               (zhao, "approver zhao was removed")):
            why = attempt(shell, "ApprovalDecide", request(req.approval_id, signed(
                approvals, person, req.approval_id)))
            assert (why is None) if needle is None else (needle in why), why
        assert approvals.get(req.approval_id).state == "pending"
        assert registry(approvals) == [("wang", "officer"), ("li", "liaison"),
                                       ("zhou", "security_lead")]
    assert_nothing_given(g5, job_id)


def test_one_approver_alone_removes_nobody(g5):
    """The shell holds wang's key: it removes zhao (the node's only security lead, so
    that the bootstrap might open again), then, with a second security lead (zhou)
    registered, removes zhao and zhou with no countersignature, wang's alone, wang's
    twice; and removes wang, the only officer."""
    staff_ = people(g5)
    job_id = g5.submit(G5_JOB)
    for node, req in held(g5, job_id).items():
        shell, approvals = AdminShell(g5, node), g5.nodes[node].approvals
        wang, zhao = staff_[node]["wang"], staff_[node]["zhao"]
        for countersign in ((), (wang,), (wang, zhao)):
            refused(shell, "ApproverRemove", remove_request(approvals, "zhao", countersign),
                    "zhao is this node's only security_lead")
        refused(shell, "ApproverRemove", remove_request(approvals, "wang", (wang, zhao)),
                "wang is this node's only officer")
        zhou = Approver("zhou", "security_lead", new_key())
        shell("ApproverAdd", add_request(approvals, zhou, (wang, zhao)))
        for name in ("zhao", "zhou"):
            for countersign, needle in (((), "countersigned by nobody"),
                                        ((wang,), "countersigned by wang (officer)"),
                                        ((wang, wang), "wang countersigned twice")):
                refused(shell, "ApproverRemove",
                        remove_request(approvals, name, countersign), needle)
        refused(shell, "ApproverAdd", add_request(
            approvals, Approver("mallory", "security_lead", new_key()), (wang,)),
            "countersigned by wang (officer)")
        assert registry(approvals) == [("wang", "officer"), ("zhao", "security_lead"),
                                       ("zhou", "security_lead")]
        shell("ApprovalDecide", request(req.approval_id, signed(approvals, wang,
                                                                req.approval_id)))
        assert approvals.get(req.approval_id).state == "pending"
    assert_nothing_given(g5, job_id)


def test_an_approval_decision_is_no_countersignature_nor_the_other_way_round(g5):
    """Domain separation: the shell has wang's and zhao's signed approvals of a G5 task
    (it saw them go by) and offers them as countersignatures of mallory's registration,
    with their own statements and with the registry change's; it has wang sign, with the
    approval tool, the very dict of that change (so the same canonical JSON, under the
    decision domain); and it offers wang's countersignature of a change as a decision."""
    staff_ = people(g5)
    job_id = g5.submit(G5_JOB)
    for node, req in held(g5, job_id).items():
        shell, approvals = AdminShell(g5, node), g5.nodes[node].approvals
        both = list(staff_[node].values())
        mallory = Approver("mallory", "security_lead", new_key())
        decisions = [signed(approvals, p, req.approval_id) for p in both]
        as_is = [{"by": d["by"], "statement": d["statement"], "signature": d["signature"]}
                 for d in decisions]
        refused(shell, "ApproverAdd", add_request(approvals, mallory, sigs=as_is),
                "no valid registry-change statement")
        change = countersignatures(approvals, both, "add", "mallory", "security_lead",
                                   mallory.fingerprint)
        swapped = [{**c, "signature": d["signature"]}
                   for c, d in zip(change, decisions, strict=True)]
        refused(shell, "ApproverAdd", add_request(approvals, mallory, sigs=swapped),
                "the countersignature is not wang's")
        same_dict = [{**c, "signature": sign(p.key, json.loads(c["statement"]))}
                     for c, p in zip(change, both, strict=True)]
        refused(shell, "ApproverAdd", add_request(approvals, mallory, sigs=same_dict),
                "the countersignature is not wang's")
        wang_decision = signed(approvals, staff_[node]["wang"], req.approval_id)
        as_change = sign_change(staff_[node]["wang"].key,
                                json.loads(wang_decision["statement"]))
        refused(shell, "ApprovalDecide", request(req.approval_id, {
            **wang_decision, "signature": as_change}), "the signature is not wang's")
        assert registry(approvals) == [("wang", "officer"), ("zhao", "security_lead")]
        assert approvals.get(req.approval_id).state == "pending"
    assert_nothing_given(g5, job_id)
