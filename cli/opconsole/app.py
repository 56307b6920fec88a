"""The operator console's pages: nodes, studies, jobs and revocations.

Each page is a full page once, then its live part (``/<page>/live``) is fetched again by
htmx every ``refresh_s`` seconds and swapped in place, so a node that stops shows offline
within one refresh of the coordinator noticing. Every page is read-only: the operator
changes the federation with the CLI (`scifed study create`, `scifed ca revoke`), so the
console needs no state-changing request beyond logout.

What a page shows comes from :mod:`cli.operator_views`, the same functions the CLI
commands print, over one mTLS channel to the coordinator with the operator's identity.
"""

from __future__ import annotations

import time
from pathlib import Path

import grpc
from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from cli import operator_views as views
from cli.opconsole import messages  # noqa: F401 - registers the console's text
from scifed.errors import UserError
from scifed.rpc import rpc_error_message
from scifed.states import JobStatus
from scifed.web import i18n
from scifed.web.app import Console

NAV = [("/nodes", "op.nav.nodes"), ("/studies", "op.nav.studies"), ("/jobs", "op.nav.jobs"),
       ("/revocations", "op.nav.revocations")]
PAGES = {"nodes", "studies", "jobs", "revocations"}
CALL_TIMEOUT_S = 10.0


def age_in(t: i18n.Translator, seconds: float | None) -> str:
    """:func:`cli.operator_views.age_text` in the page's language."""
    text = views.age_text(seconds)
    if seconds is None:
        return t("op.never")
    n, unit = text.split(" ")
    return t(f"op.age.{unit}", n=n)


def shown_time(iso: str) -> str:
    """An ISO time in UTC as the pages show it (the column headers say UTC)."""
    return iso.replace("T", " ").removesuffix("+00:00")


class OperatorConsole(Console):
    def __init__(self, identity: Path, *, refresh_s: float = 2.0, https: bool = False,
                 client=None) -> None:
        from coordinator.client import Client, IdentityDir

        ident = IdentityDir.load(identity)
        if ident.cfg.role != "operator":
            raise UserError(f"{identity} holds the identity of {ident.cfg.role} "
                            f"'{ident.cfg.name}': the operator console needs an operator's "
                            "(`scifed operator init`)")
        super().__init__(title_key="op.title", nav=NAV, packages=["cli.opconsole"],
                         https=https)
        self.templates.env.filters["utc"] = shown_time
        self.refresh_s = refresh_s
        self.operator = ident.cfg.name
        # one channel, reconnecting by itself; a refresh waits CALL_TIMEOUT_S at most
        self._client = client or Client(identity, timeout=CALL_TIMEOUT_S)
        self.enable_token_login(self.operator, "operator")
        self._routes()

    def close(self) -> None:
        self._client.close()

    def _data(self, page: str, request: Request) -> dict:
        c = self._client
        if page == "nodes":
            rows = views.nodes(c)
            return {"rows": rows, "online": sum(r.online for r in rows)}
        if page == "studies":
            return {"rows": views.studies(c)}
        if page == "jobs":
            status = request.query_params.get("status", "")
            if status and status not in {s.value for s in JobStatus}:
                raise UserError(f"status {status!r}: choose one of "
                                f"{', '.join(s.value for s in JobStatus)}")
            return {"rows": views.jobs(c, status=status), "chosen": status,
                    "statuses": [s.value for s in JobStatus]}
        return {"rev": views.revocations(c)}

    def _page(self, request: Request, page: str, live: bool) -> HTMLResponse:
        t = i18n.Translator(self.language(request))
        query = request.url.query
        ctx = {"page": page, "refresh_s": f"{self.refresh_s:g}",
               "live_url": f"/{page}/live" + (f"?{query}" if query else ""),
               "updated": time.strftime("%H:%M:%S", time.gmtime()),
               "age": lambda s: age_in(t, s),
               "label": lambda kind, value: t(f"op.{kind}.{value}")}
        try:
            data = self._data(page, request)
        except grpc.RpcError as exc:
            # said in place of the page's live part, which keeps asking at every refresh
            return self.render(request, "_unreachable.html" if live else "unreachable.html",
                               **ctx, why=rpc_error_message(exc, "the coordinator"))
        return self.render(request, f"_{page}.html" if live else f"{page}.html", **ctx,
                           **data)

    def _routes(self) -> None:
        app, user = self.app, self.user

        @app.get("/", name="home")
        def home(s=Depends(user)):
            return RedirectResponse("/nodes", status_code=303)

        for page in sorted(PAGES):
            self._page_routes(page)

    def _page_routes(self, page: str) -> None:
        app, user = self.app, self.user

        @app.get(f"/{page}", response_class=HTMLResponse, name=page)
        def full(request: Request, s=Depends(user)):
            return self._page(request, page, live=False)

        @app.get(f"/{page}/live", response_class=HTMLResponse, name=f"{page}_live")
        def live(request: Request, s=Depends(user)):
            return self._page(request, page, live=True)


def build(identity: Path, *, refresh_s: float = 2.0, https: bool = False) -> OperatorConsole:
    """The console for `scifed operator console` (and the tests)."""
    return OperatorConsole(identity, refresh_s=refresh_s, https=https)
