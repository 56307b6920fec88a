"""A released result signed by its release node, and the researcher's check of it."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from scifed.errors import UserError
from scifed.pki import init_ca, make_key_and_csr, sign_csr, verify_certificate
from scifed.sealing import (
    RESULT_SIGNATURE,
    UnsignedResult,
    canonical_json,
    canonical_sha256,
    ensure_seal_key,
    load_seal_key,
    open_result,
    result_context,
    result_digest,
    seal,
    sign_result,
    verify_result,
)

JOB = "job-1"
SPEC = {"study": "s", "type": "stats", "datasets": {"a": "d", "b": "d", "c": "d"}}


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict:
    """A CA, nodes a, b, c and an operator, and a researcher with a seal key."""
    root = tmp_path_factory.mktemp("pki")
    ca = root / "ca"
    init_ca(ca)
    homes = {}
    for name, role in (("a", "node"), ("b", "node"), ("c", "node"), ("op", "operator")):
        home = root / name
        sign_csr(ca, make_key_and_csr(home, name=name, role=role), role=role)
        homes[name] = home
    researcher = root / "alice"
    ensure_seal_key(researcher)
    return {"ca_pem": (ca / "ca.crt").read_bytes(), "homes": homes, "researcher": researcher}


def document(*, signer: str = "a", job_id: str = JOB, contributors=("a", "b", "c"),
             stage: str = "final", round_no: int = 0) -> dict:
    return {"type": "stats", "rows": 300, "columns": {"x": {"count": 300, "mean": 4.5}},
            "meta": {"contributors": list(contributors)},
            "provenance": {"job_id": job_id, "stage": stage, "round": round_no,
                           "researcher": "alice", "released_by": signer,
                           "contributors": sorted(contributors),
                           "spec_sha256": canonical_sha256(SPEC), "dp": {}}}


def signed(pki, doc: dict | None = None, signer: str = "a") -> dict:
    home: Path = pki["homes"][signer]
    return sign_result(doc or document(signer=signer), node=signer,
                       cert_path=home / f"{signer}.crt", key_path=home / "node.key")


def check(pki, doc, **kw):
    kw.setdefault("job_id", JOB)
    return verify_result(doc, pki["ca_pem"], **kw)


def test_canonical_json_is_what_json_reads_back():
    """Int keys become text before they are sorted (so "10" sorts before "2" on both
    sides), NaN survives, tuples are lists."""
    value = {2: 1, 10: (1, 2), "z": math.nan}
    text = canonical_json(value)
    assert text == b'{"10":[1,2],"2":1,"z":NaN}'
    assert canonical_json(json.loads(json.dumps(value))) == text


def test_a_signed_result_verifies_through_json(pki):
    doc = json.loads(json.dumps(signed(pki)))  # as it travels
    got = check(pki, doc, researcher="alice", reported_contributors=["c", "a", "b"],
                spec_sha256=canonical_sha256(SPEC), spec_nodes=["a", "b", "c"])
    assert got.signer == "a" and got.spec_checked
    assert got.serial == verify_certificate(doc[RESULT_SIGNATURE]["cert_pem"].encode(),
                                            pki["ca_pem"], who="a").serial
    assert got.summary().startswith("signed by node a (certificate serial ")
    assert "contributors a, b, c" in got.summary()
    assert result_digest(doc) == result_digest(signed(pki, doc))  # re-signing: same bytes


def test_an_unsigned_result_is_refused_with_its_own_error(pki):
    with pytest.raises(UnsignedResult, match="this result carries no signature \\(released "
                                             "before results were signed"):
        check(pki, document())


@pytest.mark.parametrize(("edit", "said"), [
    (lambda d: d["columns"]["x"].update(mean=5.5), "signature of node 'a' does not verify"),
    (lambda d: d["provenance"].update(dp={"b": {"epsilon": 1}}), "does not verify"),
    (lambda d: d.pop("provenance"), "does not verify"),
    (lambda d: d[RESULT_SIGNATURE].update(value="!!"), "signature field is malformed"),
    (lambda d: d[RESULT_SIGNATURE].update(alg="none"), "signed with 'none'"),
], ids=["number", "dp-report", "provenance-dropped", "bad-base64", "alg"])
def test_any_change_after_signing_is_refused(pki, edit, said):
    doc = signed(pki)
    edit(doc)
    with pytest.raises(UserError, match=said):
        check(pki, doc)


def test_the_certificate_must_be_a_node_s_from_this_ca_and_not_revoked(pki, tmp_path):
    doc = signed(pki)
    other = tmp_path / "other-ca"
    init_ca(other)
    with pytest.raises(UserError, match="not issued by the federation CA"):
        verify_result(doc, (other / "ca.crt").read_bytes(), job_id=JOB)
    serial = check(pki, doc).serial
    with pytest.raises(UserError, match=f"node 'a' \\(serial {serial}\\), which has been "
                                        "revoked"):
        check(pki, doc, revoked={serial})
    home = pki["homes"]["op"]
    with pytest.raises(UserError, match="node"):  # sign_result signs only as a node
        sign_result(document(), node="op", cert_path=home / "op.crt",
                    key_path=home / "operator.key")


@pytest.mark.parametrize(("doc_kw", "check_kw", "said"), [
    ({"job_id": "job-0"}, {}, "signed it as the result of job job-0, not of this job"),
    ({"stage": "progress", "round_no": 2}, {}, "signed it as a progress release"),
    ({"stage": "progress", "round_no": 2}, {"stage": "progress", "round_no": 3},
     "progress release \\(round 2\\), not as the progress one"),
    ({}, {"researcher": "bob"}, "released to researcher 'alice', not to 'bob'"),
    ({"contributors": ("b", "c")}, {}, "its signer, node 'a', is not among the "
                                       "contributors it names \\(b, c\\)"),
    ({}, {"reported_contributors": ["a", "b"]},
     "the coordinator reports contributors a, b, the result node 'a' signed names a, b, c: "
     "the coordinator's record of the job was altered"),
    ({}, {"spec_sha256": "0" * 64}, "released a job whose spec .* is not the one you "
                                    "submitted"),
    ({}, {"spec_nodes": ["a", "b"]}, "names contributors c that your job spec does not "
                                     "name"),
], ids=["other-job", "progress-as-final", "other-round", "other-researcher",
        "signer-not-contributor", "reported-contributors", "spec", "spec-nodes"])
def test_a_genuine_signature_over_the_wrong_claims_is_refused(pki, doc_kw, check_kw, said):
    doc = signed(pki, document(**doc_kw))
    with pytest.raises(UserError, match=said):
        check(pki, doc, **check_kw)


def test_the_signer_must_be_the_release_node_its_provenance_names(pki):
    doc = signed(pki, document(signer="b"), signer="a")
    with pytest.raises(UserError, match="signed by node 'a', but its provenance names 'b'"):
        check(pki, doc)


def test_open_result_opens_checks_and_lets_an_unsigned_one_through_only_when_asked(pki):
    key = load_seal_key(pki["researcher"])
    public = ensure_seal_key(pki["researcher"])
    blob = seal(public, json.dumps(signed(pki)).encode(), context=result_context(JOB))
    doc, verified = open_result(key, blob, pki["ca_pem"], job_id=JOB, researcher="alice")
    assert verified.signer == "a" and doc["columns"]["x"]["mean"] == 4.5
    old = seal(public, json.dumps(document()).encode(), context=result_context(JOB))
    with pytest.raises(UnsignedResult):
        open_result(key, old, pki["ca_pem"], job_id=JOB)
    doc, verified = open_result(key, old, pki["ca_pem"], job_id=JOB, allow_unsigned=True)
    assert verified is None and doc["rows"] == 300
    with pytest.raises(UserError, match="could not be authenticated"):  # another job's seal
        open_result(key, blob, pki["ca_pem"], job_id="job-2")
