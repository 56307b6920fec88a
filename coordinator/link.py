"""The coordinator's side of the node link: registration, task streams, catalog sync."""

from __future__ import annotations

import json
import logging
import queue
import secrets
import threading
from collections.abc import Callable

import grpc

from coordinator import catalog, registry, studies
from coordinator.db import Database
from coordinator.sessions import NodeSessions
from coordinator.studies import StudyKeys
from protos.scifed.v1 import federation_pb2 as pb
from protos.scifed.v1 import federation_pb2_grpc as pbg
from scifed import __version__
from scifed.errors import UserError
from scifed.sealing import SealKeyClaim, verify_claim
from scifed.tls import peer_identity
from scifed.wire import now_ms

log = logging.getLogger("scifed.coordinator.link")


class NodeLinkServicer(pbg.NodeLinkServicer):
    def __init__(self, db: Database, sessions: NodeSessions, keys: StudyKeys, ca_pem: bytes,
                 heartbeat_seconds: float, flower=None,
                 on_connect: Callable[[str], None] = lambda node: None) -> None:
        """``on_connect(node)`` runs once a node's task stream is open (the job driver
        tells it of jobs a coordinator restart ended)."""
        self.db = db
        self.sessions = sessions
        self.keys = keys
        self.ca_pem = ca_pem
        self.heartbeat_seconds = heartbeat_seconds
        self.flower = flower
        self.on_connect = on_connect
        self.instance = secrets.token_hex(8)  # new at every start (RegisterReply.instance)

    def Register(self, request, context):
        ident = peer_identity(context)
        claim = None
        if request.seal_claim_json:
            try:
                parsed = SealKeyClaim.from_dict(json.loads(request.seal_claim_json))
                verify_claim(parsed, self.ca_pem, expect_role="node", expect_name=ident.name)
            except (ValueError, KeyError, TypeError, UserError) as exc:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"seal key claim: {exc}")
            claim = parsed.to_dict()
        registry.upsert_node(self.db, name=ident.name, platform=request.platform,
                             software_version=request.software_version,
                             cert_fingerprint=ident.fingerprint_sha256, seal_claim=claim)
        if self.flower is not None and request.supernode_public_key:
            try:  # the node's certificate vouches for the key it sends over mTLS
                self.flower.register_supernode_key(ident.name,
                                                   request.supernode_public_key.encode())
            except UserError as exc:
                context.abort(grpc.StatusCode.UNAVAILABLE, f"training registration: {exc}")
        registry.touch(self.db, ident.name, now_ms())
        return pb.RegisterReply(node_name=ident.name,
                                heartbeat_seconds=max(1, round(self.heartbeat_seconds)),
                                coordinator_version=__version__,
                                flower_epoch=self.flower.epoch if self.flower else "",
                                instance=self.instance, crl=self.sessions.crl_for(ident.name))

    def SyncCatalog(self, request, context):
        name = peer_identity(context).name
        try:
            records = [json.loads(r) for r in request.records_json]
            indexed, removed = catalog.sync_records(self.db, name, records)
        except json.JSONDecodeError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"record is not JSON: {exc}")
        except UserError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        return pb.SyncCatalogReply(indexed=indexed, removed=removed)

    def TaskStream(self, request_iterator, context):
        ident = peer_identity(context)
        name = ident.name
        if name not in registry.node_names(self.db):
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, "call Register first")
        session = self.sessions.open(name, ident.serial)
        registry.mark_connected(self.db, name, True, now_ms())
        if self.keys.pending():
            self.keys.rotate_pending()  # a study may have waited for this node to key it
        self.on_connect(name)

        def read_up() -> None:
            try:
                for msg in request_iterator:
                    if msg.HasField("heartbeat"):
                        session.outbox.put(pb.CoordinatorMessage(
                            ack=self.heartbeat(name, msg.heartbeat, session)))
                    elif msg.HasField("result"):
                        # the job gets the result first: its audit head then waits its
                        # turn with the other streams' writes (registry._stream_write),
                        # which with 100 nodes answering at once queued every result of
                        # a round behind the others' heads
                        self.sessions.deliver(session, msg.result)
                        if msg.result.audit_seq and not registry.result_head(
                                self.db, name, msg.result.audit_seq, msg.result.audit_hash,
                                now_ms()):
                            log.warning("audit head of node %s's result not recorded: the "
                                        "database is busy", name)
            except grpc.RpcError:
                pass  # the stream ended; the finally below records it
            finally:
                session.closed.set()

        threading.Thread(target=read_up, daemon=True, name=f"up-{name}").start()
        try:
            while context.is_active() and not session.closed.is_set():
                try:
                    yield session.outbox.get(timeout=0.5)
                except queue.Empty:
                    continue
        finally:
            if self.sessions.close(session):
                registry.mark_connected(self.db, name, False, now_ms())

    def heartbeat(self, name: str, beat: pb.Heartbeat, session=None) -> pb.HeartbeatAck:
        """A heartbeat from node ``name`` on its task stream: it is alive, and its audit
        chain head (if it sent one) is kept like the heads results carry, so what the
        node appended between tasks can no longer be rewritten unnoticed. The ack carries
        the CA's CRL when it changed since the last ack on this stream (``session``; on
        every ack without one), so a revocation reaches idle nodes within a beat."""
        now = now_ms()
        if not registry.beat(self.db, name, now, beat.audit_seq, beat.audit_hash):
            log.warning("heartbeat of node %s not recorded: the database is busy", name)
        crl = self.sessions.crl_for(name)
        if session is not None:
            if crl == session.crl_sent:
                crl = b""
            else:
                session.crl_sent = crl
        return pb.HeartbeatAck(server_unix_ms=now, crl=crl)

    def ListInvitations(self, request, context):
        name = peer_identity(context).name
        return pb.ListInvitationsReply(studies=[
            studies.to_proto(v) for v in studies.list_studies(self.db, node=name)])

    def AnswerInvitation(self, request, context):
        name = peer_identity(context).name
        try:
            view, rotate = studies.answer(self.db, request.study_id, name,
                                          accept=request.accept, datasets=list(request.datasets))
        except UserError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        if rotate:
            self.keys.rotate_pending()
        return studies.to_proto(view)

    def AuditHeads(self, request, context):
        name = peer_identity(context).name
        return pb.AuditHeadsReply(heads=[
            pb.AuditHead(seq=h.seq, hash=h.hash, received_unix_ms=h.received_ms)
            for h in registry.audit_heads(self.db, name)])
