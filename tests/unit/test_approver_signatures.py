"""Approver keys and signed decisions: the key file at rest, the canonical statement,
its verification at the node, and the registry of approvers (one person, one key; every
change after the bootstrap countersigned by the officer and the security lead)."""

from __future__ import annotations

import base64
import os
import sqlite3
import stat

import pytest

from cli.common import approver_passphrase
from harness.approvers import (
    Approver,
    countersignatures,
    decide,
    register,
    signed,
    unregister,
)
from node.approvals import Approvals, legacy_approvers_notice
from node.audit import AuditLog
from node.store import NodeStore
from scifed.approver_keys import (
    CHANGE_DOMAIN,
    CHANGE_FIELDS,
    DOMAIN,
    PASSPHRASE_ENV,
    STATEMENT_FIELDS,
    change_statement,
    change_verifies,
    decision_statement,
    fingerprint,
    load_key,
    new_key,
    public_pem,
    sign,
    sign_change,
    statement_bytes,
    verifies,
    write_key,
)
from scifed.chain import canonical
from scifed.errors import NotFound, UserError
from scifed.sealing import canonical_sha256
from scifed.wire import now_ms

PHRASE = b"correct horse battery"
APPROVAL = {"approval_id": "ap-1", "job_id": "job-1", "dataset_id": "urn:sdn:a:ds:x",
            "study_id": "st-1", "spec": {"type": "stats", "stats": {"columns": ["age"]}}}


@pytest.fixture
def approvals(tmp_path) -> Approvals:
    return Approvals(NodeStore(tmp_path / "node.db"), "node-a")


def ask(approvals: Approvals, job: str = "job-1", grade: str = "G5"):
    return approvals.request(job_id=job, dataset_id="ds", study_id="st", job_type="stats",
                             researcher="alice", grade=grade, reason="needs approval",
                             spec={"type": "stats", "job": job})


# -- the key at rest ------------------------------------------------------------------
def test_the_key_is_encrypted_0600_in_a_0700_directory(tmp_path):
    key = new_key()
    path = tmp_path / "keys" / "wang.key"
    write_key(path, key, PHRASE)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    pem = path.read_bytes()
    assert pem.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert PHRASE not in pem
    assert public_pem(load_key(path, PHRASE)) == public_pem(key)
    with pytest.raises(UserError, match="never overwritten"):
        write_key(path, new_key(), PHRASE)


def test_a_wrong_passphrase_or_an_open_key_file_is_one_message(tmp_path):
    path = tmp_path / "k" / "wang.key"
    write_key(path, new_key(), PHRASE)
    with pytest.raises(UserError, match="wrong passphrase for approver key"):
        load_key(path, b"not the passphrase")
    os.chmod(path, 0o644)
    with pytest.raises(UserError, match="readable by other accounts"):
        load_key(path, PHRASE)
    with pytest.raises(UserError, match="cannot read approver key"):
        load_key(tmp_path / "missing.key", PHRASE)
    open_dir = tmp_path / "shared"
    open_dir.mkdir(mode=0o755)
    os.chmod(open_dir, 0o755)
    with pytest.raises(UserError, match="open to other accounts"):
        write_key(open_dir / "wang.key", new_key(), PHRASE)
    assert not (open_dir / "wang.key").exists()


def test_the_passphrase_comes_from_a_file_the_environment_or_not_at_all(tmp_path,
                                                                       monkeypatch):
    monkeypatch.delenv(PASSPHRASE_ENV, raising=False)
    f = tmp_path / "pass"
    f.write_bytes(PHRASE + b"\n")
    assert approver_passphrase(f, new=True) == PHRASE
    monkeypatch.setenv(PASSPHRASE_ENV, "from the environment")
    assert approver_passphrase(None, new=False) == b"from the environment"
    monkeypatch.setenv(PASSPHRASE_ENV, "short")
    with pytest.raises(UserError, match="at least 8 characters"):
        approver_passphrase(None, new=True)
    f.write_bytes(b"\n")
    with pytest.raises(UserError, match="needs a passphrase"):
        approver_passphrase(f, new=False)
    # two countersigners at one terminal: the prompt names whose key it is
    monkeypatch.delenv(PASSPHRASE_ENV)
    asked = []
    monkeypatch.setattr("typer.prompt", lambda text, **kw: asked.append(text) or "typed it")
    assert approver_passphrase(None, new=False, key=tmp_path / "zhao.key") == b"typed it"
    assert asked == [f"passphrase of the approver key {tmp_path / 'zhao.key'}"]


# -- the statement --------------------------------------------------------------------
def statement(**changes) -> dict:
    base = decision_statement(node="node-a", approval=APPROVAL, approver="wang",
                              key="SHA256:ab", approve=True, reason="", expires_ms=None)
    return {**base, **changes}


def test_the_statement_binds_every_field_of_one_decision():
    st = statement()
    assert tuple(sorted(st)) == tuple(sorted(STATEMENT_FIELDS))
    assert st["spec_sha256"] == canonical_sha256(APPROVAL["spec"])
    assert statement_bytes(st) == DOMAIN + canonical(st).encode()
    key = new_key()
    pem = public_pem(key)
    sig = sign(key, st)
    assert verifies(pem, st, sig)
    for field, other in (("node", "node-b"), ("approval_id", "ap-2"), ("job_id", "job-2"),
                         ("dataset_id", "urn:sdn:a:ds:y"), ("study_id", "st-2"),
                         ("spec_sha256", "0" * 64), ("approver", "zhao"),
                         ("key", "SHA256:cd"), ("decision", "deny"), ("reason", "ok"),
                         ("expires_ms", 1)):
        assert not verifies(pem, statement(**{field: other}), sig), field
    assert not verifies(public_pem(new_key()), st, sig)
    assert not verifies(pem, st, sig[:-1] + bytes([sig[-1] ^ 1]))


def test_fingerprints_name_the_public_key():
    key = new_key()
    fp = fingerprint(public_pem(key))
    assert fp.startswith("SHA256:") and len(fp) == 7 + 64
    assert fp == fingerprint(public_pem(key.public_key()))
    assert fp != fingerprint(public_pem(new_key()))
    with pytest.raises(UserError, match="PEM public key"):
        fingerprint("not a key")


# -- verification at the node ---------------------------------------------------------
def test_the_node_checks_the_signature_over_its_own_statement(approvals):
    wang = register(approvals, "wang", "officer")
    a = ask(approvals, grade="G2")
    good = signed(approvals, wang, a.approval_id)
    with pytest.raises(UserError, match="no valid signed statement"):
        approvals.decide(a.approval_id, **{**good, "statement": "{}"})
    with pytest.raises(UserError, match="the signature is not wang's"):
        approvals.decide(a.approval_id, **{**good, "signature": sign(new_key(), {})})
    assert approvals.get(a.approval_id).state == "pending"
    appr = approvals.decide(a.approval_id, **good)
    (d,) = appr.decisions
    assert appr.state == "approved" and (d["by"], d["role"]) == ("wang", "officer")
    assert d["key"] == wang.fingerprint
    assert verifies(public_pem(wang.key), d["statement"], base64.b64decode(d["signature"]))
    entry = AuditLog(approvals.store).entries()[-1]
    assert entry.actor == "wang" and entry.details["key"] == wang.fingerprint


def test_the_role_is_the_registry_s_not_the_caller_s(approvals):
    """A liaison who signs as if an officer (the statement names no role) is a liaison."""
    of, sec = register(approvals, "wang", "officer"), register(approvals, "zhao", "security_lead")
    li = register(approvals, "li", "liaison", countersign=(of, sec))
    a = ask(approvals, grade="G4")
    with pytest.raises(UserError, match="liaison may decide up to G3"):
        decide(approvals, Approver("li", "officer", li.key), a.approval_id)


def test_g5_needs_two_people_with_two_keys(approvals):
    of = register(approvals, "wang", "officer")
    sec = register(approvals, "zhao", "security_lead")
    a = ask(approvals)
    assert decide(approvals, of, a.approval_id).state == "pending"
    assert decide(approvals, sec, a.approval_id).state == "approved"
    # even decisions recorded under two names with one key do not make two approvals
    one = [{"by": "wang", "role": "officer", "key": "SHA256:k", "approve": True,
            "signature": "c2ln"},
           {"by": "zhao", "role": "security_lead", "key": "SHA256:k", "approve": True,
            "signature": "c2ln"}]
    assert Approvals._approved_state("G5", one) == "pending"
    two = [one[0], {**one[1], "key": "SHA256:m"}]
    assert Approvals._approved_state("G5", two) == "approved"
    # a name-only approval an older version recorded does not count
    old = {"by": "wang", "role": "officer", "approve": True, "reason": "", "at_ms": 1}
    assert Approvals._approved_state("G5", [old, two[1]]) == "pending"


# -- the registry ---------------------------------------------------------------------
def test_one_name_one_key_and_a_key_is_registered_once(approvals):
    reg = approvals.registry
    key = new_key()
    wang = register(approvals, "wang", "officer", key, by="root")
    zhao = register(approvals, "zhao", "security_lead")
    both = (wang, zhao)
    with pytest.raises(UserError, match="already an approver"):
        register(approvals, "wang", "security_lead", countersign=both)
    with pytest.raises(UserError, match="already registered to approver wang"):
        register(approvals, "li", "liaison", key, countersign=both)
    for name, role, pem, needle in (("../x", "officer", public_pem(new_key()), "name"),
                                    ("li", "boss", public_pem(new_key()), "role"),
                                    ("li", "officer", "junk", "PEM")):
        with pytest.raises(UserError, match=needle):
            reg.add(name, role, pem, by="root")
    wang2 = register(approvals, "wang2", "officer", countersign=both)
    unregister(approvals, "wang", countersign=(wang2, zhao))
    with pytest.raises(NotFound):
        reg.remove("wang", by="root")
    with pytest.raises(UserError, match=r"already registered to approver wang \(removed"):
        register(approvals, "wang", "officer", key, countersign=(wang2, zhao))  # never again
    again = register(approvals, "wang", "officer", countersign=(wang2, zhao))  # a new key
    assert [p.name for p in reg.list()] == ["zhao", "wang2", "wang"]
    assert [p.added_by for p in reg.list()][-1] == "officer"
    assert len(reg.list(include_removed=True)) == 4 and again.name == "wang"
    assert [e.action for e in AuditLog(approvals.store).entries()] == [
        "approver.add", "approver.add", "approver.add", "approver.remove", "approver.add"]


def test_a_removed_approver_decides_nothing(approvals):
    of, sec = register(approvals, "wang", "officer"), register(approvals, "zhao", "security_lead")
    li = register(approvals, "li", "liaison", countersign=(of, sec))
    a = ask(approvals, grade="G2")
    unregister(approvals, "li", countersign=(of, sec))
    for approve, reason in ((True, ""), (False, "no")):
        with pytest.raises(UserError, match="approver li was removed"):
            decide(approvals, li, a.approval_id, approve=approve, reason=reason)
    assert approvals.get(a.approval_id).state == "pending"


# -- dual control over the registry ---------------------------------------------------
def change(**changes) -> dict:
    base = change_statement(node="node-a", action="add", name="li", role="liaison",
                            key="SHA256:ab", registry={"version": 2, "sha256": "0" * 64},
                            signer="wang", signer_key="SHA256:cd")
    return {**base, **changes}


def test_a_change_statement_binds_every_field_of_one_change_under_its_own_domain():
    st = change()
    assert tuple(sorted(st)) == tuple(sorted(CHANGE_FIELDS))
    assert statement_bytes(st, CHANGE_DOMAIN) == CHANGE_DOMAIN + canonical(st).encode()
    assert CHANGE_DOMAIN != DOMAIN
    key = new_key()
    pem, sig = public_pem(key), sign_change(key, st)
    assert change_verifies(pem, st, sig)
    for field, other in (("node", "node-b"), ("action", "remove"), ("name", "mallory"),
                         ("role", "security_lead"), ("key", "SHA256:ef"),
                         ("registry_version", 3), ("registry_sha256", "1" * 64),
                         ("signer", "zhao"), ("signer_key", "SHA256:ef")):
        assert not change_verifies(pem, change(**{field: other}), sig), field
    # the domains: one signature, one kind of statement, even over the same JSON
    assert not verifies(pem, st, sig)
    assert not change_verifies(pem, st, sign(key, st))
    decision = statement()
    assert not change_verifies(pem, decision, sign(key, decision))
    assert not verifies(pem, decision, sign_change(key, decision))
    with pytest.raises(UserError, match="no registry change 'rename'"):
        change_statement(node="n", action="rename", name="x", role="officer", key="k",
                         registry={"version": 0, "sha256": ""}, signer="s", signer_key="k")


def test_the_first_officer_and_security_lead_are_the_bootstrap_and_nobody_else(approvals):
    reg = approvals.registry
    assert reg.state()["bootstrap"] == ["officer", "security_lead"]
    assert reg.state()["version"] == 0 and reg.state()["node"] == "node-a"
    with pytest.raises(UserError, match=r"countersigned by nobody"):
        register(approvals, "li", "liaison")  # a liaison is never the bootstrap
    of = register(approvals, "wang", "officer")
    assert reg.state()["bootstrap"] == ["security_lead"]
    for name, role in (("wang2", "officer"), ("li", "liaison")):
        with pytest.raises(UserError, match=r"countersigned by wang \(officer\)"):
            register(approvals, name, role, countersign=(of,))
    sec = register(approvals, "zhao", "security_lead")
    assert reg.state()["bootstrap"] == []
    for role in ("officer", "security_lead", "liaison"):
        with pytest.raises(UserError, match="needs the countersignatures of this node's "
                                            "officer and its security lead"):
            register(approvals, f"x-{role}", role)
    register(approvals, "zhou", "security_lead", countersign=(of, sec))
    unregister(approvals, "zhao", countersign=(of, sec))  # zhao signs their own removal
    # zhao's role is no longer open to the bootstrap: it existed
    with pytest.raises(UserError, match="countersigned by nobody"):
        register(approvals, "mallory", "security_lead")
    adds = [e.details for e in AuditLog(approvals.store).entries()
            if e.action in ("approver.add", "approver.remove")]
    assert [(d["name"], d.get("bootstrap"), [c["by"] for c in d["countersigned_by"]])
            for d in adds] == [("wang", True, []), ("zhao", True, []),
                               ("zhou", False, ["wang", "zhao"]),
                               ("zhao", None, ["wang", "zhao"])]
    assert all(c["signature"] and c["key"].startswith("SHA256:")
               for d in adds for c in d["countersigned_by"])


def test_the_last_officer_or_security_lead_is_not_removed(approvals):
    of, sec = register(approvals, "wang", "officer"), register(approvals, "zhao", "security_lead")
    for name, role in (("wang", "officer"), ("zhao", "security_lead")):
        with pytest.raises(UserError, match=f"{name} is this node's only {role}"):
            unregister(approvals, name, countersign=(of, sec))
    li = register(approvals, "li", "liaison", countersign=(of, sec))
    unregister(approvals, "li", countersign=(of, sec))  # a liaison: not needed for G5
    assert [(p.name, p.role) for p in approvals.registry.list()] == [
        ("wang", "officer"), ("zhao", "security_lead")]
    assert li.name == "li"


def test_every_change_moves_the_registry_s_version_and_hash(approvals):
    reg = approvals.registry
    seen = [reg.state()]
    of = register(approvals, "wang", "officer")
    seen.append(reg.state())
    sec = register(approvals, "zhao", "security_lead")
    seen.append(reg.state())
    register(approvals, "li", "liaison", countersign=(of, sec))
    seen.append(reg.state())
    unregister(approvals, "li", countersign=(of, sec))
    seen.append(reg.state())
    assert [s["version"] for s in seen] == [0, 1, 2, 3, 4]
    assert len({s["sha256"] for s in seen}) == 5
    stale = countersignatures(approvals, (of, sec), "add", "liu", "liaison", "SHA256:x")
    liu = register(approvals, "liu", "liaison", countersign=(of, sec))
    with pytest.raises(UserError, match="made for the registry at version 4"):
        approvals.registry.remove("liu", by="root", countersignatures=[
            {**c, "statement": c["statement"].replace('"add"', '"remove"')} for c in stale])
    assert liu.name in [p.name for p in reg.list()]


def test_an_older_database_gains_the_registry(tmp_path):
    path = tmp_path / "node.db"
    NodeStore(path)
    with sqlite3.connect(path) as con:  # as a node before approver keys left it
        con.execute("DROP INDEX approvers_active_name")
        con.execute("DROP TABLE approvers")
    approvals = Approvals(NodeStore(path), "node-a")
    register(approvals, "wang", "officer")
    with pytest.raises(sqlite3.IntegrityError):  # the database itself: one active name
        with approvals.store.tx() as con:
            con.execute("INSERT INTO approvers (name, role, public_key, fingerprint, "
                        "added_by, added_ms) VALUES ('wang','officer','k','f','x',?)",
                        (now_ms(),))


def test_node_yaml_approvers_are_named_at_start_and_approve_nothing():
    assert legacy_approvers_notice({}) == ""
    text = legacy_approvers_notice({"wang": "officer", "zhao": "security_lead"})
    assert "no longer approve anything" in text
    assert "`scifed node approver add zhao --role security_lead`" in text
