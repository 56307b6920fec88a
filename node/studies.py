"""The node's side of joint studies: the officer's answers, the attached datasets, and
this node's copies of study keys.

The node is the authority over its data: a task is run only for a study its officer
accepted, and only on a dataset the officer attached to that study.
"""

from __future__ import annotations

import threading

from node.audit import AuditLog
from node.datasets import DatasetRegistry
from node.link import CoordinatorLink
from node.store import DatasetRow, NodeStore
from protos.scifed.v1 import federation_pb2 as pb
from scifed.config import NodeConfig
from scifed.errors import UserError
from scifed.he import StudyKey
from scifed.sealing import SealKeyClaim, load_seal_key, open_sealed, seal, verify_claim
from scifed.tasks import KeygenReply, KeygenRequest


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
        with self.store.tx() as con:
            self.store.set_study(con, info.study_id, info.name, accept, ids)
            AuditLog.append_in(con, actor, "study.accept" if accept else "study.decline",
                               info.study_id, {"name": info.name, "datasets": ids})
        return info

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
        ``share`` (the copy the lead sealed to this node, which every task carries), so
        no task waits on a call to the coordinator."""
        with self._lock:
            cached = self._keys.get((study_id, version))
            if cached is not None:
                return cached
            secret = self.store.study_key(study_id, version)
            if secret is None:
                if not share:
                    raise UserError(f"node {self.cfg.name} holds no copy of key version "
                                    f"{version} of study {study_id}; resubmit the job")
                secret = open_sealed(load_seal_key(self.cfg.tls.key.parent), share,
                                     context=key_context(study_id, version, self.cfg.name))
                self.store.put_study_key(study_id, version, secret)
            key = StudyKey.from_secret_bytes(secret)
            self._keys[(study_id, version)] = key
            return key

    def generate_key(self, req: KeygenRequest) -> KeygenReply:
        """As the study's lead: make the CKKS key and seal a copy to every member.

        Each member's seal key is checked against its certificate from the federation
        CA, so a relay that swaps in its own key is caught here.
        """
        study = self.store.study(req.study_id)
        if study is None or not study[1]:
            raise UserError(f"node {self.cfg.name} has not accepted study {req.study_id}")
        if self.cfg.name not in req.members:
            raise UserError(f"node {self.cfg.name} is not among the members to key")
        ca_pem = self.cfg.tls.ca.read_bytes()
        publics = {node: verify_claim(SealKeyClaim.from_dict(claim), ca_pem,
                                      expect_role="node", expect_name=node)
                   for node, claim in req.members.items()}
        key = StudyKey.generate()
        secret = key.secret_bytes()
        shares = {node: seal(pub, secret, context=key_context(req.study_id, req.version, node))
                  for node, pub in publics.items()}
        self.store.put_study_key(req.study_id, req.version, secret)
        return KeygenReply(public_context=key.public_bytes(), shares=shares)
