"""mTLS for every cross-host gRPC call, and who the caller is.

The caller's identity and role come only from its client certificate (signed by the
federation CA and not on the CRL), never from a request field.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import grpc

from scifed.errors import UserError
from scifed.pki import Identity, identity_from_cert_pem, load_crl_serials

# Keepalive lets a node notice a vanished coordinator (and vice versa) within seconds.
CHANNEL_OPTIONS = [
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.max_receive_message_length", 256 * 1024 * 1024),
    ("grpc.max_send_message_length", 256 * 1024 * 1024),
]
SERVER_OPTIONS = [
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
    ("grpc.http2.max_ping_strikes", 0),
    ("grpc.max_receive_message_length", 256 * 1024 * 1024),
    ("grpc.max_send_message_length", 256 * 1024 * 1024),
]


@dataclass(frozen=True)
class TlsFiles:
    """PEM files of one party: the federation CA, its certificate and its private key."""

    ca: Path
    cert: Path
    key: Path

    def read(self) -> tuple[bytes, bytes, bytes]:
        out = []
        for label, path in (("CA certificate", self.ca), ("certificate", self.cert),
                            ("private key", self.key)):
            try:
                out.append(Path(path).read_bytes())
            except OSError as exc:
                raise UserError(f"cannot read the {label} {path}: {exc.strerror}") from None
        return out[0], out[1], out[2]


def server_credentials(files: TlsFiles) -> grpc.ServerCredentials:
    ca, cert, key = files.read()
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca,
                                       require_client_auth=True)


def secure_channel(address: str, files: TlsFiles) -> grpc.Channel:
    ca, cert, key = files.read()
    creds = grpc.ssl_channel_credentials(root_certificates=ca, private_key=key,
                                         certificate_chain=cert)
    return grpc.secure_channel(address, creds, options=CHANNEL_OPTIONS)


@lru_cache(maxsize=1024)
def _identity_from_pem(pem: bytes) -> Identity:
    return identity_from_cert_pem(pem)


def peer_identity(context: grpc.ServicerContext) -> Identity:
    """Identity of the caller from its verified client certificate."""
    pems = context.auth_context().get("x509_pem_cert")
    if not pems:
        context.abort(grpc.StatusCode.UNAUTHENTICATED, "a client certificate is required")
    try:
        return _identity_from_pem(pems[0])
    except UserError as exc:
        context.abort(grpc.StatusCode.UNAUTHENTICATED, str(exc))
    raise AssertionError("unreachable")


class RevocationList:
    """The CA's CRL, re-read whenever the file changes so a revocation takes effect live."""

    def __init__(self, crl: Path | None, ca: Path) -> None:
        self._crl, self._ca = crl, ca
        self._mtime: float | None = None
        self._serials: frozenset[int] = frozenset()
        self._lock = threading.Lock()

    def serials(self) -> frozenset[int]:
        if self._crl is None or not self._crl.exists():
            return frozenset()
        mtime = self._crl.stat().st_mtime
        with self._lock:
            if mtime != self._mtime:
                self._serials = frozenset(load_crl_serials(self._crl, self._ca))
                self._mtime = mtime
            return self._serials


class AuthInterceptor(grpc.ServerInterceptor):
    """Rejects revoked certificates and callers whose role may not call the method.

    `rules` maps a full method name (`/scifed.v1.Service/Method`) to the roles allowed;
    a method missing from the table is refused, so a new RPC is closed by default.
    """

    def __init__(self, rules: dict[str, Iterable[str]], revocations: RevocationList,
                 on_peer: Callable[[Identity], None] | None = None) -> None:
        """``on_peer``: told every caller's identity (before any refusal), so a server can
        name the certificates a CRL lists only by serial."""
        self._rules = {m: frozenset(r) for m, r in rules.items()}
        self._revocations = revocations
        self._on_peer = on_peer

    def intercept_service(self, continuation: Callable, details: grpc.HandlerCallDetails):
        handler = continuation(details)
        if handler is None:
            return None
        allowed = self._rules.get(details.method, frozenset())

        def check(context: grpc.ServicerContext) -> None:
            ident = peer_identity(context)
            if self._on_peer is not None:
                self._on_peer(ident)
            if ident.serial in self._revocations.serials():
                context.abort(grpc.StatusCode.UNAUTHENTICATED,
                              f"certificate of {ident.role} '{ident.name}' has been revoked")
            if ident.role not in allowed:
                context.abort(grpc.StatusCode.PERMISSION_DENIED,
                              f"role '{ident.role}' may not call {details.method}")

        return _wrap(handler, check)


def _wrap(handler: grpc.RpcMethodHandler, check: Callable) -> grpc.RpcMethodHandler:
    def guard(behavior: Callable) -> Callable:
        def run(request_or_iterator, context):
            check(context)
            return behavior(request_or_iterator, context)
        return run

    kinds = {
        (False, False): ("unary_unary", grpc.unary_unary_rpc_method_handler),
        (False, True): ("unary_stream", grpc.unary_stream_rpc_method_handler),
        (True, False): ("stream_unary", grpc.stream_unary_rpc_method_handler),
        (True, True): ("stream_stream", grpc.stream_stream_rpc_method_handler),
    }
    attr, factory = kinds[(handler.request_streaming, handler.response_streaming)]
    return factory(guard(getattr(handler, attr)),
                   request_deserializer=handler.request_deserializer,
                   response_serializer=handler.response_serializer)
