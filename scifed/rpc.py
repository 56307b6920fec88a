"""gRPC plumbing shared by every service: user errors become one status with one message."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path

import grpc

from scifed import sentences
from scifed.errors import NotFound, Unavailable, UserError, excerpt
from scifed.limits import MAX_MESSAGE_CHARS

# the trailing metadata of a refusal that is one of the node's sentences: its key and
# fields as JSON (scifed/sentences.py), beside the English of the status's message
SAID_KEY = "scifed-said-bin"


def user_errors(method: Callable) -> Callable:
    """Turn a user mistake into one gRPC status with its message; nothing else leaks."""

    @functools.wraps(method)
    def run(self, request, context):
        try:
            return method(self, request, context)
        except NotFound as exc:
            context.abort(grpc.StatusCode.NOT_FOUND, excerpt(str(exc), MAX_MESSAGE_CHARS))
        except UserError as exc:
            said = sentences.dumps(exc.args[0] if exc.args else None)
            if said:  # the sentence's key and fields, for a console's language
                context.set_trailing_metadata(((SAID_KEY, said.encode()),))
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
    """One line a person can act on, for a failed call to `target`. A refusal that came
    with its sentence's key and fields is that sentence (its English the same line), which
    a console shows in its page's language."""
    code = exc.code() if hasattr(exc, "code") else None
    details = exc.details() if hasattr(exc, "details") else str(exc)
    if code == grpc.StatusCode.UNAVAILABLE:
        return (f"cannot reach {target}: it is not running, or TLS failed "
                f"(wrong CA or certificate?) [{details}]")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return f"{target} did not answer in time"
    if not details:
        return f"{target} failed: {code}"
    return sentences.loads(details, said_beside(exc))


def said_beside(exc: grpc.RpcError) -> bytes | None:
    """The key and fields (JSON) a refusal's status carried beside its message
    (:func:`user_errors`), or None."""
    try:
        metadata = exc.trailing_metadata() or ()
    except Exception:  # not a call's error (a test's stand-in, a cancelled call)
        return None
    return next((v for k, v in metadata if k == SAID_KEY), None)
