"""The coordinator's part in delivery: relay, never decide or read.

A researcher's access calls go to the node that holds the dataset (found by its catalog
record) as tasks on that node's stream, and the node's answer comes back as it sent it.
The coordinator adds only what it knows for sure: the caller's name from their mTLS
certificate (a request signed for another name is refused here, and the node checks the
signature again) and, for a request naming a study, that the caller is one of its
researchers. Each manifest, chunk and query call is signed by the researcher (the node
checks it, so the coordinator cannot make one), a query's SQL is sealed to the node, and
chunks, manifests, answers and query refusals are sealed by the node to the researcher;
the coordinator relays ciphertext and keeps none of it.
"""

from __future__ import annotations

import concurrent.futures
import json

from coordinator import catalog, studies
from coordinator.db import Database
from coordinator.sessions import NodeSessions
from scifed import sentences
from scifed.delivery import AccessKind, AccessRequest, GrantList, GrantRef, GrantsReply
from scifed.errors import NodeUnavailable, NotFound, UserError


class AccessRelay:
    def __init__(self, db: Database, sessions: NodeSessions, timeout: float) -> None:
        self.db = db
        self.sessions = sessions
        self.timeout = timeout

    def _node_of(self, record_id: str) -> str:
        found = catalog.get_record(self.db, record_id)
        if found is None:
            raise NotFound(f"no catalog record '{record_id[:100]}'")
        return found[1]

    def _ask(self, node: str, kind: str, payload: bytes) -> bytes:
        future = self.sessions.send(node, kind, payload)
        try:
            result = future.result(timeout=self.timeout)
        except concurrent.futures.TimeoutError:
            raise NodeUnavailable(f"node {node} did not answer within "
                                  f"{self.timeout:.0f}s; try again") from None
        if not result.ok:  # the node's words, with its sentence's key to pass on
            raise UserError(sentences.loads(result.error, result.error_said))
        return result.payload

    def request(self, researcher: str, record_id: str, payload: bytes) -> bytes:
        req = AccessRequest.loads(payload)
        statement = req.statement
        if statement.get("researcher") != researcher:
            raise UserError(f"the access request is signed for {statement.get('researcher')!r}"
                            f", not for the caller {researcher!r}")
        if statement.get("record_id") != record_id:
            raise UserError("the access request names another dataset than the call")
        node = self._node_of(record_id)
        study = str(statement.get("study") or "")
        if study:
            view = studies.get_study(self.db, study)
            if researcher not in view.researchers:
                raise UserError(f"{researcher} is not a researcher of study '{view.name}'")
            if node not in view.accepted:
                raise UserError(f"node {node} is not a member of study '{view.name}'")
        return self._ask(node, AccessKind.REQUEST, payload)

    def list(self, researcher: str, record_id: str) -> tuple[bytes, list[str]]:
        nodes = [self._node_of(record_id)] if record_id else self.sessions.connected()
        grants, unreached = [], []
        ask = GrantList(researcher=researcher).dumps()
        for node in nodes:
            try:
                grants += GrantsReply.loads(self._ask(node, AccessKind.LIST, ask)).grants
            except (NodeUnavailable, UserError):
                unreached.append(node)
        return GrantsReply(grants=grants).dumps(), unreached

    def relay(self, kind: AccessKind, researcher: str, record_id: str, payload: bytes) -> bytes:
        """A researcher's signed manifest, chunk or query call, with the caller's name as
        its mTLS certificate says (the node checks both against the grant)."""
        ref = GrantRef.loads(payload)
        body = json.loads(ref.model_dump_json())
        return self._ask(self._node_of(record_id), kind,
                         GrantRef(**{**body, "researcher": researcher}).dumps())
