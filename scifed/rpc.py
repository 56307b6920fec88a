"""gRPC plumbing shared by every service: user errors become one status with one message."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path

import grpc

from scifed.errors import NotFound, Unavailable, UserError, excerpt
from scifed.limits import MAX_MESSAGE_CHARS


def user_errors(method: Callable) -> Callable:
    """Turn a user mistake into one gRPC status with its message; nothing else leaks."""

    @functools.wraps(method)
    def run(self, request, context):
        try:
            return method(self, request, context)
        except NotFound as exc:
            context.abort(grpc.StatusCode.NOT_FOUND, excerpt(str(exc), MAX_MESSAGE_CHARS))
        except UserError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          excerpt(str(exc), MAX_MESSAGE_CHARS))
        except Unavailable as exc:  # not the caller's mistake: worth retrying later
            context.abort(grpc.StatusCode.UNAVAILABLE, excerpt(str(exc), MAX_MESSAGE_CHARS))
        except grpc.RpcError as exc:  # a call this one made failed: pass its answer on
            context.abort(exc.code(), exc.details())

    return run


def start_on_private_socket(server: grpc.Server, path: Path) -> None:
    """Serve on a Unix socket only this account may open (mode 0600): the socket's
    permissions are what keeps other users of the host out."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    old = os.umask(0o177)
    try:
        server.add_insecure_port(f"unix:{path}")
        server.start()
    finally:
        os.umask(old)


def rpc_error_message(exc: grpc.RpcError, target: str) -> str:
    """One line a person can act on, for a failed call to `target`."""
    code = exc.code() if hasattr(exc, "code") else None
    details = exc.details() if hasattr(exc, "details") else str(exc)
    if code == grpc.StatusCode.UNAVAILABLE:
        return (f"cannot reach {target}: it is not running, or TLS failed "
                f"(wrong CA or certificate?) [{details}]")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return f"{target} did not answer in time"
    return details or f"{target} failed: {code}"
