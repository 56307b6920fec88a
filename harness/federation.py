"""A whole federation on loopback — CA, coordinator, nodes, an operator and a researcher —
as real processes with real mTLS. Used by `scifed demo`, the integration tests and the
benchmarks, so all three exercise the same code paths a deployment does.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from scifed.errors import UserError
from scifed.states import StudyStatus

# The CLI as the `scifed` entry point runs it: -P keeps the working directory (the
# federation's root, which holds state folders named `coordinator` and after the nodes)
# off sys.path, where a folder of a package's name would shadow the package.
CLI = (sys.executable, "-P", "-m", "cli")


def _die_with_parent() -> None:
    """Linux: the child gets SIGTERM when the process that started it dies, so a killed
    test run or demo leaves no coordinator or node behind."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate: Callable[[], bool], timeout: float, what: str,
             interval: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except Exception:  # the thing we wait for may not answer yet
            pass
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


class LocalFederation:
    def __init__(self, root: Path, nodes: dict[str, str], *, heartbeat_seconds: float = 1.0,
                 offline_after_seconds: float = 3.0, task_timeout_seconds: float = 30.0,
                 flower: bool = False, trainers: set[str] | None = None,
                 workers: int = 1) -> None:
        """`nodes` maps node name to platform name. `flower`: the coordinator runs a
        Flower SuperLink and nodes a SuperNode each, for `train` jobs (slower to start, so
        off unless needed); `trainers`: only these nodes run one (default: all).
        `workers`: how many nodes are set up, started and accept a study at once (each
        step is a CLI process or a node starting; a 100-node federation set up one node
        at a time takes many minutes)."""
        self.root = Path(root).resolve()
        self.nodes = dict(nodes)
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.ca_dir = self.root / "ca"
        self.coord_dir = self.root / "coordinator"
        self.operator_dir = self.root / "operator"
        self.researcher_dir = self.root / "researcher"
        self.logs = self.root / "logs"
        self.heartbeat_seconds = heartbeat_seconds
        self.offline_after_seconds = offline_after_seconds
        self.task_timeout_seconds = task_timeout_seconds
        self.flower_port = free_port() if flower else None
        self.trainers = set(nodes) if trainers is None else set(trainers)
        self.procs: dict[str, subprocess.Popen] = {}
        self.workers = workers

    # -- where each host is (a subclass may put hosts elsewhere, e.g. harness/netns.py) -----
    @property
    def coordinator_hosts(self) -> list[str]:
        """The names and addresses the coordinator's certificate is issued for."""
        return [self.address.rsplit(":", 1)[0]]

    @property
    def fleet_address(self) -> str:
        """Where nodes' SuperNodes reach the SuperLink's Fleet API."""
        return f"127.0.0.1:{self.flower_port}"

    def command_prefix(self, key: str) -> list[str]:
        """What runs process ``key`` (``coordinator`` or a node's name) on its host: here
        nothing, every host is this one."""
        return []

    def each_node(self, step: Callable[[str], object], names: Iterable[str] | None = None) -> None:
        """``step(name)`` for every node (or ``names``), ``self.workers`` at a time; the
        first failure is raised once all have run. A step may run commands, never start a
        process that outlives it (see :meth:`spawn_node`)."""
        names = list(self.nodes if names is None else names)
        if self.workers <= 1:
            for name in names:
                step(name)
            return
        with ThreadPoolExecutor(self.workers) as pool:
            for future in [pool.submit(step, name) for name in names]:
                future.result()

    # -- set-up: exactly the commands a deployment runs ------------------------------------
    def cli(self, *args: str, check: bool = True, timeout: float = 180,
            env: dict | None = None) -> subprocess.CompletedProcess:
        proc = subprocess.run([*CLI, *args], capture_output=True,
                              text=True, timeout=timeout, cwd=self.root,
                              env={**os.environ, "COLUMNS": "200", **(env or {})})
        if check and proc.returncode != 0:
            raise UserError(f"`scifed {' '.join(args)}` failed:\n{proc.stderr or proc.stdout}")
        return proc

    def node_dir(self, name: str) -> Path:
        return self.root / "nodes" / name

    def node_config(self, name: str) -> Path:
        return self.node_dir(name) / "node.yaml"

    def enrol(self, role: str, name: str, directory: Path) -> None:
        csr = directory / ("pki" if role == "node" else "") / f"{role}.csr"
        self.cli("ca", "sign", str(csr), "--role", role, "--ca-dir", str(self.ca_dir))
        shutil.copy(self.ca_dir / "ca.crt", csr.parent / "ca.crt")

    def setup(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(exist_ok=True)
        self.cli("ca", "init", "--ca-dir", str(self.ca_dir),
                 *(a for h in self.coordinator_hosts for a in ("--host", h)))
        self.cli("coordinator", "init", "--dir", str(self.coord_dir), "--ca-dir",
                 str(self.ca_dir), "--listen", self.address,
                 "--flower-port", str(self.flower_port or 0))
        cfg = self.coord_dir / "coordinator.yaml"
        cfg.write_text(cfg.read_text() + f"heartbeat_seconds: {self.heartbeat_seconds}\n"
                       f"offline_after_seconds: {self.offline_after_seconds}\n"
                       f"task_timeout_seconds: {self.task_timeout_seconds}\n")
        self.each_node(self._init_node)
        for role, directory, name in (("operator", self.operator_dir, "operator"),
                                      ("researcher", self.researcher_dir, "alice")):
            self.cli(role, "init", "--name", name, "--dir", str(directory),
                     "--coordinator", self.address)
            self.enrol(role, name, directory)

    def add_researcher(self, name: str) -> Path:
        """Another researcher, enrolled as `alice` is (`researcher init`, `ca sign`); their
        identity directory."""
        directory = self.root / name
        self.cli("researcher", "init", "--name", name, "--dir", str(directory),
                 "--coordinator", self.address)
        self.enrol("researcher", name, directory)
        return directory

    def _init_node(self, name: str) -> None:
        superlink = (self.fleet_address
                     if self.flower_port and name in self.trainers else "none")
        self.cli("node", "init", "--name", name, "--platform", self.nodes[name],
                 "--coordinator", self.address, "--dir", str(self.node_dir(name)),
                 "--flower-superlink", superlink)
        cfgp = self.node_config(name)
        cfgp.write_text(cfgp.read_text() + "reconnect_max_seconds: 2.0\n")
        self.enrol("node", name, self.node_dir(name))

    # -- processes -------------------------------------------------------------------------
    def _spawn(self, key: str, *args: str) -> None:
        log = open(self.logs / f"{key}.log", "ab")  # noqa: SIM115 - owned by the process
        self.procs[key] = subprocess.Popen([*self.command_prefix(key), *CLI, *args],
                                           stdout=log, stderr=subprocess.STDOUT, cwd=self.root,
                                           preexec_fn=_die_with_parent)

    def start_coordinator(self) -> None:
        self._spawn("coordinator", "coordinator", "serve", "--config",
                    str(self.coord_dir / "coordinator.yaml"))
        host = self.address.rsplit(":", 1)[0]
        wait_for(lambda: socket.create_connection((host, self.port), 0.5).close() is None,
                 120 if self.flower_port else 30, "the coordinator to listen")

    def start_node(self, name: str) -> None:
        self.spawn_node(name)
        self.wait_node(name)

    def spawn_node(self, name: str) -> None:
        """Start node ``name``'s process (from this thread: a child's PDEATHSIG follows
        the thread that forked it, so a pool thread's nodes would die with the thread)."""
        self._spawn(name, "node", "serve", "--config", str(self.node_config(name)))

    def wait_node(self, name: str, timeout: float = 30) -> None:
        sock = self.node_dir(name) / "state" / "admin.sock"
        wait_for(sock.exists, timeout, f"node {name}'s admin socket")

    def stop(self, key: str, sig: int = signal.SIGTERM) -> int:
        proc = self.procs.pop(key)
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return proc.returncode

    def start_all(self) -> None:
        self.start_coordinator()
        self.start_nodes()

    def start_nodes(self) -> None:
        if self.workers <= 1:
            for name in self.nodes:
                self.start_node(name)
            return
        # ``workers`` nodes starting at once, each spawned from this thread (spawn_node)
        starting: list[str] = []
        for name in self.nodes:
            if len(starting) >= self.workers:
                self.wait_node(starting.pop(0), 30 + 5 * self.workers)
            self.spawn_node(name)
            starting.append(name)
        for name in starting:
            self.wait_node(name, 30 + 5 * self.workers)

    def stop_all(self) -> None:
        for key in list(self.procs):
            self.stop(key)

    def log_text(self, key: str) -> str:
        return (self.logs / f"{key}.log").read_text(errors="replace")

    # -- clients ---------------------------------------------------------------------------
    def operator(self):
        from coordinator.client import Client

        return Client(self.operator_dir)

    def researcher(self):
        from coordinator.client import Client

        return Client(self.researcher_dir)

    def node_cli(self, name: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.cli("node", *args, "--config", str(self.node_config(name)), check=check)

    # -- the officers' approvals ----------------------------------------------------------
    @property
    def passphrase_file(self) -> Path:
        """The approvers' passphrase, as a script gives it (`--passphrase-file`)."""
        path = self.root / "approver.passphrase"
        if not path.exists():
            from scifed.at_rest import write_private

            write_private(path, b"a passphrase for the test approvers\n")
        return path

    def _first_of_role(self, node: str) -> dict[str, Path]:
        """The key of the first officer and security lead registered at ``node`` (the
        bootstrap), which countersign every later change there."""
        return self.__dict__.setdefault("_approver_roles", {}).setdefault(node, {})

    def approver(self, node: str, name: str = "officer", role: str = "officer") -> Path:
        """The key of approver ``name`` at ``node``, made and registered with `scifed node
        approver add` on first use: the node's first officer and first security lead
        without countersignatures (the bootstrap), anyone else countersigned by them."""
        key = self.node_dir(node) / "approvers" / f"{name}.key"
        if not key.exists():
            first = self._first_of_role(node)
            bootstrap = role in ("officer", "security_lead") and role not in first
            self.node_cli(node, "approver", "add", name, "--role", role, "--key-out", str(key),
                          "--passphrase-file", str(self.passphrase_file),
                          *(() if bootstrap else self.countersign(node)))
            if bootstrap:
                first[role] = key
        return key

    def countersign(self, node: str) -> tuple[str, ...]:
        """`--countersign KEY --countersign-passphrase-file FILE` for ``node``'s officer and
        security lead (`officer` and `security`, registered first if need be)."""
        args: list[str] = []
        for name, role in (("officer", "officer"), ("security", "security_lead")):
            key = self._first_of_role(node).get(role) or self.approver(node, name, role)
            args += ["--countersign", str(key), "--countersign-passphrase-file",
                     str(self.passphrase_file)]
        return tuple(args)

    def remove_approver(self, node: str, name: str,
                        check: bool = True) -> subprocess.CompletedProcess:
        """`scifed node approver remove NAME`, countersigned by the officer and security
        lead."""
        return self.node_cli(node, "approver", "remove", name, *self.countersign(node),
                             check=check)

    def decide(self, node: str, verb: str, approval_id: str, *args: str,
               name: str = "officer", role: str = "officer",
               check: bool = True) -> subprocess.CompletedProcess:
        """`scifed node approvals approve|deny ID ... --key KEY`, signed by ``name``."""
        return self.node_cli(node, "approvals", verb, approval_id, *args, "--key",
                             str(self.approver(node, name, role)), "--passphrase-file",
                             str(self.passphrase_file), check=check)

    def __enter__(self) -> LocalFederation:
        return self

    def __exit__(self, *exc) -> None:
        self.stop_all()

    def add_dataset(self, node: str, frame, meta: dict, name: str, *,
                    accept_violations: bool = False) -> None:
        """As the node's officer: put a table (pandas) into the data directory and register
        it with its metadata (`scifed node dataset add`; ``accept_violations``: even where
        rows break its column dictionary)."""
        import yaml

        frame.to_csv(self.node_dir(node) / "data" / f"{name}.csv", index=False)
        meta_path = self.node_dir(node) / f"{name}.meta.yaml"
        meta_path.write_text(yaml.safe_dump(meta, allow_unicode=True, sort_keys=False))
        self.node_cli(node, "dataset", "add", f"{name}.csv", "--meta", str(meta_path),
                      *(["--accept-violations"] if accept_violations else []))

    # -- studies ---------------------------------------------------------------------------
    def create_study(self, name: str, datasets: dict[str, str], *, purpose: str = "demo",
                     researchers: tuple[str, ...] = ("alice",), min_nodes: int = 0,
                     accept: bool = True, timeout: float = 60) -> str:
        """Operator creates the study, each officer accepts with its dataset; returns the id
        once the study's key is ready (when `accept`)."""
        with self.operator() as op:
            st = op.create_study(name, purpose, list(datasets), min_nodes)
            for r in researchers:
                op.add_researcher(name, r)
            if not accept:
                return st.study_id
            self.each_node(lambda node: self.node_cli(node, "studies", "accept", st.study_id,
                                                      "--datasets", datasets[node]),
                           datasets)
            wait_for(lambda: op.study(name).status == StudyStatus.ACTIVE, timeout,
                     f"study {name} to become active")
        return st.study_id
