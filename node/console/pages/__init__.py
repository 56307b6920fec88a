"""The console's pages, one module per area; each has ``install(nc)``."""

from __future__ import annotations

import datetime as dt

import grpc

REFUSALS = (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
            grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.PERMISSION_DENIED)


def install_all(nc) -> None:
    from node.console.pages import (
        access,
        alerts,
        approvals,
        audit,
        budget,
        datasets,
        policy,
        quality,
        review,
        studies,
    )

    for module in (datasets, quality, policy, approvals, review, access, budget, audit,
                   studies, alerts):
        module.install(nc)


def refusal(exc: grpc.RpcError) -> str:
    """The node's own message for a refused call (a user's mistake, shown on the form);
    any other failure goes on to the console's error page."""
    if exc.code() in REFUSALS:
        return exc.details() or str(exc.code())
    raise exc


def problem_list(message: str) -> list[str]:
    """The problems of one refusal as a list: the node reports every problem of a
    registration at once, ``subject: N problems`` and one indented line each."""
    lines = [ln for ln in message.splitlines() if ln.strip()]
    items = [ln.strip().removeprefix("- ") for ln in lines if ln.startswith((" ", "\t"))]
    return items or lines


def flash(session, text: str) -> None:
    """A notice for the page a decision redirects to (kept server-side, shown once), so
    that a reload never sends the decision again and no address can forge the notice."""
    session.secrets["flash"] = text


def take_flash(session) -> str | None:
    return session.secrets.pop("flash", None)


def when(ms: int | None) -> str:
    if not ms:
        return ""
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
