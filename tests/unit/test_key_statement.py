"""The lead's signed study-key statement: made, sealed beside, checked by a member."""

from __future__ import annotations

import dataclasses
import hashlib
import time
from pathlib import Path

import pytest

from scifed.errors import UserError
from scifed.he import StudyKey
from scifed.pki import init_ca, make_key_and_csr, revoke, sign_csr, verify_certificate
from scifed.sealing import (
    KeyStatement,
    SignedKeyShare,
    check_signature,
    ensure_seal_key,
    load_seal_key,
    membership_hash,
    open_key_share,
    seal,
    sign_key_shares,
    verify_key_share,
)

NODES = ("lead", "member", "third")
STUDY = "st-1"


@pytest.fixture(scope="module")
def key() -> StudyKey:
    return StudyKey.generate()


@pytest.fixture
def pki(tmp_path: Path) -> dict:
    """A CA and three enrolled nodes, each with its seal key."""
    ca = tmp_path / "ca"
    init_ca(ca)
    homes = {}
    for name in NODES:
        home = tmp_path / name
        sign_csr(ca, make_key_and_csr(home, name=name, role="node"), role="node")
        ensure_seal_key(home)
        homes[name] = home
    return {"ca": ca, "ca_pem": (ca / "ca.crt").read_bytes(), "homes": homes}


def context(node: str, version: int = 1) -> bytes:
    return f"scifed-study-key|{STUDY}|{version}|{node}".encode()


def statement(key: StudyKey, *, version: int = 1, lead: str = "lead",
              members=NODES) -> KeyStatement:
    return KeyStatement.of(study_id=STUDY, key_version=version, lead=lead, members=members,
                           key_id=key.key_id, public_context=key.public_bytes())


def shares(pki: dict, key: StudyKey, st: KeyStatement, *, signer: str = "lead") -> dict:
    home = pki["homes"][signer]
    recipients = {n: (load_seal_key(pki["homes"][n]).public_key().public_bytes_raw(),
                      context(n, st.key_version)) for n in st.members}
    return sign_key_shares(st, key.secret_bytes(), recipients,
                           cert_path=home / f"{signer}.crt", key_path=home / "node.key")


def check(pki: dict, blob: bytes, *, member: str = "member", version: int = 1,
          study_nodes=NODES, revoked=()) -> KeyStatement:
    return verify_key_share(SignedKeyShare.loads(blob), pki["ca_pem"], study_id=STUDY,
                            key_version=version, member=member, study_nodes=study_nodes,
                            revoked=revoked)


def test_a_member_verifies_opens_and_matches_the_lead_s_key(pki, key):
    st = statement(key)
    blob = shares(pki, key, st)["member"]
    checked = check(pki, blob)
    assert checked == st and checked.membership == membership_hash(reversed(NODES))
    secret = open_key_share(SignedKeyShare.loads(blob), load_seal_key(pki["homes"]["member"]),
                            context=context("member"))
    opened = StudyKey.from_secret_bytes(secret)
    assert opened.key_id == key.key_id and st.names(opened.key_id, opened.public_bytes())
    other = StudyKey.generate()
    assert not st.names(other.key_id, other.public_bytes())


def test_the_statement_binds_study_version_membership_key_id_and_public_context(key):
    st = statement(key)
    d = st.to_dict()
    assert d == {"study_id": STUDY, "key_version": 1, "lead": "lead",
                 "members": sorted(NODES), "membership": membership_hash(NODES),
                 "key_id": key.key_id.hex(),
                 "public_context_sha256": hashlib.sha256(key.public_bytes()).hexdigest()}
    assert KeyStatement.from_dict(d) == st
    signed = {st.message()}
    for field, value in [("study_id", "st-2"), ("key_version", 2), ("lead", "member"),
                         ("members", ("lead", "member")), ("key_id", "00" * 16),
                         ("public_context_sha256", "0" * 64)]:
        signed.add(dataclasses.replace(st, **{field: value}).message())
    assert len(signed) == 7  # each field changes what is signed


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d.pop("membership"), "does not have the fields"),
    (lambda d: d.update(extra=1), "does not have the fields"),
    (lambda d: d.update(key_version="1"), "wrong type"),
    (lambda d: d.update(members="lead"), "wrong type"),
    (lambda d: d.update(members=["member", "lead", "third"]), "not sorted and distinct"),
    (lambda d: d.update(membership="0" * 64), "membership hash is not that of its members"),
    (lambda d: d.update(public_context_sha256="xyz"), "not SHA-256 hex"),
])
def test_a_malformed_statement_is_refused(key, change, message):
    d = statement(key).to_dict()
    change(d)
    with pytest.raises(UserError, match=message):
        KeyStatement.from_dict(d)


def test_a_share_that_is_no_signed_share_is_refused(pki, key):
    bare = seal(load_seal_key(pki["homes"]["member"]).public_key().public_bytes_raw(),
                key.secret_bytes(), context=context("member"))
    for blob in (bare, b"", b"SFKS"):
        with pytest.raises(UserError, match="carries no key statement signed by a lead"):
            SignedKeyShare.loads(blob)
    good = shares(pki, key, statement(key))["member"]
    with pytest.raises(UserError, match="unknown format"):
        SignedKeyShare.loads(good[:4] + b"\x02" + good[5:])
    with pytest.raises(UserError, match="cut short"):
        SignedKeyShare.loads(good[:20])
    with pytest.raises(UserError, match="malformed"):
        SignedKeyShare.loads(good[:9] + b"[" + good[10:])


def test_a_share_round_trips_through_bytes(pki, key):
    blob = shares(pki, key, statement(key))["member"]
    assert SignedKeyShare.loads(blob).dumps() == blob


def test_a_changed_statement_does_not_verify(pki, key):
    share = SignedKeyShare.loads(shares(pki, key, statement(key))["member"])
    other = StudyKey.generate()
    forged = dataclasses.replace(share, statement=statement(other))  # the lead's signature
    with pytest.raises(UserError, match="signature over the key statement does not verify"):
        check(pki, forged.dumps())


def test_a_signature_by_another_node_under_the_lead_s_name_is_refused(pki, key):
    st = statement(key)
    by_third = SignedKeyShare.loads(shares(pki, key, dataclasses.replace(st, lead="third"),
                                           signer="third")["member"])
    lead_cert = (pki["homes"]["lead"] / "lead.crt").read_bytes()
    # third's signature, the lead's certificate beside it
    forged = SignedKeyShare(st, by_third.signature, lead_cert, by_third.sealed)
    with pytest.raises(UserError, match="does not verify"):
        check(pki, forged.dumps())
    # third's certificate beside a statement naming the lead
    forged = SignedKeyShare(st, by_third.signature, by_third.cert_pem, by_third.sealed)
    with pytest.raises(UserError, match="certificate of node 'third', not of node 'lead'"):
        check_signature(forged)


def test_the_signer_must_be_a_node_of_the_study_as_the_officer_accepted_it(pki, key):
    blob = shares(pki, key, statement(key))["member"]
    with pytest.raises(UserError, match="its signer 'lead' is not a node of the study as "
                                        r"this node's officer accepted it \(member, third\)"):
        check(pki, blob, study_nodes=("member", "third"))
    with pytest.raises(UserError, match="also sealed to third, not a node of the study"):
        check(pki, blob, study_nodes=("lead", "member"))


def test_a_share_for_another_study_version_or_member_is_refused(pki, key):
    blob = shares(pki, key, statement(key, members=("lead", "third")))["third"]
    with pytest.raises(UserError, match="not both this node and its lead"):
        check(pki, blob, member="member")
    with pytest.raises(UserError, match="about key v1 of study st-1"):
        check(pki, blob, member="third", version=2)


def test_the_lead_s_certificate_must_chain_to_the_ca_be_in_date_and_unrevoked(pki, key,
                                                                             tmp_path):
    blob = shares(pki, key, statement(key))["member"]
    other_ca = tmp_path / "other-ca"
    init_ca(other_ca)
    with pytest.raises(UserError, match="signer 'lead': its certificate was not issued by "
                                        "the federation CA"):
        verify_key_share(SignedKeyShare.loads(blob), (other_ca / "ca.crt").read_bytes(),
                         study_id=STUDY, key_version=1, member="member", study_nodes=NODES)
    serial = verify_certificate((pki["homes"]["lead"] / "lead.crt").read_bytes(),
                                pki["ca_pem"], who="lead").serial
    with pytest.raises(UserError, match=f"node 'lead' \\(serial {serial}\\) has been revoked"):
        check(pki, blob, revoked={serial})
    revoke(pki["ca"], name="lead", role="node")
    home = tmp_path / "lead-again"
    sign_csr(pki["ca"], make_key_and_csr(home, name="lead", role="node"), role="node",
             days=0)
    time.sleep(0.01)
    with pytest.raises(UserError, match="its certificate is valid only from"):
        verify_certificate((home / "lead.crt").read_bytes(), pki["ca_pem"], who="lead")


def test_the_seal_opens_only_beside_the_statement_it_was_made_with(pki, key):
    first = SignedKeyShare.loads(shares(pki, key, statement(key))["member"])
    second = SignedKeyShare.loads(shares(pki, key, statement(key, members=("lead", "member")))
                                  ["member"])
    spliced = dataclasses.replace(second, sealed=first.sealed)
    check(pki, spliced.dumps())  # a genuine statement of the same key ...
    with pytest.raises(UserError, match="could not be authenticated"):  # ... but not its seal
        open_key_share(spliced, load_seal_key(pki["homes"]["member"]),
                       context=context("member"))


def test_the_lead_signs_only_with_its_own_node_certificate_for_its_members(pki, key):
    home = pki["homes"]["member"]
    with pytest.raises(UserError, match="certificate of node 'member', not node 'lead'"):
        sign_key_shares(statement(key), key.secret_bytes(), {}, cert_path=home / "member.crt",
                        key_path=home / "node.key")
    lead = pki["homes"]["lead"]
    recipients = {n: (b"\0" * 32, context(n)) for n in ("lead", "member")}
    with pytest.raises(UserError, match="names members .* the shares go to"):
        sign_key_shares(statement(key), key.secret_bytes(), recipients,
                        cert_path=lead / "lead.crt", key_path=lead / "node.key")
