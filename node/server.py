"""`scifed node serve`: the node process — admin API on a Unix socket, outbound link."""

from __future__ import annotations

import json
import logging
import signal
import threading
from concurrent import futures

import grpc

from node.admin import NodeAdminServicer
from node.approvals import Approvals
from node.audit import AuditLog
from node.datasets import DatasetRegistry
from node.flower import SuperNode
from node.link import CoordinatorLink
from node.local_api import LocalApi, socket_path
from node.store import NodeStore
from node.studies import NodeStudies
from node.tasks import JobTasks
from node.training import TrainingGate
from node.training import handlers as training_handlers
from protos.scifed.v1 import node_admin_pb2_grpc as admin_pbg
from scifed.config import NodeConfig
from scifed.errors import UserError
from scifed.rpc import start_on_private_socket

log = logging.getLogger("scifed.node")


class NodeProcess:
    """Everything a node runs, wired together; `start()` returns once it is serving."""

    def __init__(self, cfg: NodeConfig) -> None:
        self.cfg = cfg
        if not cfg.data_dir.is_dir():
            raise UserError(f"data_dir {cfg.data_dir} does not exist")
        cfg.state_dir.mkdir(parents=True, exist_ok=True)
        self.store = NodeStore(cfg.state_dir / "node.db")
        self.registry = DatasetRegistry(self.store, node_name=cfg.name, platform=cfg.platform,
                                        data_dir=cfg.data_dir)
        self.link = CoordinatorLink(cfg, self.registry.published_records)
        self.registry.on_change = self.link.request_sync
        self.studies = NodeStudies(self.store, self.registry, self.link)
        self.approvals = Approvals(self.store, cfg.approvers)
        self.link.audit_head = AuditLog(self.store).head
        self.link.handlers.update(
            JobTasks(self.studies, self.registry, self.approvals).handlers())
        self.admin = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        admin_pbg.add_NodeAdminServicer_to_server(
            NodeAdminServicer(self.registry, self.link, self.studies, self.approvals),
            self.admin)
        # Apps on this host (the Flower ClientApp) reach data only through this socket.
        gate = TrainingGate(self.studies, self.registry, self.approvals)
        self.local_api = LocalApi(gate, cfg.state_dir)
        self.link.handlers.update(training_handlers(gate))
        self.supernode = None
        if cfg.flower_superlink:
            self.supernode = SuperNode(name=cfg.name, pki_dir=cfg.tls.key.parent,
                                       ca=cfg.tls.ca, superlink=cfg.flower_superlink,
                                       state_dir=cfg.state_dir,
                                       local_socket=socket_path(cfg.state_dir))
            self.link.supernode_key = self.supernode.public_key_pem.decode()
            self.link.on_new_superlink = self._restart_supernode
            self.link.handlers["flower.reset"] = self._reset_task
        self._supernode_lock = threading.Lock()

    def start(self) -> None:
        # Only the officer's account may talk to the admin API.
        start_on_private_socket(self.admin, self.cfg.socket_path)
        self.local_api.start()
        self.link.start()
        if self.supernode is not None:
            # Runs beside the node; its key is registered when the link connects, and the
            # supervisor restarts it whenever it dies.
            threading.Thread(target=self._start_supernode, daemon=True).start()
        log.info("node %s serving admin API on %s", self.cfg.name, self.cfg.socket_path)

    def _start_supernode(self) -> None:
        with self._supernode_lock:
            try:
                self.supernode.start(timeout=120)
            except UserError as exc:
                log.error("Flower SuperNode: %s", exc)

    def _restart_supernode(self, why: str = "the coordinator's Flower SuperLink is new") -> None:
        """A run ended while this SuperNode may still hold its work (the coordinator
        restarted, the run was stopped, the node was dropped). Flower 1.41's SuperNode can
        then answer the next run's message under the old run's id, which the SuperLink
        refuses, so the next run never hears from this node: start it afresh."""
        log.info("%s: restarting the SuperNode", why)
        with self._supernode_lock:
            self.supernode.stop()
        self._start_supernode()

    def _reset_task(self, payload: bytes) -> bytes:
        self._restart_supernode(f"Flower run of job {json.loads(payload)['job_id']} ended "
                                "with work left at this node")
        return b"{}"

    def stop(self) -> None:
        if self.supernode is not None:
            self.supernode.stop()
        self.link.stop()
        self.local_api.stop()
        self.admin.stop(grace=2).wait()
        self.cfg.socket_path.unlink(missing_ok=True)


def serve(cfg: NodeConfig) -> None:
    proc = NodeProcess(cfg)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    proc.start()
    done.wait()
    log.info("node %s stopping", cfg.name)
    proc.stop()
