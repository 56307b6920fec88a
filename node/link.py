"""The node's outbound link to the coordinator.

The node dials out (its platform opens no inbound port): it registers, publishes its
catalog, and keeps a task stream open that carries heartbeats and results up and tasks
down. When the coordinator goes away it reconnects with exponential backoff. The
federation CA's CRL comes down with the registration, heartbeat acks and tasks; the link
hands each to the node's :class:`node.studies.PeerTrust`, which keeps the newest.
"""

from __future__ import annotations

import json
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator

import grpc

from node.studies import PeerTrust
from protos.scifed.v1 import federation_pb2 as pb
from protos.scifed.v1 import federation_pb2_grpc as pbg
from scifed import __version__
from scifed.config import NodeConfig
from scifed.errors import UserError
from scifed.sealing import make_claim
from scifed.tls import secure_channel

log = logging.getLogger("scifed.node.link")

class Outbox:
    """Results waiting to go up the task stream, each tagged with the coordinator
    instance whose task it answers.

    The task that asked for a result held across a coordinator restart is gone with the
    old instance: the new one re-runs an aggregate job and asks again (and gets the kept
    answer), or it failed the job, or a `train` job waits for `job resume` with fresh
    tasks. So when the link registers with a new instance, such results are handed to
    ``on_stranded`` instead of being sent: one that carries a DP contribution never left
    the node, and its charge is refunded if the job is then said to have ended without
    asking again (node/runner.py).
    """

    def __init__(self, on_stranded: Callable[[pb.Task, pb.TaskResult], None]) -> None:
        self.on_stranded = on_stranded
        self.instance = ""  # the coordinator instance of the current session
        self._queue: queue.Queue[tuple[str, pb.Task, pb.TaskResult]] = queue.Queue()
        self._lock = threading.Lock()

    def put(self, instance: str, task: pb.Task, result: pb.TaskResult) -> None:
        self._queue.put((instance, task, result))

    def empty(self) -> bool:
        return self._queue.empty()

    def take(self, timeout: float) -> pb.TaskResult | None:
        """The next result to send, or None (none within ``timeout``, or stranded)."""
        try:
            instance, task, result = self._queue.get(timeout=timeout)
        except queue.Empty:
            return None
        if instance != self.instance:
            self.on_stranded(task, result)
            return None
        return result

    def registered(self, instance: str) -> None:
        """The link registered with ``instance``: strand what older instances asked."""
        with self._lock:
            if instance == self.instance:
                return
            self.instance = instance
            kept = []
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item[0] == instance:
                    kept.append(item)
                else:
                    self.on_stranded(item[1], item[2])
            for item in kept:
                self._queue.put(item)


class CoordinatorLink:
    def __init__(self, cfg: NodeConfig, *, published: Callable[[], list[dict]],
                 handle: Callable[[pb.Task], pb.TaskResult],
                 audit_head: Callable[[], tuple[int, str]],
                 sync_needed: threading.Event | None = None, supernode_key: str = "",
                 on_new_superlink: Callable[[], None] | None = None,
                 on_stranded: Callable[[pb.Task, pb.TaskResult], None] = lambda t, r: None,
                 trust: PeerTrust, housekeeping: Callable[[], None] | None = None) -> None:
        """``handle``: runs one task (the node runner). ``sync_needed``:
        set it to republish the catalog (the dataset registry does on every change).
        ``supernode_key``: the SuperNode's public key, registered with the coordinator when
        the node trains; ``on_new_superlink`` runs (before tasks flow) when the
        coordinator's Flower SuperLink is a new one. ``on_stranded(task, result)`` gets
        each result this link will never send: its task came from a coordinator instance
        that has since restarted, and the result had not left the node. ``trust``: the
        node's CRL holder (``NodeStudies.trust``). ``housekeeping`` runs with every
        heartbeat (the node's one periodic loop): the delivery desk's sweep of the
        prepared downloads of grants that expired meanwhile."""
        self.cfg = cfg
        self.trust = trust
        self.seal_claim = make_claim(cfg.tls.key.parent, name=cfg.name, role="node",
                                     cert_path=cfg.tls.cert, key_path=cfg.tls.key).to_dict()
        self.supernode_key = supernode_key
        self.on_new_superlink = on_new_superlink
        self.housekeeping = housekeeping
        self._flower_epoch = ""
        self._published = published
        self.handle = handle
        self.audit_head = audit_head
        self.connected = False
        self.last_contact_ms = 0
        self.published_count = 0
        self._stop = threading.Event()
        self._sync_needed = sync_needed or threading.Event()
        self._outbox = Outbox(on_stranded)
        self._stub: pbg.NodeLinkStub | None = None
        self._call = None
        self._registered = False
        self._threads: list[threading.Thread] = []

    # -- lifecycle -----------------------------------------------------------------
    def start(self) -> None:
        for target in (self._run, self._syncer):
            t = threading.Thread(target=target, daemon=True, name=f"link-{target.__name__}")
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        self._stop.set()
        self._sync_needed.set()
        if self._call is not None:
            self._call.cancel()

    def call(self, method: str, request, timeout: float = 30):
        """A unary call to the coordinator over the live link."""
        stub = self._stub
        if stub is None or not self.connected:
            raise UserError(f"node {self.cfg.name} is not connected to the coordinator "
                            f"{self.cfg.coordinator}; try again when `scifed node status` "
                            "says connected")
        return getattr(stub, method)(request, timeout=timeout)

    # -- internals -----------------------------------------------------------------
    def _touch(self) -> None:
        self.last_contact_ms = int(time.time() * 1000)

    def _sync(self) -> None:
        records = self._published()
        reply = self._stub.SyncCatalog(
            pb.SyncCatalogRequest(records_json=[json.dumps(r) for r in records]), timeout=30)
        self.published_count = reply.indexed
        self._touch()
        log.info("catalog published: %d records (%d withdrawn)", reply.indexed, reply.removed)

    def _syncer(self) -> None:
        while not self._stop.is_set():
            self._sync_needed.wait()
            if self._stop.is_set():
                return
            self._sync_needed.clear()
            if not self.connected:
                continue  # the next connection publishes everything anyway
            try:
                self._sync()
            except (grpc.RpcError, UserError) as exc:
                log.warning("catalog publication failed, will retry: %s", _msg(exc))
                time.sleep(1.0)
                self._sync_needed.set()

    def _outgoing(self, heartbeat_s: float) -> Iterator[pb.NodeMessage]:
        next_beat = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_beat:
                next_beat = now + heartbeat_s
                yield pb.NodeMessage(heartbeat=self._heartbeat())
            result = self._outbox.take(timeout=max(0.0, min(0.5, next_beat - now)))
            if result is not None:
                yield pb.NodeMessage(result=result)

    def _heartbeat(self) -> pb.Heartbeat:
        """A beat carries the audit chain head, so the coordinator anchors entries made
        between tasks (a policy change, an approval) within one heartbeat."""
        if self.housekeeping is not None:
            try:
                self.housekeeping()
            except (OSError, sqlite3.Error, UserError) as exc:  # the beat still goes
                log.warning("housekeeping at the heartbeat failed, next beat retries: %s",
                            _msg(exc) if isinstance(exc, UserError) else exc)
        beat = pb.Heartbeat(sent_unix_ms=int(time.time() * 1000))
        try:
            beat.audit_seq, beat.audit_hash = self.audit_head()
        except sqlite3.Error as exc:  # a beat still says the node is alive
            log.warning("audit head not read for the heartbeat: %s", exc)
        return beat

    def _handle_task(self, task: pb.Task, instance: str) -> None:
        result = self.handle(task)
        result.audit_seq, result.audit_hash = self.audit_head()
        self._outbox.put(instance, task, result)


    def _session(self) -> None:
        channel = secure_channel(self.cfg.coordinator, self.cfg.tls.files())
        try:
            self._stub = pbg.NodeLinkStub(channel)
            reply = self._stub.Register(
                pb.RegisterRequest(platform=self.cfg.platform, software_version=__version__,
                                   seal_claim_json=json.dumps(self.seal_claim),
                                   supernode_public_key=self.supernode_key),
                timeout=10)
            self._touch()
            self._registered = True
            self.trust.offer(reply.crl, via="registration")
            self._outbox.registered(reply.instance)
            if reply.flower_epoch != self._flower_epoch:
                if self._flower_epoch and self.on_new_superlink is not None:
                    self.on_new_superlink()
                self._flower_epoch = reply.flower_epoch
            self._sync()
            self.connected = True
            log.info("connected to coordinator %s as %s", self.cfg.coordinator, reply.node_name)
            self._call = self._stub.TaskStream(self._outgoing(reply.heartbeat_seconds))
            for msg in self._call:
                self._touch()
                if msg.HasField("ack") and msg.ack.crl:
                    self.trust.offer(msg.ack.crl, via="heartbeat")
                if msg.HasField("task"):
                    threading.Thread(target=self._handle_task,
                                     args=(msg.task, reply.instance), daemon=True).start()
        finally:
            self.connected = False
            self._call = None
            channel.close()

    def _run(self) -> None:
        delay = 0.5
        while not self._stop.is_set():
            self._registered = False
            try:
                self._session()
            except grpc.RpcError as exc:
                if self._stop.is_set():
                    return
                log.warning("coordinator link down: %s", _msg(exc))
            except UserError as exc:
                log.error("coordinator link: %s", exc)
            if self._registered:
                delay = 0.5  # the coordinator was up a moment ago: retry quickly
            self._stop.wait(delay)
            delay = min(delay * 2, self.cfg.reconnect_max_seconds)


def _msg(exc: Exception) -> str:
    if isinstance(exc, grpc.RpcError) and hasattr(exc, "details"):
        return f"{exc.code().name}: {exc.details()}"
    return str(exc)
