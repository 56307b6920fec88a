"""Open task streams of the connected nodes, and tasks in flight on them.

A node has at most one live stream; a reconnect replaces the older one. A task sent to
a node resolves when the node's result comes back up the stream, or fails when the
stream closes first.
"""

from __future__ import annotations

import queue
import threading
import uuid
from concurrent.futures import Future

from protos.scifed.v1 import federation_pb2 as pb
from scifed.errors import NodeUnavailable


class NodeOffline(NodeUnavailable):
    """The node has no open task stream, or closed it before answering."""


class Session:
    def __init__(self, node: str) -> None:
        self.node = node
        self.outbox: queue.Queue[pb.CoordinatorMessage] = queue.Queue()
        self.closed = threading.Event()
        self.pending: dict[str, Future] = {}


class NodeSessions:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_node: dict[str, Session] = {}

    def open(self, node: str) -> Session:
        session = Session(node)
        with self._lock:
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
        session.closed.set()
        for fut in list(session.pending.values()):
            if not fut.done():
                fut.set_exception(NodeOffline(f"node {session.node}: {why} before answering"))
        session.pending.clear()

    def connected(self) -> list[str]:
        with self._lock:
            return sorted(self._by_node)

    def send(self, node: str, kind: str, payload: bytes) -> Future:
        """Queue a task for `node`; the future yields its `TaskResult`."""
        with self._lock:
            session = self._by_node.get(node)
        if session is None or session.closed.is_set():
            raise NodeOffline(f"node {node} is offline")
        task_id = uuid.uuid4().hex
        fut: Future = Future()
        session.pending[task_id] = fut
        session.outbox.put(pb.CoordinatorMessage(
            task=pb.Task(task_id=task_id, kind=kind, payload=payload)))
        return fut

    @staticmethod
    def deliver(session: Session, result: pb.TaskResult) -> None:
        fut = session.pending.pop(result.task_id, None)
        if fut is not None and not fut.done():
            fut.set_result(result)
