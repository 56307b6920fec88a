"""The coordinator's Flower SuperLink: one long-lived, supervised subprocess for all
`train` jobs, and the Control API calls the coordinator makes to it.

How it is run: TLS with the coordinator's certificate from
the federation CA; only SuperNodes whose P-384 keys were registered at node enrolment
may connect (``--enable-supernode-auth``); state in SQLite under the coordinator's state
directory, so registrations and run history survive a restart; runtime dependency
installation off (the FAB carries no code, every host has scifed installed); telemetry and
update checks off.

Flower 1.41 serves the Fleet, Control and Runtime APIs on ONE host:port, and the Control
API is unauthenticated in open-source Flower (anyone reaching it may start a ServerApp on
this host). So the SuperLink binds 127.0.0.1 only. A deployment with nodes on other hosts
puts a TLS reverse proxy in front that publishes only ``POST /v1/fleet/*`` (and
``/health``) and re-encrypts to this loopback port; nothing else may reach the port.
"""

from __future__ import annotations

import ipaddress
import logging
import ssl
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from flwr.common.serde import fab_to_proto, user_config_to_proto
from flwr.proto.control_pb2 import (  # pylint: disable=no-name-in-module
    ListNodesRequest,
    ListRunsRequest,
    RegisterNodeRequest,
    StartRunRequest,
    StopRunRequest,
    StreamLogsRequest,
    UnregisterNodeRequest,
)
from flwr.supercore.control import ControlHttpClient
from flwr.supercore.fab import Fab
from flwr.supercore.protobuf.client import ProtobufCall, ProtobufRequestContext
from flwr.supercore.runtime_version_compatibility import RuntimeVersionMetadata

from scifed.config import FLOWER_PORT
from scifed.errors import TrainingUnavailable, UserError
from scifed.flower_apps import build_fab
from scifed.supervisor import Supervised, flower_env, flower_executable
from scifed.tls import TlsFiles

log = logging.getLogger("scifed.coordinator.flower")
logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per Control API poll

DEFAULT_PORT = FLOWER_PORT
LOOPBACK = "127.0.0.1"


class SuperLinkUnavailable(TrainingUnavailable):
    """The SuperLink did not answer (e.g. it is restarting); worth retrying."""


@dataclass(frozen=True)
class RunState:
    """A Flower run as the Control API reports it."""

    run_id: int
    status: str          # pending | starting | running | finished
    sub_status: str      # completed | failed | stopped (when finished)
    details: str
    bytes_sent: int
    bytes_recv: int

    @property
    def finished(self) -> bool:
        return self.status == "finished"


class _VersionHeaders:
    """Send Flower's runtime-version headers (the CLI's interceptor would exit the process
    on a mismatch; we want an error we can report instead)."""

    def __init__(self) -> None:
        self._headers = dict(RuntimeVersionMetadata.from_local_component(
            "scifed-coordinator").as_metadata())

    def intercept(self, context: ProtobufRequestContext,
                  call_next: ProtobufCall) -> httpx.Response:
        context.request.headers.update(self._headers)
        return call_next(context)


class SuperLink:
    """The supervised SuperLink plus a Control API client (loopback only)."""

    def __init__(self, state_dir: Path, tls: TlsFiles, *, port: int = DEFAULT_PORT) -> None:
        self.state_dir = Path(state_dir).resolve() / "flower"
        self.jobs_dir = self.state_dir / "jobs"
        self.tls = tls
        self.port = port
        self.address = f"{LOOPBACK}:{port}"
        self.process = Supervised("flower-superlink", self._argv,
                                  env=flower_env(self.state_dir / "home"),
                                  log_path=self.state_dir / "superlink.log", ready=self.healthy)
        self._control: ControlHttpClient | None = None
        self._fabs: dict[Path, Fab] = {}
        self.epoch = uuid.uuid4().hex  # this coordinator's life, told to nodes (Register)

    def _argv(self) -> list[str]:
        return [flower_executable("flower-superlink"),
                "--host", LOOPBACK, "--port", str(self.port),
                "--ssl-ca-certfile", str(self.tls.ca), "--ssl-certfile", str(self.tls.cert),
                "--ssl-keyfile", str(self.tls.key),
                "--enable-supernode-auth",
                "--database", str(self.state_dir / "superlink.db"),
                "--disable-runtime-dependency-installation",
                "--isolation", "subprocess"]

    # -- lifecycle --------------------------------------------------------------------------
    def start(self, timeout: float = 60.0) -> None:
        _check_loopback_san(self.tls.cert)
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        self.process.start(timeout)
        log.info("Flower SuperLink serving on %s (Fleet, Control, Runtime APIs)", self.address)
        for run_id in self.stop_unfinished_runs():
            log.info("stopped Flower run %d, left unfinished when the coordinator stopped",
                     run_id)

    def stop_unfinished_runs(self) -> list[int]:
        """Stop every run the database still holds as unfinished. At coordinator start they
        are runs of its previous life, with no ServerApp behind them: stopped, SuperNodes
        drop their messages at once instead of working for a run nobody follows (an
        interrupted job resumes in a fresh run)."""
        stale, skip, page = [], 0, 100
        while True:
            runs = self._call("ListRuns", ListRunsRequest(limit=page, skip=skip)).run_dict
            stale += [r for r, run in runs.items() if run.status.status != "finished"]
            if len(runs) < page:
                break
            skip += page
        stopped = []
        for run_id in stale:
            try:
                if self.stop_run(run_id):
                    stopped.append(run_id)
            except UserError as exc:  # it finished meanwhile
                log.info("Flower run %d: %s", run_id, exc)
        return stopped

    def stop(self) -> None:
        if self._control is not None:  # an open keep-alive connection delays its shutdown
            self._control.close()
            self._control = None
        self.process.stop()

    def healthy(self) -> bool:
        ctx = ssl.create_default_context(cafile=str(self.tls.ca))
        with urllib.request.urlopen(f"https://{self.address}/health", timeout=2,
                                    context=ctx) as res:
            return res.status == 200

    def control(self) -> ControlHttpClient:
        if self._control is None:
            self._control = ControlHttpClient.from_server_address(
                self.address, insecure=False, root_certificates=self.tls.ca.read_bytes(),
                interceptors=[_VersionHeaders()])
        return self._control

    def _call(self, method: str, request):
        try:
            return getattr(self.control(), method)(request)
        except httpx.HTTPStatusError as exc:
            raise UserError(f"Flower SuperLink refused {method}: "
                            f"{exc.response.text.strip()[:300]}") from None
        except httpx.TransportError as exc:
            raise SuperLinkUnavailable(f"Flower SuperLink at {self.address} unreachable "
                                       f"during {method}: {exc}") from None

    # -- nodes -------------------------------------------------------------------------------
    def register_supernode_key(self, name: str, public_key_pem: bytes) -> int:
        """Admit a node's SuperNode key (sent at enrolment); returns its stable node_id.

        Idempotent: the same key again returns the same id; a new key for the name (a
        re-enrolled node) replaces the old registration.
        """
        pem = _check_p384(name, public_key_pem)
        for info in self._call("ListNodes", ListNodesRequest()).nodes_info:
            if info.name != name or info.status == "unregistered":
                continue
            if info.public_key == pem:
                return info.node_id
            self._call("UnregisterNode", UnregisterNodeRequest(node_id=info.node_id))
        res = self._call("RegisterNode", RegisterNodeRequest(public_key=pem, name=name))
        log.info("registered SuperNode key of node %s as Flower node %d", name, res.node_id)
        return res.node_id

    def unregister_supernode(self, name: str) -> int:
        """Drop every registration of node ``name``'s SuperNode key (its certificate was
        revoked): the SuperLink then refuses that SuperNode. How many were dropped."""
        dropped = 0
        for info in self._call("ListNodes", ListNodesRequest()).nodes_info:
            if info.name == name and info.status != "unregistered":
                self._call("UnregisterNode", UnregisterNodeRequest(node_id=info.node_id))
                dropped += 1
        return dropped

    def node_ids(self, *, online_only: bool = False) -> dict[str, int]:
        """Registered node name -> Flower node_id."""
        return {i.name: i.node_id for i in self._call("ListNodes", ListNodesRequest()).nodes_info
                if i.status != "unregistered" and (i.status == "online" or not online_only)}

    def wait_online(self, names: list[str], timeout: float) -> set[str]:
        """Wait until every named node's SuperNode is connected, or the timeout; returns
        those connected by then."""
        deadline = time.monotonic() + timeout
        while True:
            online = set(names) & set(self.node_ids(online_only=True))
            if online == set(names) or time.monotonic() > deadline:
                return online
            time.sleep(0.5)

    # -- runs -------------------------------------------------------------------------------
    def start_run(self, run_config: dict[str, str | int | float | bool],
                  app_dir: Path) -> int:
        """Submit one run of the app (by default `train`) with ``run_config`` overrides."""
        if app_dir not in self._fabs:
            self._fabs[app_dir] = build_fab(app_dir)
        res = self._call("StartRun", StartRunRequest(
            fab=fab_to_proto(self._fabs[app_dir]),
            override_config=user_config_to_proto(run_config)))
        if not res.HasField("run_id"):
            raise UserError(f"Flower SuperLink did not start the run: {res.note or 'no reason'}")
        return res.run_id

    def run_state(self, run_id: int) -> RunState:
        runs = self._call("ListRuns", ListRunsRequest(run_id=run_id)).run_dict
        if run_id not in runs:
            raise UserError(f"Flower run {run_id} is unknown to the SuperLink")
        run = runs[run_id]
        return RunState(run_id, run.status.status, run.status.sub_status, run.status.details,
                        run.bytes_sent, run.bytes_recv)

    def stop_run(self, run_id: int) -> bool:
        return self._call("StopRun", StopRunRequest(run_id=run_id)).success

    def log_tail(self, run_id: int, lines: int = 40) -> str:
        """The last lines of the ServerApp's log (what `flwr log` shows)."""
        text = ""
        for res in self.control().StreamLogs(StreamLogsRequest(run_id=run_id)):
            text = res.log_output
            break
        return "\n".join(text.rstrip().splitlines()[-lines:])


def _check_p384(name: str, public_key_pem: bytes) -> bytes:
    """Node keys are EC P-384 (what `flower-supernode` signs with); normalise the PEM."""
    try:
        key = serialization.load_pem_public_key(public_key_pem)
    except ValueError as exc:
        raise UserError(f"node {name}: SuperNode public key is not PEM: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve,
                                                                        ec.SECP384R1):
        raise UserError(f"node {name}: SuperNode key must be EC P-384")
    return key.public_bytes(serialization.Encoding.PEM,
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def _check_loopback_san(cert_path: Path) -> None:
    """The Control API client verifies the SuperLink at 127.0.0.1 against this cert."""
    cert = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        san = x509.SubjectAlternativeName([])
    if ipaddress.ip_address(LOOPBACK) not in san.get_values_for_type(x509.IPAddress):
        raise UserError(f"{cert_path} has no IP:{LOOPBACK} subject alternative name; the "
                        "SuperLink serves its Control API on loopback with this certificate "
                        "(re-issue it with the host 127.0.0.1)")
