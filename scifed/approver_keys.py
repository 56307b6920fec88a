"""Approver keys and the statement an approver signs (governance §2.7).

An approval is a person's decision, so it is signed with that person's own key, not
claimed by a name: whoever can open a node's admin socket could type any name, and one
shell once gave a G5 task both the officer's and the security lead's approval that way.
Each approver holds an Ed25519 key, stored PKCS#8, encrypted under a passphrase, 0600
in a 0700 directory; the node keeps only the public key (``node/approvers.py``).

The approver's CLI signs a canonical statement of exactly one decision: the node, the
approval, its job, dataset and study, the hash of the job's spec, the approver and key,
approve or deny, the reason and the expiry. The node rebuilds the same statement from
its own record of the approval and checks the signature over those bytes, so a
signature does not carry over to another approval, node or decision, nor survive a
changed reason or expiry. This module is shared by both sides so that they compute the
same bytes.

Changes to the registry of approvers are signed the same way, over a statement of
another kind (``change_statement``): the node, add or remove, the approver's name, role
and key, the registry's version and hash before the change, and the signer and their
key. Each kind of statement is signed under its own domain, so a decision's signature
never verifies as a registry change's countersignature, nor the other way round.

The officer's output review of a pooled result (release or withhold, before it is sealed
to the researcher) is a third kind (``review_statement``): the node, the review, its job,
the sha256 of the very result that would be sealed, the approver and key, the decision
and the reason. A release signed for one result never releases another one, of this job
or any other.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import stat
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from scifed.at_rest import private_dir, write_private
from scifed.chain import canonical
from scifed.errors import UserError
from scifed.sealing import canonical_sha256

ROLES = ("officer", "liaison", "security_lead")
NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
PASSPHRASE_ENV = "SCIFED_APPROVER_PASSPHRASE"
MIN_PASSPHRASE = 8
# What the signed bytes are: a statement of this kind signs nothing else scifed checks.
DOMAIN = b"scifed-approval-decision-v1\n"
STATEMENT_FIELDS = ("node", "approval_id", "job_id", "dataset_id", "study_id",
                    "spec_sha256", "approver", "key", "decision", "reason", "expires_ms")
# A countersignature of one change to the registry of approvers (governance §2.7).
CHANGE_DOMAIN = b"scifed-approver-registry-change-v1\n"
CHANGE_FIELDS = ("node", "action", "name", "role", "key", "registry_version",
                 "registry_sha256", "signer", "signer_key")
CHANGE_ACTIONS = ("add", "remove")
# The officer's decision on a pooled result before it is sealed (output review).
REVIEW_DOMAIN = b"scifed-output-review-decision-v1\n"
REVIEW_FIELDS = ("node", "review_id", "job_id", "result_sha256", "approver", "key",
                 "decision", "reason")
REVIEW_DECISIONS = ("release", "withhold")
# The roles whose countersignatures a registry change needs, and which are bootstrapped.
DUAL_ROLES = ("officer", "security_lead")


def check_approver(name: str, role: str | None = None) -> None:
    """A name is also a file name (the default key path): no separators, no dots first."""
    if not NAME.match(name):
        raise UserError(f"approver name {name!r}: lower-case letters, digits, '.', '_' "
                        "and '-', starting with a letter or digit")
    if role is not None and role not in ROLES:
        raise UserError(f"no approver role {role!r}: choose {', '.join(ROLES)}")


def default_key_path(name: str) -> Path:
    """Where `scifed node approver add NAME` writes the key: the person's own account."""
    return Path.home() / ".scifed" / "approvers" / f"{name}.key"


def new_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def _refuse_open_dir(directory: Path) -> None:
    mode = stat.S_IMODE(directory.stat().st_mode)
    if mode & 0o077:
        raise UserError(f"{directory} is mode {mode:04o}, open to other accounts: an "
                        f"approver key is kept in a 0700 directory (`chmod 700 {directory}` "
                        "or choose another --key-out)")


def write_key(path: Path, key: Ed25519PrivateKey, passphrase: bytes) -> None:
    """The private key as encrypted PKCS#8 PEM, created 0600 (never replacing a file) in
    a directory that is, or is made, 0700."""
    path = Path(path).expanduser()
    if path.exists():
        raise UserError(f"{path} already exists; an approver key is never overwritten")
    private_dir(path.parent)
    _refuse_open_dir(path.parent)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.BestAvailableEncryption(passphrase))
    write_private(path, pem)


def load_key(path: Path, passphrase: bytes) -> Ed25519PrivateKey:
    """The approver's private key; one UserError for a missing or open file, a wrong
    passphrase or a key that is not an Ed25519 approver key."""
    path = Path(path).expanduser()
    try:
        st = path.stat()
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read approver key {path}: {exc.strerror}") from None
    if stat.S_IMODE(st.st_mode) & 0o077:
        raise UserError(f"approver key {path} is mode {stat.S_IMODE(st.st_mode):04o}, "
                        f"readable by other accounts: `chmod 600 {path}`")
    try:
        key = serialization.load_pem_private_key(data, password=passphrase)
    except TypeError:  # a key without a passphrase, or a passphrase for a clear key
        raise UserError(f"approver key {path} is not passphrase-protected; make a new "
                        "one with `scifed node approver add`") from None
    except ValueError:
        raise UserError(f"wrong passphrase for approver key {path} (or not a PEM key)") \
            from None
    if not isinstance(key, Ed25519PrivateKey):
        raise UserError(f"{path} is not an Ed25519 approver key")
    return key


def public_pem(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return pub.public_bytes(serialization.Encoding.PEM,
                            serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def load_public(pem: str) -> Ed25519PublicKey:
    try:
        pub = serialization.load_pem_public_key(pem.encode())
    except ValueError:
        raise UserError("not a PEM public key") from None
    if not isinstance(pub, Ed25519PublicKey):
        raise UserError("an approver's public key must be Ed25519")
    return pub


def fingerprint(pem: str) -> str:
    """``SHA256:<hex>`` of the raw 32-byte public key: how people and the audit name it."""
    raw = load_public(pem).public_bytes(serialization.Encoding.Raw,
                                        serialization.PublicFormat.Raw)
    return "SHA256:" + hashlib.sha256(raw).hexdigest()


def decision_statement(*, node: str, approval: dict, approver: str, key: str, approve: bool,
                       reason: str, expires_ms: int | None) -> dict:
    """The fields one decision binds, from the approval as the node records it."""
    return {"node": node, "approval_id": approval["approval_id"],
            "job_id": approval["job_id"], "dataset_id": approval["dataset_id"],
            "study_id": approval["study_id"], "spec_sha256": canonical_sha256(approval["spec"]),
            "approver": approver, "key": key, "decision": "approve" if approve else "deny",
            "reason": reason, "expires_ms": expires_ms}


def statement_bytes(statement: dict, domain: bytes = DOMAIN) -> bytes:
    """The bytes signed: the domain (what kind of statement it is), then the statement's
    canonical JSON."""
    return domain + canonical(statement).encode()


def sign(key: Ed25519PrivateKey, statement: dict, domain: bytes = DOMAIN) -> bytes:
    return key.sign(statement_bytes(statement, domain))


def verifies(pem: str, statement: dict, signature: bytes, domain: bytes = DOMAIN) -> bool:
    try:
        load_public(pem).verify(signature, statement_bytes(statement, domain))
    except InvalidSignature:
        return False
    return True


def change_statement(*, node: str, action: str, name: str, role: str, key: str,
                     registry: dict, signer: str, signer_key: str) -> dict:
    """What one countersignature of a registry change binds: the node, ``action`` (add or
    remove) of approver ``name`` with ``role`` and key fingerprint ``key``, the registry
    as it is before the change (``registry``: its ``version`` and ``sha256``, see
    ``node.approvals.ApproverRegistry.state``), and who signs with which key. The
    registry's hash changes with every change, so a countersignature applies once, to the
    change it names, and never to a later one."""
    if action not in CHANGE_ACTIONS:
        raise UserError(f"no registry change {action!r}: add or remove")
    return {"node": node, "action": action, "name": name, "role": role, "key": key,
            "registry_version": registry["version"], "registry_sha256": registry["sha256"],
            "signer": signer, "signer_key": signer_key}


def sign_change(key: Ed25519PrivateKey, statement: dict) -> bytes:
    return sign(key, statement, CHANGE_DOMAIN)


def change_verifies(pem: str, statement: dict, signature: bytes) -> bool:
    return verifies(pem, statement, signature, CHANGE_DOMAIN)


def review_statement(*, node: str, review: dict, approver: str, key: str, release: bool,
                     reason: str) -> dict:
    """What one output-review decision binds, from the review as the node records it:
    ``review`` needs ``review_id``, ``job_id`` and ``result_sha256`` (the hash of the
    signed result exactly as it would be sealed to the researcher)."""
    return {"node": node, "review_id": review["review_id"], "job_id": review["job_id"],
            "result_sha256": review["result_sha256"], "approver": approver, "key": key,
            "decision": "release" if release else "withhold", "reason": reason}


def sign_review(key: Ed25519PrivateKey, statement: dict) -> bytes:
    return sign(key, statement, REVIEW_DOMAIN)


def review_verifies(pem: str, statement: dict, signature: bytes) -> bool:
    return verifies(pem, statement, signature, REVIEW_DOMAIN)


def parse_review_statement(text: str) -> dict:
    """The output-review statement a decision says it signed; a UserError unless it has
    exactly the fields of one (an approval's or a registry change's is not one)."""
    return _parse(text, REVIEW_FIELDS, "the review decision carries no valid signed "
                  "statement", "sign it with `scifed node review release|withhold ID --key "
                  "KEY`")


def _parse(text: str, fields: tuple[str, ...], what: str, how: str) -> dict:
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if not isinstance(data, dict) or set(data) != set(fields):
        raise UserError(f"{what} (fields {', '.join(fields)}); {how}")
    return data


def parse_change_statement(text: str) -> dict:
    """The registry-change statement a countersignature says it signed; a UserError unless
    it has exactly the fields of one (an approval decision's statement is not one)."""
    return _parse(text, CHANGE_FIELDS,
                  "a countersignature carries no valid registry-change statement",
                  "sign the change with `scifed node approver add|remove ... --countersign "
                  "KEY`")


def parse_statement(text: str) -> dict:
    """The statement a request says was signed; a UserError unless it has exactly the
    fields of a decision statement."""
    return _parse(text, STATEMENT_FIELDS, "the decision carries no valid signed statement",
                  "sign it with `scifed node approvals approve|deny ID --key KEY`")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def read_passphrase_file(path: Path) -> bytes:
    """The passphrase from a file (its first line), for scripts."""
    try:
        text = Path(path).expanduser().read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read passphrase file {path}: {exc.strerror}") from None
    return text.splitlines()[0] if text.strip() else b""


def passphrase_from_env() -> bytes | None:
    value = os.environ.get(PASSPHRASE_ENV)
    return value.encode() if value else None
