"""The node's Flower SuperNode: a supervised subprocess that dials out to the
coordinator's SuperLink (TLS, verified against the federation CA), and beside it the
node's own ClientApp executor (``node/executor.py``), which runs the ClientApps of
`train` jobs on this host — only apps the node trusts (``node/apps.py``).

It authenticates with an EC P-384 key made once in the node's PKI directory and never
copied; the public half is what the coordinator registers at enrolment
(``coordinator.flower.SuperLink.register_supernode_key``), which also fixes this node's
Flower node_id. Its ``node_config`` tells ClientApps where the node's local API socket
is, the only way they reach data or the study key. It runs with ``--isolation process``,
so it starts no executor of its own; its Runtime API listens on a free loopback port
picked at each start, written to ``flower/runtime-port`` for the executor, and hands out
tasks only to a caller holding the secret in ``flower/superexec.secret`` (0600). It is
started through ``flower/bin/flower-supernode``, Flower's entry point with scifed's
shorter polling waits (``scifed.flower_pacing``; ``SCIFED_FLOWER_PACING=off`` for stock).
"""

from __future__ import annotations

import os
import secrets
import socket
import sys
import urllib.request
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from scifed.at_rest import replace_private
from scifed.errors import UserError
from scifed.flower_pacing import write_launcher
from scifed.supervisor import Supervised, flower_env, flower_executable

KEY_FILE = "flower-supernode.key"
PORT_FILE = "runtime-port"
SECRET_FILE = "superexec.secret"


def ensure_supernode_key(pki_dir: Path) -> bytes:
    """Make the SuperNode key (OpenSSH format, 0600) on first use; return the public PEM."""
    path = Path(pki_dir) / KEY_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        key = serialization.load_ssh_private_key(path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise UserError(f"{path} is not an EC key") from None
    else:
        key = ec.generate_private_key(ec.SECP384R1())
        with os.fdopen(fd, "wb") as f:
            f.write(key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.OpenSSH,
                                      serialization.NoEncryption()))
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


def _free_loopback_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SuperNode:
    """The supervised SuperNode of one node."""

    def __init__(self, *, name: str, pki_dir: Path, ca: Path, superlink: str,
                 state_dir: Path, local_socket: Path) -> None:
        """``superlink`` is the Fleet API host:port (the coordinator's proxy in production)."""
        self.name = name
        self.key_path = Path(pki_dir) / KEY_FILE
        self.public_key_pem = ensure_supernode_key(pki_dir)
        self.ca = Path(ca)
        self.superlink = superlink
        self.local_socket = Path(local_socket).resolve()
        if any(c.isspace() or c in "\"'\\" for c in str(self.local_socket)):
            raise UserError(f"the local API socket path {self.local_socket} must not contain "
                            "spaces, quotes or backslashes (Flower's --node-config syntax)")
        self.home = home = Path(state_dir).resolve() / "flower"
        home.mkdir(parents=True, exist_ok=True)
        os.chmod(home, 0o700)
        self.port_file, self.secret_file = home / PORT_FILE, home / SECRET_FILE
        self.runtime_port = 0
        self.process = Supervised(f"flower-supernode ({name})", self._argv,
                                  env=flower_env(home), log_path=home / "supernode.log",
                                  ready=self._ready)
        self.executor = Supervised(f"clientapp-executor ({name})", self._executor_argv,
                                   env=flower_env(home), log_path=home / "executor.log",
                                   ready=lambda: True)

    def _argv(self) -> list[str]:
        """A fresh port and a fresh task secret at each (re)start."""
        self.runtime_port = _free_loopback_port()
        replace_private(self.secret_file, secrets.token_bytes(32))
        replace_private(self.port_file, str(self.runtime_port).encode())
        config = f'local-api="unix:{self.local_socket}"'
        flower_executable("flower-supernode")  # flwr is installed beside scifed
        return [str(write_launcher(self.home / "bin", "flower-supernode")),
                "--superlink", self.superlink,
                "--root-certificates", str(self.ca),
                "--auth-supernode-private-key", str(self.key_path),
                "--host", "127.0.0.1", "--port", str(self.runtime_port),
                "--isolation", "process",
                "--superexec-auth-secret-file", str(self.secret_file),
                "--node-config", config]

    def _executor_argv(self) -> list[str]:
        return [sys.executable, "-m", "node.executor",
                "--runtime-port-file", str(self.port_file),
                "--superexec-auth-secret-file", str(self.secret_file),
                "--local-api", f"unix:{self.local_socket}",
                "--parent-pid", str(os.getpid())]

    def _ready(self) -> bool:
        """The SuperNode's Runtime API answers (it opens it once set up)."""
        url = f"http://127.0.0.1:{self.runtime_port}/health"
        with urllib.request.urlopen(url, timeout=2) as res:
            return res.status == 200

    def start(self, timeout: float = 60.0) -> None:
        self.process.start(timeout)
        self.executor.start(timeout)

    def stop(self) -> None:
        self.executor.stop()
        self.process.stop()
