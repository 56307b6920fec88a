"""Open task streams of the connected nodes, and tasks in flight on them.

A node has at most one live stream; a reconnect replaces the older one. A task sent to
a node resolves when the node's result comes back up the stream, or fails when the
stream closes first.

Every task carries the federation CA's CRL as the coordinator holds it (``crl``), and a
release task the node certificates of the nodes the coordinator knows (``node_certs``),
so the node decides with the newest revocations it was shown (node/studies.py:PeerTrust).
"""

from __future__ import annotations

import queue
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import Future

from protos.scifed.v1 import federation_pb2 as pb
from scifed.errors import NodeUnavailable
from scifed.tasks import TaskKind


class NodeOffline(NodeUnavailable):
    """The node has no open task stream, or closed it before answering."""


class NodeRevoked(NodeOffline):
    """The node's certificate was revoked: no task waits for it to come back."""


class Session:
    def __init__(self, node: str, serial: int | None = None) -> None:
        self.node = node
        self.serial = serial  # of the certificate the stream was opened with
        self.outbox: queue.Queue[pb.CoordinatorMessage] = queue.Queue()
        self.closed = threading.Event()
        self.pending: dict[str, Future] = {}
        # a task is registered and a stream closed one at a time: a task queued while the
        # stream closed would otherwise wait out the task timeout instead of failing
        self.lock = threading.Lock()
        self.crl_sent = b""  # the CRL last sent down this stream with a heartbeat ack


class NodeSessions:
    def __init__(self, node_certs: Callable[[], dict[str, bytes]] = dict) -> None:
        """``node_certs()``: the node certificate (PEM) of each node the coordinator
        knows, by name (its registry), sent with release tasks."""
        self._lock = threading.Lock()
        self._by_node: dict[str, Session] = {}
        self._revoked: set[str] = set()  # nodes whose stream a revocation closed
        self.crl = b""  # the CA's newest CRL (DER) the coordinator holds
        self.node_certs = node_certs

    def crl_for(self, node: str) -> bytes:
        """The CRL sent to ``node`` with its tasks and heartbeat acks: the newest held."""
        return self.crl

    def open(self, node: str, serial: int | None = None) -> Session:
        session = Session(node, serial)
        with self._lock:
            self._revoked.discard(node)  # re-enrolled: a certificate the CA has not revoked
            old = self._by_node.get(node)
            self._by_node[node] = session
        if old is not None:
            self._close(old, "the node reconnected")
        return session

    def close(self, session: Session) -> bool:
        """Close a stream; True if it was still the node's current one."""
        with self._lock:
            current = self._by_node.get(session.node) is session
            if current:
                del self._by_node[session.node]
        self._close(session, "the node disconnected")
        return current

    @staticmethod
    def _close(session: Session, why: str) -> None:
        with session.lock:
            session.closed.set()
            pending = list(session.pending.values())
            session.pending.clear()
        for fut in pending:
            if not fut.done():
                fut.set_exception(NodeOffline(f"node {session.node}: {why} before answering"))

    def close_revoked(self, serials: frozenset[int]) -> list[str]:
        """Close every stream opened with a certificate now revoked; the nodes closed.
        Tasks in flight on them fail at once."""
        with self._lock:
            revoked = [s for s in self._by_node.values() if s.serial in serials]
            for session in revoked:
                del self._by_node[session.node]
                self._revoked.add(session.node)
        for session in revoked:
            self._close(session, "its certificate was revoked")
        return sorted(s.node for s in revoked)

    def connected(self) -> list[str]:
        with self._lock:
            return sorted(self._by_node)

    def send(self, node: str, kind: str, payload: bytes) -> Future:
        """Queue a task for `node`; the future yields its `TaskResult`."""
        with self._lock:
            session = self._by_node.get(node)
        if session is None or session.closed.is_set():
            if node in self._revoked:
                raise NodeRevoked(f"node {node}'s certificate was revoked")
            raise NodeOffline(f"node {node} is offline")
        task_id = uuid.uuid4().hex
        fut: Future = Future()
        with session.lock:
            if session.closed.is_set():
                raise NodeOffline(f"node {node} is offline")
            session.pending[task_id] = fut
        certs = self.node_certs() if kind == TaskKind.RELEASE else {}
        session.outbox.put(pb.CoordinatorMessage(
            task=pb.Task(task_id=task_id, kind=kind, payload=payload,
                         crl=self.crl_for(node), node_certs=certs)))
        return fut

    @staticmethod
    def deliver(session: Session, result: pb.TaskResult) -> None:
        with session.lock:
            fut = session.pending.pop(result.task_id, None)
        if fut is not None and not fut.done():
            fut.set_result(result)
