"""Container health check of a scifed coordinator or node (the image's HEALTHCHECK).

The role comes from the environment variable the `scifed` command itself reads for its
config: $SCIFED_COORDINATOR_CONFIG (the coordinator's gRPC port must accept a connection
on loopback) or $SCIFED_NODE_CONFIG (the node's admin socket must accept one: a node
opens no network port). The config is read with scifed's own loader, so the check looks
where the server listens. Exit 0 when healthy, 1 with one line saying why not.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

TIMEOUT = 3.0


def check() -> str | None:
    """None when healthy, else the reason."""
    from scifed.config import CoordinatorConfig, NodeConfig, load_config

    if path := os.environ.get("SCIFED_COORDINATOR_CONFIG"):
        cfg = load_config(Path(path), CoordinatorConfig)
        port = int(cfg.listen.rpartition(":")[2])
        try:
            socket.create_connection(("127.0.0.1", port), TIMEOUT).close()
        except OSError as exc:
            return f"coordinator port {port}: {exc}"
        return None
    if path := os.environ.get("SCIFED_NODE_CONFIG"):
        sock_path = load_config(Path(path), NodeConfig).socket_path
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(TIMEOUT)
            try:
                sock.connect(str(sock_path))
            except OSError as exc:
                return f"node admin socket {sock_path}: {exc}"
        return None
    return "set SCIFED_COORDINATOR_CONFIG or SCIFED_NODE_CONFIG (the role's config file)"


def main() -> int:
    try:
        problem = check()
    except Exception as exc:  # a config that cannot be read is unhealthy, said in one line
        problem = str(exc)
    if problem:
        print(f"unhealthy: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
