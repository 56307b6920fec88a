"""A federation across hosts on one machine: the coordinator and each node in a Linux
network namespace of its own, joined by veth pairs to a bridge, so every connection
crosses a real (virtual) link that a test can cut and restore.

Layout, for a run with suffix S (random, so parallel runs never clash) and subnet
10.231.X.0/24 (X picked among those no interface of this machine uses):

    root namespace: bridge ``sfbS`` 10.231.X.1 (the test process: researcher, operator)
      ├─ veth ``sfS-0`` ── namespace ``scifed-S-coordinator`` 10.231.X.2 (coordinator,
      │                    its SuperLink on the namespace's loopback, nginx publishing only
      │                    the Fleet API on 10.231.X.2, as in deploy/)
      ├─ veth ``sfS-1`` ── namespace ``scifed-S-<node>`` 10.231.X.3 (node, SuperNode)
      └─ …

Servers bind their namespace's address (or its own loopback), never the root namespace's
interfaces. The officers' CLI reaches each node through its admin socket, a file, which
is not bound to a network namespace. Cutting a node's link sets the root end of its veth
down: the bridge forwards nothing to or from that namespace until it is set up again.

Needs root and ``ip`` (iproute2); :func:`unavailable` says why not, for a test to skip.
"""

from __future__ import annotations

import ipaddress
import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
from pathlib import Path

from harness.federation import LocalFederation, free_port, wait_for

FIRST_OCTETS = "10.231"
COORDINATOR = "coordinator"
PROXY_CONF = Path(__file__).resolve().parents[1] / "deploy" / "helm" / "scifed" / "files" / \
    "flower-proxy.conf"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and proc.returncode != 0:
        raise RuntimeError(f"`ip {' '.join(args)}` failed: {proc.stderr.strip()}")
    return proc


def unavailable() -> str | None:
    """Why namespaces cannot be made here (None when they can): probed by making and
    deleting one, since a container may be root and still lack CAP_SYS_ADMIN."""
    if os.geteuid() != 0:
        return "network namespaces need root (this test makes namespaces and veth pairs)"
    if shutil.which("ip") is None:
        return "`ip` (iproute2) is not installed"
    probe = f"scifed-probe-{secrets.token_hex(3)}"
    made = _ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"`ip netns add` fails here: {made.stderr.strip()}"
    _ip("netns", "delete", probe, check=False)
    return None


def _free_subnet() -> ipaddress.IPv4Network:
    """A 10.231.X.0/24 that overlaps no address or route of the root namespace."""
    used = [ipaddress.ip_network(a["local"] + "/" + str(a["prefixlen"]), strict=False)
            for link in json.loads(_ip("-j", "addr").stdout)
            for a in link.get("addr_info", []) if a.get("family") == "inet"]
    used += [ipaddress.ip_network(r["dst"]) for r in json.loads(_ip("-j", "route").stdout)
             if r.get("dst", "default") != "default"]
    candidates = list(range(1, 255))
    random.shuffle(candidates)
    for x in candidates:
        net = ipaddress.ip_network(f"{FIRST_OCTETS}.{x}.0/24")
        if not any(net.overlaps(u) for u in used):
            return net
    raise RuntimeError(f"no free {FIRST_OCTETS}.X.0/24 subnet on this machine")


class Network:
    """A bridge and one namespace per host, made by :meth:`create`, removed by
    :meth:`destroy` (which also ends every process left inside our namespaces)."""

    def __init__(self, hosts: list[str]) -> None:
        self.suffix = secrets.token_hex(3)
        self.subnet = _free_subnet()
        self.bridge = f"sfb{self.suffix}"
        self.gateway = str(self.subnet[1])
        self.hosts = {h: {"ns": f"scifed-{self.suffix}-{h}", "veth": f"sf{self.suffix}-{i}",
                          "peer": f"sf{self.suffix}p{i}", "ip": str(self.subnet[i + 2])}
                      for i, h in enumerate(hosts)}
        self.made: list[tuple[str, str]] = []  # ("ns" | "link", name), in creation order

    def create(self) -> None:
        _ip("link", "add", self.bridge, "type", "bridge")
        self.made.append(("link", self.bridge))
        _ip("addr", "add", f"{self.gateway}/{self.subnet.prefixlen}", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        for h in self.hosts.values():
            _ip("netns", "add", h["ns"])
            self.made.append(("ns", h["ns"]))
            _ip("link", "add", h["veth"], "type", "veth", "peer", "name", h["peer"])
            self.made.append(("link", h["veth"]))
            _ip("link", "set", h["peer"], "netns", h["ns"])
            _ip("link", "set", h["veth"], "master", self.bridge)
            _ip("link", "set", h["veth"], "up")
            _ip("-n", h["ns"], "addr", "add", f"{h['ip']}/{self.subnet.prefixlen}",
                "dev", h["peer"])
            _ip("-n", h["ns"], "link", "set", h["peer"], "up")
            _ip("-n", h["ns"], "link", "set", "lo", "up")

    def address(self, host: str) -> str:
        return self.hosts[host]["ip"]

    def namespace(self, host: str) -> str:
        return self.hosts[host]["ns"]

    def exec_prefix(self, host: str) -> list[str]:
        return ["ip", "netns", "exec", self.namespace(host)]

    def cut(self, host: str) -> None:
        """Partition ``host``: its link to the bridge goes down (both directions)."""
        _ip("link", "set", self.hosts[host]["veth"], "down")

    def restore(self, host: str) -> None:
        _ip("link", "set", self.hosts[host]["veth"], "up")

    def pids(self, host: str) -> list[int]:
        """The processes inside ``host``'s namespace (ours: the namespace is ours)."""
        out = _ip("netns", "pids", self.namespace(host), check=False).stdout
        return [int(p) for p in out.split()]

    def destroy(self) -> None:
        """End what still runs in our namespaces, then delete what we made (deleting a
        namespace deletes the veth end in it, and so the pair)."""
        for host in self.hosts:
            for pid in self.pids(host):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for kind, name in reversed(self.made):
            if kind == "ns":
                _ip("netns", "delete", name, check=False)
            else:
                _ip("link", "delete", name, check=False)
        self.made.clear()


NO_NGINX = ("nginx is not installed: the multi-host federation's Fleet API proxy runs "
            "deploy/'s nginx configuration (apt-get install nginx-light; .ci/run does)")


def nginx_path() -> str | None:
    """The nginx binary that fronts the Flower Fleet API, as in deployment; None without one."""
    found = shutil.which("nginx") or "/usr/sbin/nginx"
    return found if os.access(found, os.X_OK) else None


class NetnsFederation(LocalFederation):
    """:class:`LocalFederation` with the coordinator and every node in a namespace of its
    own (:class:`Network`). With ``flower``, an nginx with deploy/'s proxy configuration
    runs in the coordinator's namespace and publishes the SuperLink's Fleet API (only) on
    the coordinator's address, as a deployment does; the SuperLink itself stays on the
    namespace's loopback."""

    def __init__(self, root: Path, nodes: dict[str, str], network: Network, **kwargs) -> None:
        super().__init__(root, nodes, **kwargs)
        self.network = network
        self.address = f"{network.address(COORDINATOR)}:{self.port}"
        self.proxy_port = free_port() if self.flower_port else None

    @property
    def coordinator_hosts(self) -> list[str]:
        # 127.0.0.1: the SuperLink's Control API on loopback; localhost: nginx's upstream
        return [self.network.address(COORDINATOR), "127.0.0.1", "localhost"]

    @property
    def fleet_address(self) -> str:
        return f"{self.network.address(COORDINATOR)}:{self.proxy_port}"

    def command_prefix(self, key: str) -> list[str]:
        return self.network.exec_prefix(COORDINATOR if key in (COORDINATOR, "proxy") else key)

    def start_coordinator(self) -> None:
        super().start_coordinator()
        if self.flower_port:
            self._start_proxy()

    def _start_proxy(self) -> None:
        """deploy/'s nginx configuration, its ports, directories and PKI moved to ours."""
        nginx = nginx_path()
        if nginx is None:
            raise RuntimeError(NO_NGINX)
        pki = self.ca_dir
        work = self.root / "proxy"
        work.mkdir(exist_ok=True)
        conf = (PROXY_CONF.read_text().replace("/tmp/", f"{work}/")
                .replace("/etc/scifed/pki", str(pki))
                .replace("listen 9443 ssl",
                         f"listen {self.network.address(COORDINATOR)}:{self.proxy_port} ssl")
                .replace("127.0.0.1:9093", f"127.0.0.1:{self.flower_port}"))
        if os.geteuid() == 0:  # master and workers one user, as in the container
            conf = "user root;\n" + conf
        (work / "nginx.conf").write_text(conf)
        log = open(self.logs / "proxy.log", "ab")  # noqa: SIM115 - owned by the process
        self.procs["proxy"] = subprocess.Popen(
            [*self.command_prefix("proxy"), nginx, "-p", str(work), "-c",
             str(work / "nginx.conf"), "-e", "stderr", "-g", "daemon off;"],
            stdout=log, stderr=subprocess.STDOUT)
        wait_for(lambda: socket.create_connection(
            (self.network.address(COORDINATOR), self.proxy_port), 1).close() is None,
            30, "the Fleet API proxy to listen")

    def in_namespace(self, host: str, *argv: str) -> subprocess.CompletedProcess:
        return subprocess.run([*self.network.exec_prefix(host), *argv], capture_output=True,
                              text=True, timeout=30)

    def cut(self, node: str) -> None:
        self.network.cut(node)

    def restore(self, node: str) -> None:
        self.network.restore(node)
