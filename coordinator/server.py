"""`scifed coordinator serve`: one mTLS gRPC port for nodes, researchers and operators."""

from __future__ import annotations

import logging
import signal
import threading
from concurrent import futures

import grpc

from coordinator import registry
from coordinator.api import CoordinatorApiServicer
from coordinator.db import Database
from coordinator.driver import JobDriver
from coordinator.link import NodeLinkServicer
from coordinator.sessions import NodeSessions
from coordinator.studies import StudyKeys
from protos.scifed.v1 import coordinator_pb2_grpc as api_pbg
from protos.scifed.v1 import federation_pb2_grpc as link_pbg
from scifed.at_rest import secure_state
from scifed.config import CoordinatorConfig
from scifed.errors import Unavailable, UserError
from scifed.tls import SERVER_OPTIONS, AuthInterceptor, RevocationList, server_credentials
from scifed.wire import now_ms

log = logging.getLogger("scifed.coordinator")

ANY_USER = ("researcher", "operator")
# Which certificate role may call which RPC; anything not listed is refused.
ROLE_RULES: dict[str, tuple[str, ...]] = {
    "/scifed.v1.NodeLink/Register": ("node",),
    "/scifed.v1.NodeLink/TaskStream": ("node",),
    "/scifed.v1.NodeLink/SyncCatalog": ("node",),
    "/scifed.v1.CoordinatorApi/WhoAmI": ("node", *ANY_USER),
    "/scifed.v1.CoordinatorApi/SearchCatalog": ANY_USER,
    "/scifed.v1.CoordinatorApi/GetRecord": ANY_USER,
    "/scifed.v1.CoordinatorApi/ListNodes": ("operator",),
    "/scifed.v1.NodeLink/ListInvitations": ("node",),
    "/scifed.v1.NodeLink/AnswerInvitation": ("node",),
    "/scifed.v1.NodeLink/AuditHeads": ("node",),
    "/scifed.v1.CoordinatorApi/CreateStudy": ("operator",),
    "/scifed.v1.CoordinatorApi/AddResearcher": ("operator",),
    "/scifed.v1.CoordinatorApi/ListStudies": ANY_USER,
    "/scifed.v1.CoordinatorApi/SubmitJob": ("researcher",),
    "/scifed.v1.CoordinatorApi/GetJob": ("researcher",),
    "/scifed.v1.CoordinatorApi/GetResult": ("researcher",),
    "/scifed.v1.CoordinatorApi/ResumeJob": ("researcher",),
    "/scifed.v1.CoordinatorApi/CancelJob": ("researcher",),
}


REVOCATION_POLL_SECONDS = 1.0


class CoordinatorCore:
    """The coordinator's state and logic, wired by constructors: database, node sessions,
    study keys, the job driver and the two servicers. The process adds the mTLS server
    and the Flower SuperLink; the in-memory harness drives the same core directly."""

    def __init__(self, cfg: CoordinatorConfig, flower=None, approval_poll: float = 2.0) -> None:
        # 0700, databases and keys (its TLS key's directory) 0600: narrowed with a
        # warning, or refused
        secure_state(cfg.state_dir, keys=(cfg.tls.key, *cfg.tls.key.parent.glob("*.key")))
        self.db = Database(cfg.database_url)
        registry.reset_connections(self.db)
        self.sessions = NodeSessions()
        ca_pem = cfg.tls.files().read()[0]
        self.keys = StudyKeys(self.db, self.sessions, timeout=cfg.task_timeout_seconds)
        self.jobs = JobDriver(self.db, self.sessions, ca_pem,
                              task_timeout=cfg.task_timeout_seconds,
                              approval_timeout=cfg.approval_timeout_seconds,
                              approval_poll=approval_poll, flower=flower)
        self.link = NodeLinkServicer(self.db, self.sessions, self.keys, ca_pem,
                                     cfg.heartbeat_seconds, flower,
                                     on_connect=self.jobs.node_connected)
        self.api = CoordinatorApiServicer(self.db, self.jobs, cfg.offline_after_seconds)
        self.flower = flower

    def revoked(self, serials: frozenset[int]) -> list[str]:
        """The CA revoked ``serials``: close the task streams opened with them (their
        tasks in flight fail, the nodes show offline and get no more tasks), and drop
        those nodes' SuperNode keys from the Flower SuperLink. The nodes closed."""
        closed = self.sessions.close_revoked(serials)
        for node in closed:
            registry.mark_connected(self.db, node, False, now_ms())
            log.warning("node %s: its certificate was revoked; its task stream is closed",
                        node)
            if self.flower is not None:
                try:
                    self.flower.unregister_supernode(node)
                except (UserError, Unavailable) as exc:  # the SuperLink is down
                    log.error("node %s: could not drop its SuperNode key: %s", node, exc)
        return closed


class CoordinatorProcess:
    def __init__(self, cfg: CoordinatorConfig) -> None:
        self.cfg = cfg
        self.flower = None
        if cfg.flower_port:
            from coordinator.flower import SuperLink

            self.flower = SuperLink(cfg.state_dir, cfg.tls.files(), port=cfg.flower_port)
        self.core = CoordinatorCore(cfg, self.flower)
        self.db, self.jobs = self.core.db, self.core.jobs
        self.revocations = revocations = RevocationList(cfg.tls.crl, cfg.tls.ca)
        revocations.serials()  # a broken CRL stops the start, not the first call
        self._stop = threading.Event()
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=cfg.max_workers),
            interceptors=[AuthInterceptor(ROLE_RULES, revocations)],
            options=SERVER_OPTIONS)
        link_pbg.add_NodeLinkServicer_to_server(self.core.link, self.server)
        api_pbg.add_CoordinatorApiServicer_to_server(self.core.api, self.server)
        try:
            self.port = self.server.add_secure_port(cfg.listen,
                                                    server_credentials(cfg.tls.files()))
        except RuntimeError as exc:
            raise UserError(f"cannot listen on {cfg.listen}: {exc}") from None

    def start(self) -> None:
        if self.flower is not None:
            self.flower.start()
        self.server.start()
        threading.Thread(target=self._watch_revocations, daemon=True,
                         name="revocations").start()
        log.info("coordinator listening on %s", self.cfg.listen)

    def _watch_revocations(self) -> None:
        """Revocation takes effect at once: every REVOCATION_POLL_SECONDS the CRL is read
        again (when its file changed) and streams of revoked certificates are closed; the
        interceptor refuses their calls from then on."""
        while not self._stop.wait(REVOCATION_POLL_SECONDS):
            try:
                self.core.revoked(self.revocations.serials())
            except Exception:  # a CRL being rewritten, say: the next pass reads it again
                log.exception("reading the revocation list failed")

    def stop(self) -> None:
        self._stop.set()
        self.server.stop(grace=2).wait()
        if self.flower is not None:
            self.flower.stop()


def serve(cfg: CoordinatorConfig) -> None:
    proc = CoordinatorProcess(cfg)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    proc.start()
    done.wait()
    log.info("coordinator stopping")
    proc.stop()
