"""`scifed coordinator serve`: one mTLS gRPC port for nodes, researchers and operators."""

from __future__ import annotations

import logging
import signal
import threading
from concurrent import futures
from pathlib import Path

import grpc
from sqlalchemy import select

from coordinator import registry
from coordinator.access import AccessRelay
from coordinator.api import CoordinatorApiServicer
from coordinator.db import Database, Node
from coordinator.driver import JobDriver
from coordinator.link import NodeLinkServicer
from coordinator.revocations import SeenCertificates
from coordinator.sessions import NodeSessions
from coordinator.studies import StudyKeys
from protos.scifed.v1 import coordinator_pb2_grpc as api_pbg
from protos.scifed.v1 import federation_pb2_grpc as link_pbg
from scifed.at_rest import secure_state
from scifed.config import CoordinatorConfig
from scifed.errors import Unavailable, UserError
from scifed.pki import Crl, load_crl, newer_crl
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
    "/scifed.v1.CoordinatorApi/ListJobs": ("researcher",),
    "/scifed.v1.CoordinatorApi/GetResult": ("researcher",),
    "/scifed.v1.CoordinatorApi/ResumeJob": ("researcher",),
    "/scifed.v1.CoordinatorApi/CancelJob": ("researcher",),
    "/scifed.v1.CoordinatorApi/ListAllJobs": ("operator",),
    "/scifed.v1.CoordinatorApi/ListRevocations": ("operator",),
    "/scifed.v1.CoordinatorApi/RequestAccess": ("researcher",),
    "/scifed.v1.CoordinatorApi/ListAccess": ("researcher",),
    "/scifed.v1.CoordinatorApi/AccessManifest": ("researcher",),
    "/scifed.v1.CoordinatorApi/AccessChunk": ("researcher",),
    "/scifed.v1.CoordinatorApi/AccessQuery": ("researcher",),
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
        self.sessions = NodeSessions(node_certs=self.node_certs)
        ca_pem = cfg.tls.files().read()[0]
        self.ca_pem = ca_pem
        self.crl: Crl | None = None  # the CA's newest CRL, forwarded to every node
        self.crl_path = crl_path(cfg)
        self.keys = StudyKeys(self.db, self.sessions, timeout=cfg.task_timeout_seconds)
        self.jobs = JobDriver(self.db, self.sessions, ca_pem,
                              task_timeout=cfg.task_timeout_seconds,
                              approval_timeout=cfg.approval_timeout_seconds,
                              approval_poll=approval_poll, flower=flower)
        self.link = NodeLinkServicer(self.db, self.sessions, self.keys, ca_pem,
                                     cfg.heartbeat_seconds, flower,
                                     on_connect=self.jobs.node_connected)
        self.seen = SeenCertificates()  # every caller's certificate, to name revocations
        self.access = AccessRelay(self.db, self.sessions, cfg.task_timeout_seconds)
        self.api = CoordinatorApiServicer(self.db, self.jobs, cfg.offline_after_seconds,
                                          self.access, crl=lambda: self.crl, seen=self.seen)
        self.flower = flower
        if self.crl_path is not None and self.crl_path.exists():
            self.crl_changed(self.crl_path.read_bytes())  # a broken CRL stops the start

    def node_certs(self) -> dict[str, bytes]:
        """The certificate of every node registered with a seal key claim, by name."""
        with self.db.session() as s:
            return {n.name: n.seal_claim["cert_pem"].encode()
                    for n in s.scalars(select(Node))
                    if isinstance(n.seal_claim, dict) and n.seal_claim.get("cert_pem")}

    def crl_changed(self, data: bytes) -> list[str]:
        """The CA's CRL file holds ``data``: if the CA signed it and it is newer than the
        one held, nodes get it from now on (with every task, heartbeat and registration),
        and the streams of certificates it revokes are closed. The nodes closed."""
        crl = load_crl(data, self.ca_pem, source=str(self.crl_path or "the CRL"))
        if newer_crl(self.crl, crl):
            self.crl = crl
            self.sessions.crl = crl.der
            log.info("forwarding %s to the nodes (%d revoked)", crl.describe(),
                     len(crl.serials))
        return self.revoked(self.crl.serials)

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
        self.revocations = revocations = RevocationList(self.core.crl_path, cfg.tls.ca)
        revocations.serials()  # a broken CRL stops the start, not the first call
        self._stop = threading.Event()
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=cfg.max_workers),
            interceptors=[AuthInterceptor(ROLE_RULES, revocations,
                                          on_peer=self.core.seen.saw)],
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
        again (when its file changed), forwarded to the nodes if it is newer, and streams
        of revoked certificates are closed; the interceptor refuses their calls from then
        on."""
        path, seen = self.core.crl_path, None
        while not self._stop.wait(REVOCATION_POLL_SECONDS):
            try:
                mtime = path.stat().st_mtime if path is not None and path.exists() else None
                if mtime is not None and mtime != seen:
                    self.core.crl_changed(path.read_bytes())
                    seen = mtime
                self.core.revoked(self.revocations.serials())
            except Exception:  # a CRL being rewritten, say: the next pass reads it again
                log.exception("reading the revocation list failed")

    def stop(self) -> None:
        self._stop.set()
        self.core.keys.stop()
        self.server.stop(grace=2).wait()
        if self.flower is not None:
            self.flower.stop()


def crl_path(cfg: CoordinatorConfig) -> Path | None:
    """The CA's CRL file: ``tls.crl``, else ``crl.pem`` beside the CA certificate if there
    is one (where `scifed ca init` writes it)."""
    if cfg.tls.crl is not None:
        return cfg.tls.crl
    beside = cfg.tls.ca.with_name("crl.pem")
    return beside if beside.exists() else None


def serve(cfg: CoordinatorConfig) -> None:
    proc = CoordinatorProcess(cfg)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    proc.start()
    done.wait()
    log.info("coordinator stopping")
    proc.stop()
