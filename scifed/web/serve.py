"""Serving a console: loopback by default, TLS whenever it is bound anywhere else.

A console shows approvals, budgets and results, and its login cookie is a bearer token,
so it never listens in clear beyond this host: binding a non-loopback address without a
certificate and key is refused with one message before anything listens. The socket is
bound here (port 0 picks a free one), so the address is known, and printed, before the
server runs; tests start a console on a thread and stop it by its handle.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from scifed.errors import UserError


@dataclass(frozen=True)
class TLSFiles:
    cert: Path
    key: Path


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def tls_files(host: str, cert: Path | None, key: Path | None) -> TLSFiles | None:
    """The TLS files to serve with, or None on loopback; a refusal names what is missing."""
    if (cert is None) != (key is None):
        raise UserError("give both --tls-cert and --tls-key, or neither")
    if cert is None:
        if not is_loopback(host):
            raise UserError(f"the console would listen on {host}, which is not this host "
                            "only: give --tls-cert and --tls-key to serve it over TLS")
        return None
    for what, p in (("--tls-cert", cert), ("--tls-key", key)):
        if not Path(p).is_file():
            raise UserError(f"{what} {p}: no such file")
    return TLSFiles(Path(cert), Path(key))


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise UserError(f"the console cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.set_inheritable(True)
    return sock


class Running:
    """A console serving on a thread (tests, the demo): ``url`` and ``stop()``."""

    def __init__(self, server: uvicorn.Server, thread: threading.Thread, url: str):
        self.server, self.thread, self.url = server, thread, url

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def _server(app, sock: socket.socket, tls: TLSFiles | None) -> uvicorn.Server:
    config = uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False, ws="none",
                            ssl_certfile=str(tls.cert) if tls else None,
                            ssl_keyfile=str(tls.key) if tls else None)
    return uvicorn.Server(config)


def url_of(sock: socket.socket, tls: TLSFiles | None) -> str:
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"{'https' if tls else 'http'}://{shown}:{port}"


def start(app, host: str = "127.0.0.1", port: int = 0,
          tls: TLSFiles | None = None) -> Running:
    sock = _bind(host, port)
    server = _server(app, sock, tls)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True,
                              name="scifed-console")
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    if not server.started:
        raise RuntimeError("the console did not start")
    return Running(server, thread, url_of(sock, tls))


def run(app, host: str, port: int, tls: TLSFiles | None, announce) -> None:
    """Serve until interrupted; ``announce(url)`` runs once the socket is bound."""
    sock = _bind(host, port)
    announce(url_of(sock, tls))
    _server(app, sock, tls).run(sockets=[sock])
