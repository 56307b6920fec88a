"""The node's side of joint studies: the officer's answers, the attached datasets, and
this node's copies of study keys.

The node is the authority over its data: a task is run only for a study its officer
accepted, and only on a dataset the officer attached to that study. A study key is kept
only if the study's lead signed it (``scifed.sealing.SignedKeyShare``): the coordinator
relays every share and could otherwise plant a key of its own and read what this node
encrypts under it.

Its copies of study keys are stored encrypted under a key derived from the node's own
private key (its TLS key file), so a copy of node.db alone opens none of them; copies an
older version stored in clear are encrypted when the node starts.

Revocation is checked here too, not left to the coordinator (:class:`PeerTrust`): the
coordinator forwards the federation CA's CRL with every task, heartbeat and registration;
the node keeps the newest one the CA signed (a lower CRL number never replaces it) and
refuses, audited, every task that trusts another party while that CRL is older than its
``crl_max_age_seconds``, and every revoked party: a lead's key share, a member to key, a
researcher's seal key claim, a contributor to a release, its own certificate.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from typing import TYPE_CHECKING

from node.audit import AuditLog
from node.datasets import DatasetRegistry
from node.store import DatasetRow, NodeStore
from protos.scifed.v1 import federation_pb2 as pb
from scifed.at_rest import AtRestKey
from scifed.config import NodeConfig
from scifed.errors import UserError
from scifed.he import StudyKey
from scifed.pki import Crl, Identity, identity_from_cert_pem, load_crl, newer_crl
from scifed.sealing import (
    KeyStatement,
    SealKeyClaim,
    SignedKeyShare,
    load_seal_key,
    open_key_share,
    sign_key_shares,
    verify_claim,
    verify_key_share,
)
from scifed.tasks import KeygenReply, KeygenRequest

if TYPE_CHECKING:
    from node.link import CoordinatorLink

log = logging.getLogger("scifed.node")
# The purpose label of the key (derived from the node's private key) that wraps study keys.
STUDY_KEYS_PURPOSE = "node study keys"


def duration(seconds: float) -> str:
    """A span of time as a person reads it (2.5 s, 12.0 min, 25.3 h)."""
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.1f} s"


class PeerTrust:
    """The federation CA's newest certificate revocation list as this node received it
    (through the coordinator, which relays it and might not), and the checks made with it.

    A CRL is taken only if the CA signed it and its number is higher than the one held:
    a coordinator that replays an older CRL cannot take a revocation back. Every offer
    that is refused is audited once. The CRL is kept in node.db (table ``crls``), so
    every part of the node (the runner, the link) sees the same one.
    """

    def __init__(self, store: NodeStore, cfg: NodeConfig) -> None:
        self.store = store
        self.cfg = cfg
        self.ca_pem = cfg.tls.ca.read_bytes()
        self.own = identity_from_cert_pem(cfg.tls.cert.read_bytes())  # read once, not per task
        self._cache: Crl | None = None
        self._taken = ""  # digest of the bytes last offered and kept (sent with every task)
        self._refused: set[str] = set()  # digests of offers refused (and audited) already
        self._lock = threading.Lock()
        if cfg.tls.crl is not None and cfg.tls.crl.exists():  # a copy the officer put here
            self.offer(cfg.tls.crl.read_bytes(), via=f"file {cfg.tls.crl}")

    def current(self) -> Crl | None:
        """The newest CRL this node accepted, or None."""
        with self.store.tx() as con:
            row = NodeStore.newest_crl(con)
        if row is None:
            return None
        cached = self._cache
        if cached is None or cached.number != row[0]:
            cached = self._cache = load_crl(row[1], self.ca_pem, source="the stored CRL")
        return cached

    def offer(self, data: bytes, via: str) -> Crl | None:
        """A CRL the coordinator sent (``via``: a task, a heartbeat, the registration):
        kept if the CA signed it and it is newer than the one held; else refused,
        audited. Never raises: the CRL in force (or None) is returned."""
        if not data:
            return self.current()
        digest = hashlib.sha256(data).hexdigest()
        with self._lock:
            if digest in self._refused or digest == self._taken:
                return self.current()
            if len(self._refused) > 1000:
                self._refused.clear()
            try:
                offered = load_crl(data, self.ca_pem, source=f"the CRL sent with a {via}")
            except UserError as exc:
                self._refused.add(digest)
                log.warning("node %s: %s", self.cfg.name, exc)
                AuditLog(self.store).append("node", "crl.refuse", "crl",
                                            {"via": via, "reason": str(exc)})
                return self.current()
            with self.store.tx() as con:
                held = NodeStore.newest_crl(con)
                current = load_crl(held[1], self.ca_pem, source="the stored CRL") \
                    if held else None
                if current is not None and current.der == offered.der:
                    self._taken = digest
                    return current
                if not newer_crl(current, offered):
                    self._refused.add(digest)
                    reason = (f"node {self.cfg.name} keeps its {current.describe()}: the "
                              f"{offered.describe()} sent with a {via} is not newer (a "
                              "lower CRL number cannot take a revocation back)")
                    log.warning("%s", reason)
                    AuditLog.append_in(con, "node", "crl.refuse", "crl",
                                       {"via": via, "number": offered.number,
                                        "held": current.number, "reason": reason})
                    return current
                NodeStore.put_crl(con, offered.number,
                                  int(offered.this_update.timestamp() * 1000), offered.der, via)
                AuditLog.append_in(con, "node", "crl.accept", "crl",
                                   {"via": via, "number": offered.number,
                                    "this_update": offered.this_update.isoformat(),
                                    "revoked": len(offered.serials)})
            log.info("node %s: took the CA's %s (%d revoked) from a %s", self.cfg.name,
                     offered.describe(), len(offered.serials), via)
            self._cache, self._taken = offered, digest
            return offered

    def refuse(self, subject: str, message: str) -> UserError:
        """Audit a refusal for revocation (``trust.refuse``); the error to raise."""
        AuditLog(self.store).append("node", "trust.refuse", subject, {"reason": message})
        return UserError(message)

    def fresh(self, subject: str = "crl") -> Crl:
        """The CRL in force, if it is recent enough to trust other parties by; else
        refuse (audited) with its age and this node's limit."""
        crl = self.current()
        limit = self.cfg.crl_max_age_seconds
        if crl is None:
            raise self.refuse(subject, f"node {self.cfg.name} refuses tasks that trust other "
                              "parties: it holds no certificate revocation list of the "
                              "federation CA (the coordinator forwards it with every task)")
        age = crl.age_seconds()
        if age > limit:
            raise self.refuse(subject, f"node {self.cfg.name} refuses tasks that trust other "
                              f"parties: its newest certificate revocation list "
                              f"({crl.describe()}) is {duration(age)} old, older than its "
                              f"limit crl_max_age_seconds = {limit:g} ({duration(limit)}); "
                              "the coordinator forwards the CA's CRL with every task, and "
                              "the CA signs a new one at least daily")
        own = self.own
        if crl.revoked(own.serial):
            raise self.refuse(subject, f"node {self.cfg.name} takes no tasks: its own "
                              f"certificate (serial {own.serial}) is revoked "
                              f"({crl.describe()})")
        return crl

    def check_researcher(self, crl: Crl, claim: object, job_id: str, researcher: str) -> None:
        """Refuse (audited) a job unless it carries a seal key claim of the researcher it
        names, certified by the federation CA, and ``crl`` does not revoke that
        certificate. A coordinator that deviates writes the task header: without this it
        could run queries under invented names, each with an allowance of its own, and
        read which ones the nodes refuse."""
        said = f"node {self.cfg.name} refuses job {job_id}"
        try:
            parsed = SealKeyClaim.from_dict(claim)  # type: ignore[arg-type]
            verify_claim(parsed, self.ca_pem, expect_role="researcher",
                         expect_name=researcher)
        except (UserError, ValueError, TypeError, KeyError, AttributeError) as exc:
            why = str(exc) if isinstance(exc, UserError) else "it is malformed"
            raise self.refuse(job_id, f"{said}: it carries no valid seal key claim of "
                              f"researcher {researcher!r}, certified by the federation CA "
                              f"({why})") from None
        self.check(crl, parsed.cert_pem, f"job {job_id} of researcher {researcher!r}", job_id)

    def check(self, crl: Crl, cert_pem: bytes, what: str, subject: str) -> Identity:
        """The identity of ``cert_pem``, unless ``crl`` revokes it (refused, audited)."""
        ident = identity_from_cert_pem(cert_pem)
        if crl.revoked(ident.serial):
            raise self.refuse(subject, f"node {self.cfg.name} refuses {what}: the "
                              f"certificate of {ident.role} {ident.name!r} (serial "
                              f"{ident.serial}) is revoked ({crl.describe()})")
        return ident


def key_context(study_id: str, version: int, node: str) -> bytes:
    """Binds a sealed study key to its study, version and recipient."""
    return f"scifed-study-key|{study_id}|{version}|{node}".encode()


class NodeStudies:
    def __init__(self, store: NodeStore, registry: DatasetRegistry, cfg: NodeConfig) -> None:
        self.store = store
        self.registry = registry
        self.cfg = cfg
        self._keys: dict[tuple[str, int], StudyKey] = {}
        self._lock = threading.Lock()
        self.vault = AtRestKey.from_private_key_file(cfg.tls.key, STUDY_KEYS_PURPOSE)
        self.trust = PeerTrust(store, cfg)
        for study_id, version in store.encrypt_clear_study_keys(self.vault):
            log.warning("node %s: key version %d of study %s was stored in clear by an "
                        "older version; encrypted it (backups taken before now still hold "
                        "it in clear)", cfg.name, version, study_id)
            AuditLog(store).append("node", "study.key.encrypt", study_id,
                                   {"version": version, "was": "stored in clear"})

    # -- the officer's commands --------------------------------------------------------
    # The officer's commands reach the coordinator over the node's link (never a task's
    # handler: tasks carry what they need).
    @staticmethod
    def list(link: CoordinatorLink) -> pb.ListInvitationsReply:
        return link.call("ListInvitations", pb.ListInvitationsRequest())

    def answer(self, link: CoordinatorLink, study_id: str, accept: bool, datasets: list[str],
               actor: str = "officer") -> pb.StudyInfo:
        ids = [self.registry.get(d).dataset_id for d in datasets]  # unknown ones: NotFound
        if accept and not ids:
            raise UserError("name the datasets this node contributes: --datasets ds1,ds2")
        info = link.call("AnswerInvitation", pb.AnswerInvitationRequest(
            study_id=study_id, accept=accept, datasets=ids))
        # the study's nodes as the officer accepted them: a key is taken only from a lead
        # among them, and (as lead) this node keys no other node
        nodes = sorted({m.node for m in info.members})
        with self.store.tx() as con:
            self.store.set_study(con, info.study_id, info.name, accept, ids)
            AuditLog.append_in(con, actor, "study.accept" if accept else "study.decline",
                               info.study_id, {"name": info.name, "datasets": ids,
                                               "nodes": nodes, "lead": info.lead_node})
        return info

    def study_nodes(self, study_id: str) -> list[str] | None:
        """The study's nodes as this node's officer last answered its invitation (None:
        no answer recorded them, e.g. one given before study keys were signed)."""
        # The studies table has no column for them; the officer's answer is in the audit
        # chain, written in the same transaction, so that is the record (and tamper-evident).
        with self.store.tx() as con:
            row = con.execute("SELECT details FROM audit WHERE subject=? AND action IN "
                              "('study.accept', 'study.decline') ORDER BY seq DESC LIMIT 1",
                              (study_id,)).fetchone()
        nodes = json.loads(row[0]).get("nodes") if row else None
        return nodes if isinstance(nodes, list) else None

    # -- checks on every task ----------------------------------------------------------
    def attached(self, study_id: str, dataset: str) -> DatasetRow:
        """The dataset, if this node's officer attached it to the study; else refuse."""
        study = self.store.study(study_id)
        if study is None or not study[1]:
            raise UserError(f"node {self.cfg.name} has not accepted study {study_id}")
        row = self.registry.get(dataset)
        if row.dataset_id not in study[2]:
            raise UserError(f"dataset {row.dataset_id} is not attached to study "
                            f"'{study[0]}' at node {self.cfg.name}")
        return row

    # -- keys ---------------------------------------------------------------------------
    def key(self, study_id: str, version: int, share: bytes = b"") -> StudyKey:
        """This node's copy of a study key: cached, else stored, else opened from
        ``share`` (the copy the lead signed and sealed to this node, which every task
        carries), so no task waits on a call to the coordinator."""
        with self._lock:
            cached = self._keys.get((study_id, version))
            if cached is not None:
                return cached
            try:
                secret = self.store.study_key(study_id, version, self.vault)
            except UserError as exc:
                if not share:
                    raise UserError(f"node {self.cfg.name}, key version {version} of study "
                                    f"{study_id}: {exc}; resubmit the job (its tasks carry "
                                    "the copy sealed to this node)") from None
                log.warning("node %s, key version %d of study %s: %s; opening the copy "
                            "the task carries instead", self.cfg.name, version, study_id, exc)
                secret = None
            if secret is None:
                if not share:
                    raise UserError(f"node {self.cfg.name} holds no copy of key version "
                                    f"{version} of study {study_id}; resubmit the job")
                secret = self._accept_share(study_id, version, share)
            key = StudyKey.from_secret_bytes(secret)
            self._keys[(study_id, version)] = key
            return key

    def _accept_share(self, study_id: str, version: int, share: bytes) -> bytes:
        """Open a share and keep its key, only if the study's lead signed that very key;
        else refuse, audited, with one message."""
        ca_pem = self.trust.ca_pem
        seal_key = load_seal_key(self.cfg.tls.key.parent)
        revoked = self.trust.fresh(study_id).serials  # the newest CRL, recent enough
        nodes = self.study_nodes(study_id)
        lead = ""
        try:
            signed = SignedKeyShare.loads(share)
            lead = signed.statement.lead
            if nodes is None:
                raise UserError("this node has no record of the study's nodes (its officer "
                                "answered before study keys were signed): accept the study "
                                "again")
            statement = verify_key_share(signed, ca_pem, study_id=study_id,
                                         key_version=version, member=self.cfg.name,
                                         study_nodes=nodes, revoked=revoked)
            secret = open_key_share(signed, seal_key,
                                    context=key_context(study_id, version, self.cfg.name))
            key = StudyKey.from_secret_bytes(secret)
            if not statement.names(key.key_id, key.public_bytes()):
                raise UserError(f"the key it carries (id {key.key_id.hex()}) is not the key "
                                f"the lead signed (id {statement.key_id})")
        except UserError as exc:
            study = self.store.study(study_id)
            named = study[0] if study else study_id
            who = lead if nodes and lead in nodes else \
                f"(one of {', '.join(nodes)})" if nodes else "(unknown to this node)"
            message = (f"study key of {named!r} v{version} is not signed by the study's "
                       f"lead {who}: {exc}")
            AuditLog(self.store).append("node", "study.key.refuse", study_id,
                                        {"version": version, "lead": lead,
                                         "reason": message})
            raise UserError(message) from None
        self.store.put_study_key(study_id, version, secret, self.vault)
        AuditLog(self.store).append("node", "study.key.accept", study_id,
                                    {"version": version, "lead": statement.lead,
                                     "key_id": statement.key_id,
                                     "members": list(statement.members)})
        return secret

    def generate_key(self, req: KeygenRequest) -> KeygenReply:
        """As the study's lead: make the BFV key and seal a copy to every member.

        Each member's seal key is checked against its certificate from the federation
        CA, so a relay that swaps in its own key is caught here.
        """
        study = self.store.study(req.study_id)
        if study is None or not study[1]:
            raise UserError(f"node {self.cfg.name} has not accepted study {req.study_id}")
        if self.cfg.name not in req.members:
            raise UserError(f"node {self.cfg.name} is not among the members to key")
        nodes = self.study_nodes(req.study_id)
        if nodes is None:
            raise UserError(f"node {self.cfg.name} has no record of the nodes of study "
                            f"'{study[0]}' (its officer answered before study keys were "
                            "signed): accept the study again")
        strangers = sorted(set(req.members) - set(nodes))
        if strangers:
            raise UserError(f"node {self.cfg.name} keys no node outside study '{study[0]}' "
                            f"as its officer accepted it: {', '.join(strangers)}")
        ca_pem = self.trust.ca_pem
        claims = {node: SealKeyClaim.from_dict(claim) for node, claim in req.members.items()}
        publics = {node: verify_claim(claim, ca_pem, expect_role="node", expect_name=node)
                   for node, claim in claims.items()}
        crl = self.trust.fresh(req.study_id)
        revoked = sorted(f"{node} (serial {serial})" for node, claim in claims.items()
                         if crl.revoked(serial := identity_from_cert_pem(claim.cert_pem).serial))
        if revoked:
            raise self.trust.refuse(req.study_id, f"node {self.cfg.name} keys no node whose "
                                    f"certificate is revoked ({crl.describe()}): "
                                    f"{', '.join(revoked)}")
        key = StudyKey.generate()
        secret = key.secret_bytes()
        public = key.public_bytes()
        statement = KeyStatement.of(study_id=req.study_id, key_version=req.version,
                                    lead=self.cfg.name, members=req.members,
                                    key_id=key.key_id, public_context=public)
        shares = sign_key_shares(
            statement, secret,
            {node: (pub, key_context(req.study_id, req.version, node))
             for node, pub in publics.items()},
            cert_path=self.cfg.tls.cert, key_path=self.cfg.tls.key)
        self.store.put_study_key(req.study_id, req.version, secret, self.vault)
        AuditLog(self.store).append("node", "study.key.sign", req.study_id,
                                    {"version": req.version, "key_id": statement.key_id,
                                     "members": list(statement.members),
                                     "statement_sha256": statement.digest()})
        return KeygenReply(public_context=public, shares=shares)
