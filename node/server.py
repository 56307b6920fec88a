"""`scifed node serve`: the node process — admin API on a Unix socket, outbound link."""

from __future__ import annotations

import logging
import os
import signal
import threading
from concurrent import futures

import grpc

from node.admin import NodeAdminServicer
from node.approvals import Approvals, legacy_approvers_notice
from node.apps import AppTrust
from node.audit import AuditLog
from node.budget import BudgetLedger
from node.datasets import DatasetRegistry
from node.delivery import Delivery
from node.flower import SuperNode
from node.gate import Gate
from node.link import CoordinatorLink
from node.local_api import LocalApi, socket_path
from node.policy import PolicyBook
from node.release import ReleasePath
from node.review import OutputReviews
from node.runner import NodeRunner
from node.store import NodeStore
from node.studies import NodeStudies
from protos.scifed.v1 import node_admin_pb2_grpc as admin_pbg
from scifed.at_rest import secure_state
from scifed.config import NodeConfig
from scifed.errors import UserError
from scifed.rpc import start_on_private_socket
from scifed.tasks import Empty, FlowerReset, TaskKind

log = logging.getLogger("scifed.node")


class NodeCore:
    """The node's parts that decide and compute, wired by constructors: store, dataset
    registry, studies, approvals, the gate, the release path and the task runner. The
    node process adds its transports (link, admin socket, local API, SuperNode); the
    in-memory harness links the same core straight to a coordinator."""

    def __init__(self, cfg: NodeConfig, extra: dict | None = None) -> None:
        if not cfg.data_dir.is_dir():
            raise UserError(f"data_dir {cfg.data_dir} does not exist")
        # 0700, databases and keys (TLS, seal) 0600: narrowed with a warning, or refused
        secure_state(cfg.state_dir, keys=(cfg.tls.key, *cfg.tls.key.parent.glob("*.key")))
        self.cfg = cfg
        self.store = NodeStore(cfg.state_dir / "node.db")
        self.sync_needed = threading.Event()  # the registry asks the link to republish
        self.registry = DatasetRegistry(self.store, node_name=cfg.name, platform=cfg.platform,
                                        data_dir=cfg.data_dir, on_change=self.sync_needed.set)
        self.audit = AuditLog(self.store)
        self.studies = NodeStudies(self.store, self.registry, cfg)
        self.approvals = Approvals(self.store, cfg.name)
        if notice := legacy_approvers_notice(cfg.approvers):  # names approve nothing
            log.warning(notice)
        self.gate = Gate(node=cfg.name, registry=self.registry, studies=self.studies,
                         approvals=self.approvals, audit=self.audit,
                         policies=PolicyBook(self.store), ledger=BudgetLedger(self.store))
        self.reviews = OutputReviews(self.store, self.approvals, cfg.output_review_hours)
        self.runner = NodeRunner(self.gate,
                                 ReleasePath(self.gate, self.audit, cfg.tls.ca.read_bytes(),
                                             reviews=self.reviews),
                                 self.studies, self.approvals, extra=extra)
        self.delivery = Delivery(cfg, self.registry, self.studies, self.approvals, self.audit,
                                 self.gate.policies)
        self.runner.handlers.update(self.delivery.handlers())


class NodeProcess:
    """Everything a node runs, wired together; `start()` returns once it is serving."""

    def __init__(self, cfg: NodeConfig) -> None:
        self.cfg = cfg
        self._supernode_lock = threading.Lock()
        self.supernode = None
        extra = {}
        if cfg.flower_superlink:
            self.supernode = SuperNode(name=cfg.name, pki_dir=cfg.tls.key.parent,
                                       ca=cfg.tls.ca, superlink=cfg.flower_superlink,
                                       state_dir=cfg.state_dir,
                                       local_socket=socket_path(cfg.state_dir))
            extra[TaskKind.FLOWER_RESET] = self._reset_task
        self.core = core = NodeCore(cfg, extra)
        self.registry, self.studies = core.registry, core.studies
        self.link = CoordinatorLink(
            cfg, published=core.registry.published_records, handle=core.runner.handle,
            audit_head=core.audit.head, sync_needed=core.sync_needed,
            supernode_key=self.supernode.public_key_pem.decode() if self.supernode else "",
            on_new_superlink=self._restart_supernode if self.supernode else None,
            on_stranded=core.runner.stranded, trust=core.studies.trust,
            housekeeping=core.delivery.sweep)
        self.admin = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        admin_pbg.add_NodeAdminServicer_to_server(
            NodeAdminServicer(core.registry, self.link, core.studies, core.approvals,
                              core.delivery, core.reviews),
            self.admin)
        # Apps on this host (the Flower ClientApp) reach data only through this socket.
        self.local_api = LocalApi(core.gate, cfg.state_dir,
                                  AppTrust(cfg.name, core.audit, cfg.trusted_apps))

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
        job_id = FlowerReset.loads(payload).job_id
        self._restart_supernode(f"Flower run of job {job_id} ended with work left at this "
                                "node")
        return Empty().dumps()

    def stop(self) -> None:
        # running queries stop first, so the process exits within moments of SIGTERM
        self.core.gate.running.end_all("the node is stopping")
        if self.supernode is not None:
            self.supernode.stop()
        self.link.stop()
        self.local_api.stop()
        self.admin.stop(grace=2).wait()
        self.cfg.socket_path.unlink(missing_ok=True)


# After SIGTERM, how long the node's parts get to stop before the process exits anyway.
STOP_SECONDS = 5.0


def serve(cfg: NodeConfig) -> None:
    """Run until SIGTERM or SIGINT, then stop within :data:`STOP_SECONDS`: running
    queries are interrupted, the SuperNode and the servers stop, and the process exits
    even if a worker thread is still busy (a registration's profiling, say). Exiting
    then loses nothing: every decision, charge and release is one SQLite transaction,
    committed or not at all."""
    proc = NodeProcess(cfg)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    proc.start()
    done.wait()
    log.info("node %s stopping", cfg.name)
    stopper = threading.Thread(target=proc.stop, daemon=True, name="stop")
    stopper.start()
    stopper.join(STOP_SECONDS)
    if stopper.is_alive():
        log.warning("node %s: parts still busy after %.0fs; exiting", cfg.name, STOP_SECONDS)
    logging.shutdown()
    os._exit(0)
