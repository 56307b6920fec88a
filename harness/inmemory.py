"""A federation in one process: the real coordinator core (job driver, node sessions,
study keys, SQLite) against real node cores (gate, release path, runner, SQLite), with
real PKI, sealing and BFV encryption — only the transport is in memory.

As Flower's ``InMemoryGrid`` or httpx's ``MockTransport``: each node's link takes tasks
from its :class:`coordinator.sessions.Session` outbox and answers them through
``NodeRunner.handle``, exactly what the gRPC task stream carries; the coordinator's
node-facing RPCs (register, catalog sync, invitations) are called on the real servicer
with the node's certificate as its peer identity. A stats or quality pipeline case then
runs in about a second, so the pipeline's many cases (and the attack suite) use this;
what crosses processes (mTLS, reconnects, Flower) stays in the loopback tests
(:mod:`harness.federation`).
"""

from __future__ import annotations

import json
import queue
import threading
import time
from dataclasses import replace
from pathlib import Path

import grpc
import yaml

from coordinator import registry as node_registry
from coordinator import studies
from coordinator.server import CoordinatorCore
from node.link import Outbox
from node.server import NodeCore
from protos.scifed.v1 import federation_pb2 as pb
from scifed import __version__, sentences
from scifed.config import CoordinatorConfig, NodeConfig, TlsConfig
from scifed.errors import UserError
from scifed.pki import identity_from_cert_pem, init_ca, make_key_and_csr, sign_csr
from scifed.rpc import SAID_KEY
from scifed.sealing import load_seal_key, make_claim, open_refusals, open_sealed, result_context
from scifed.states import JobStatus, StudyStatus
from scifed.wire import now_ms


class Aborted(UserError):
    """A servicer refused the call (what gRPC would return as a status)."""


class _PeerContext:
    """What a servicer reads from a gRPC context: the caller's certificate."""

    def __init__(self, cert_pem: bytes) -> None:
        self._cert = cert_pem
        self._said: bytes | None = None

    def auth_context(self) -> dict:
        return {"x509_pem_cert": [self._cert]}

    def set_trailing_metadata(self, metadata) -> None:
        self._said = dict(metadata).get(SAID_KEY)

    def abort(self, code: grpc.StatusCode, details: str):
        said, self._said = self._said, None  # a sentence's key, as gRPC would carry it
        raise Aborted(sentences.loads(details, said))

    def is_active(self) -> bool:
        return True


class InMemoryLink:
    """One node's link to the coordinator, in memory; the same calls as
    :class:`node.link.CoordinatorLink`."""

    def __init__(self, node: NodeCore, coordinator: CoordinatorCore) -> None:
        self.node = node
        self.coordinator = coordinator
        self.cfg = node.cfg
        self.context = _PeerContext(node.cfg.tls.cert.read_bytes())
        self.session = None
        self._stop = threading.Event()
        self._up = threading.Lock()  # results go up one at a time, as on the stream
        # results wait here while the link is down, as in the gRPC link
        self.outbox = Outbox(node.runner.stranded)
        self.tasks: list[pb.Task] = []  # every task this link brought (tests read them)

    def call(self, method: str, request):
        """A unary call to the coordinator's node-facing API (``NodeLink``)."""
        return getattr(self.coordinator.link, method)(request, self.context)

    def connect(self) -> None:
        cfg = self.cfg
        claim = make_claim(cfg.tls.key.parent, name=cfg.name, role="node",
                           cert_path=cfg.tls.cert, key_path=cfg.tls.key)
        reply = self.call("Register", pb.RegisterRequest(
            platform=cfg.platform, software_version=__version__,
            seal_claim_json=json.dumps(claim.to_dict())))
        self.outbox.registered(reply.instance)
        self.sync()
        db = self.coordinator.db
        self.session = self.coordinator.sessions.open(
            cfg.name, identity_from_cert_pem(cfg.tls.cert.read_bytes()).serial)
        node_registry.mark_connected(db, cfg.name, True, now_ms())
        self._stop.clear()
        threading.Thread(target=self._pump, daemon=True, name=f"link-{cfg.name}").start()
        self._flush()
        if self.coordinator.keys.pending():
            self.coordinator.keys.rotate_pending()
        self.coordinator.jobs.node_connected(cfg.name)

    def heartbeat(self) -> pb.HeartbeatAck:
        """One heartbeat up the stream, as the gRPC link sends every heartbeat_seconds:
        the coordinator's own handler records the node's audit chain head with it."""
        seq, digest = self.node.audit.head()
        return self.coordinator.link.heartbeat(self.cfg.name, pb.Heartbeat(
            sent_unix_ms=now_ms(), audit_seq=seq, audit_hash=digest))

    def sync(self) -> None:
        records = self.node.registry.published_records()
        self.call("SyncCatalog", pb.SyncCatalogRequest(
            records_json=[json.dumps(r) for r in records]))

    def disconnect(self) -> None:
        self._stop.set()
        if self.session is not None and self.coordinator.sessions.close(self.session):
            node_registry.mark_connected(self.coordinator.db, self.cfg.name, False, now_ms())
        self.session = None

    def _pump(self) -> None:
        session = self.session
        while not self._stop.is_set() and not session.closed.is_set():
            try:
                msg = session.outbox.get(timeout=0.05)
            except queue.Empty:
                continue
            if msg.HasField("task"):
                self.tasks.append(msg.task)
                threading.Thread(target=self.answer, args=(msg.task, self.outbox.instance),
                                 daemon=True).start()

    def answer(self, task: pb.Task, instance: str) -> None:
        """Run a task of coordinator ``instance`` and send its result when the link is
        up (at once, or when it next connects to that instance)."""
        result = self.node.runner.handle(task)
        result.audit_seq, result.audit_hash = self.node.audit.head()
        self.outbox.put(instance, task, result)
        self._flush()

    def _flush(self) -> None:
        with self._up:
            session = self.session
            while session is not None and not session.closed.is_set():
                result = self.outbox.take(timeout=0)
                if result is None and self.outbox.empty():
                    return
                if result is not None:
                    node_registry.record_audit_head(self.coordinator.db, self.cfg.name,
                                                    result.audit_seq, result.audit_hash,
                                                    now_ms())
                    self.coordinator.sessions.deliver(session, result)


class InMemoryFederation:
    """A coordinator, ``nodes`` and one researcher (``alice``) in this process."""

    def __init__(self, root: Path, nodes: list[str], *, task_timeout: float = 60.0,
                 approval_poll: float = 0.05, database: str | None = None) -> None:
        """``database``: the coordinator's SQLAlchemy URL (default SQLite in its state
        directory), as its config's ``database`` key."""
        self.root = Path(root)
        self.ca_dir = self.root / "ca"
        init_ca(self.ca_dir)
        coord_dir = self.root / "coordinator"
        tls = TlsConfig(ca=self.ca_dir / "ca.crt", cert=self.ca_dir / "coordinator.crt",
                        key=self.ca_dir / "coordinator.key")
        self.coordinator = CoordinatorCore(
            CoordinatorConfig(state_dir=coord_dir, tls=tls, task_timeout_seconds=task_timeout,
                              database=database),
            approval_poll=approval_poll)
        self.nodes: dict[str, NodeCore] = {}
        self.links: dict[str, InMemoryLink] = {}
        for name in nodes:
            self.nodes[name] = NodeCore(self._node_config(name))
            self.links[name] = InMemoryLink(self.nodes[name], self.coordinator)
        self.researcher = "alice"
        self.researcher_dir = self._identity("researcher", self.researcher)

    def _identity(self, role: str, name: str) -> Path:
        directory = self.root / role / name
        csr = make_key_and_csr(directory, name=name, role=role)
        sign_csr(self.ca_dir, csr, role=role)
        return directory

    def _node_config(self, name: str) -> NodeConfig:
        base = self.root / "nodes" / name
        pki = base / "pki"
        csr = make_key_and_csr(pki, name=name, role="node")
        sign_csr(self.ca_dir, csr, role="node", out_path=pki / f"{name}.crt")
        (base / "data").mkdir(parents=True, exist_ok=True)
        return NodeConfig(name=name, platform=f"platform {name}", coordinator="in-memory",
                          data_dir=base / "data", state_dir=base / "state",
                          tls=TlsConfig(ca=self.ca_dir / "ca.crt", cert=pki / f"{name}.crt",
                                        key=pki / "node.key"))

    def __enter__(self) -> InMemoryFederation:
        for link in self.links.values():
            link.connect()
        return self

    def __exit__(self, *exc) -> None:
        for link in self.links.values():
            link.disconnect()
        self.coordinator.db.close()

    # -- the officers ---------------------------------------------------------------------
    def add_dataset(self, node: str, frame, meta: dict, name: str, *,
                    accept_violations: bool = False) -> None:
        """Put a table (pandas) into the node's data directory and register it
        (``accept_violations``: even where rows break its column dictionary)."""
        core = self.nodes[node]
        frame.to_csv(core.cfg.data_dir / f"{name}.csv", index=False)
        core.registry.add(f"{name}.csv", yaml.safe_dump(meta, allow_unicode=True),
                          f"{name}.meta.yaml", accept_violations=accept_violations)
        self.links[node].sync()

    def create_study(self, name: str, datasets: dict[str, str], *, min_nodes: int = 0,
                     timeout: float = 30) -> str:
        """The operator creates it, every officer accepts with its dataset; returns the id
        once the lead node has made and distributed the key."""
        db = self.coordinator.db
        view = studies.create_study(db, name=name, purpose="in-memory", nodes=list(datasets),
                                    min_nodes=min_nodes, created_by="operator")
        studies.add_researcher(db, name, self.researcher)
        for node, dataset in datasets.items():
            core = self.nodes[node]
            core.studies.answer(self.links[node], view.study_id, True, [dataset])
        self.coordinator.keys.rotate_pending()
        deadline = time.monotonic() + timeout
        while studies.get_study(db, name).status != StudyStatus.ACTIVE:
            if time.monotonic() > deadline:
                raise TimeoutError(f"study {name} did not become active")
            time.sleep(0.02)
        return view.study_id

    # -- the researcher -------------------------------------------------------------------
    def claim_json(self) -> str:
        d = self.researcher_dir
        return json.dumps(make_claim(d, name=self.researcher, role="researcher",
                                     cert_path=d / f"{self.researcher}.crt",
                                     key_path=d / "researcher.key").to_dict())

    def submit(self, spec_yaml: str) -> str:
        return self.coordinator.jobs.submit(self.researcher, spec_yaml, "job.yaml",
                                            self.claim_json())

    def job(self, job_id: str):
        """The job as the researcher sees it: sealed refusal reasons opened."""
        view = self.coordinator.jobs.get(job_id, self.researcher)
        sealed = {t.node: t.sealed_reason for t in view.tasks if t.sealed_reason}
        if not sealed:
            return view
        error, reasons = open_refusals(load_seal_key(self.researcher_dir), job_id, view.error,
                                       sealed)
        tasks = [replace(t, detail=reasons.get(t.node, t.detail)) if t.sealed_reason else t
                 for t in view.tasks]
        return replace(view, error=error, tasks=tasks)

    def wait(self, job_id: str, timeout: float = 60):
        deadline = time.monotonic() + timeout
        while True:
            view = self.job(job_id)
            if view.status.stopped:
                return view
            left = deadline - time.monotonic()
            if left < 0:
                raise TimeoutError(f"job {job_id} still {view.status} after {timeout:.0f}s")
            self.coordinator.jobs.watch(job_id, self.researcher, min(1.0, left))  # a change

    def result_json(self, job_id: str) -> dict:
        sealed = self.coordinator.jobs.sealed_result(job_id, self.researcher)
        return json.loads(open_sealed(load_seal_key(self.researcher_dir), sealed,
                                      context=result_context(job_id)))

    def run(self, spec_yaml: str, timeout: float = 60) -> tuple[object, dict]:
        """Submit, wait; (the job's view, the opened result) of a job that is done."""
        job_id = self.submit(spec_yaml)
        view = self.wait(job_id, timeout)
        if view.status != JobStatus.DONE:
            raise AssertionError(f"job {job_id} {view.status}: {view.error}")
        return view, self.result_json(job_id)


class _ServicerStub:
    """The researcher API's stub, calling the coordinator's servicer in this process with
    the researcher's certificate as the peer; ``tamper(method, reply)`` may change what
    the coordinator sends back (a deviating coordinator)."""

    def __init__(self, servicer, cert_pem: bytes, tamper=None) -> None:
        self._servicer = servicer
        self._context = _PeerContext(cert_pem)
        self.tamper = tamper

    def __getattr__(self, method: str):
        def call(request, timeout: float | None = None):
            del timeout
            reply = getattr(self._servicer, method)(request, self._context)
            return self.tamper(method, reply) if self.tamper is not None else reply
        return call


def researcher_client(fed: InMemoryFederation, name: str | None = None, tamper=None):
    """A :class:`coordinator.client.Client` of the federation's researcher (or of another,
    ``name``, enrolled on first use) whose calls reach the real coordinator core in
    memory."""
    import shutil

    from coordinator.client import Client, ClientConfig, IdentityDir
    from scifed.sealing import ensure_seal_key

    name = name or fed.researcher
    directory = fed.root / "researcher" / name
    if not (directory / f"{name}.crt").exists():
        fed._identity("researcher", name)
    shutil.copy(fed.ca_dir / "ca.crt", directory / "ca.crt")
    ensure_seal_key(directory)
    client = Client.__new__(Client)
    client.identity = IdentityDir(directory, ClientConfig(name=name, role="researcher",
                                                          coordinator="in-memory"))
    client.address, client.timeout = "in-memory", 30
    client.stub = _ServicerStub(fed.coordinator.api,
                                (directory / f"{name}.crt").read_bytes(), tamper)
    return client
