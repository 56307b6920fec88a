"""The console app factory: pages rendered server-side, one security posture for all.

Every console is a :class:`Console`: a FastAPI app with

* Jinja2 templates (autoescaped) from this package and the console's own package, with
  ``t`` (the page's :class:`~scifed.web.i18n.Translator`), the session and the nav;
* static assets from the packages (htmx ships in ``scifed/web/static``);
* headers that keep a page from running anything it did not ship: a Content-Security-
  Policy of ``'self'`` only (plots are PNG ``data:`` images), no framing, no referrer to
  other sites (``same-origin``: with ``no-referrer`` Chromium sends ``Origin: null`` on a
  form post, which the same-origin check below would refuse),
  no caching of pages that show results or approvals;
* a same-origin check on every state-changing request (the Origin or Referer must be the
  console's own) and a per-session CSRF token, which forms carry as ``csrf`` and htmx as
  the ``X-CSRF-Token`` header (set once on ``<body>``);
* one error page: a :class:`~scifed.errors.UserError` from any call shows its one clear
  message with status 400, and a failed gRPC call says which service failed, as the CLI
  does (:func:`scifed.rpc.rpc_error_message`).

Login is the console's own (approver keys at the node, a one-time address elsewhere): it
calls :meth:`Console.log_in`, and pages ask for :meth:`Console.user` as a dependency.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from urllib.parse import quote, urlsplit

import grpc
import jinja2
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from scifed.errors import UserError
from scifed.sentences import of_error
from scifed.web import i18n
from scifed.web.sessions import COOKIE, Session, SessionStore

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
       "frame-ancestors 'none'; form-action 'self'; base-uri 'none'")
HEADERS = {"Content-Security-Policy": CSP, "X-Frame-Options": "DENY",
           "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin",
           "Cache-Control": "no-store"}


class LoginRequired(Exception):
    """Raised by :meth:`Console.user` when the request has no live session."""


class Forbidden(Exception):
    """A state-changing request that failed the same-origin or CSRF check."""


def png_data_uri(png: bytes) -> str:
    """A plot as an ``<img src>`` the CSP allows (``data:``), so no plot is ever a file
    served by URL that another session could fetch."""
    return "data:image/png;base64," + base64.b64encode(png).decode()


def safe_next(target: str | None) -> str:
    """A redirect target that stays on this console (a path, never another host)."""
    if not target or not target.startswith("/") or target.startswith("//"):
        return "/"
    parts = urlsplit(target)
    return parts.path + (f"?{parts.query}" if parts.query else "")


class Console:
    def __init__(self, *, title_key: str, nav: Sequence[tuple[str, str]],
                 packages: Sequence[str] = (), sessions: SessionStore | None = None,
                 https: bool = False):
        self.title_key = title_key
        self.nav = list(nav)
        self.sessions = sessions or SessionStore()
        self.https = https
        self.app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
        loaders = [jinja2.PackageLoader(p, "templates") for p in packages]
        loaders.append(jinja2.PackageLoader("scifed.web", "templates"))
        env = jinja2.Environment(loader=jinja2.ChoiceLoader(loaders),
                                 autoescape=jinja2.select_autoescape(default=True),
                                 undefined=jinja2.StrictUndefined)
        self.templates = Jinja2Templates(env=env)
        static = [(p, "static") for p in packages if _has_static(p)] + [("scifed.web", "static")]
        self.app.mount("/static", StaticFiles(packages=static), name="static")
        self._install()

    # --- requests ---------------------------------------------------------------------
    def language(self, request: Request) -> str:
        return i18n.pick_language(request.cookies.get(i18n.COOKIE),
                                  request.headers.get("accept-language"))

    def current(self, request: Request) -> Session | None:
        return self.sessions.get(request.cookies.get(COOKIE))

    async def user(self, request: Request) -> Session:
        """The dependency of every page behind login; state-changing requests must also
        carry the session's CSRF token."""
        s = self.current(request)
        if s is None:
            raise LoginRequired()
        if request.method not in SAFE_METHODS:
            sent = request.headers.get("x-csrf-token")
            if sent is None:
                form = await request.form()
                sent = form.get("csrf")
            if sent != s.csrf:
                raise Forbidden()
        return s

    def render(self, request: Request, template: str, status: int = 200,
               **ctx) -> HTMLResponse:
        t = i18n.Translator(self.language(request))
        base = {"t": t, "session": self.current(request), "nav": self.nav,
                "title_key": self.title_key, "notice": None, "problem": None}
        return self.templates.TemplateResponse(request, template, {**base, **ctx},
                                               status_code=status)

    def log_in(self, request: Request, user: str, role: str, next_path: str = "/",
               **held) -> RedirectResponse:
        old = request.cookies.get(COOKIE)
        self.sessions.drop(old)  # a fresh token at every login: no session fixation
        s = self.sessions.create(user, role, **held)
        resp = RedirectResponse(safe_next(next_path), status_code=303)
        resp.set_cookie(COOKIE, s.token, httponly=True, samesite="strict", secure=self.https,
                        path="/")
        return resp

    def enable_token_login(self, user: str, role: str) -> None:
        """Single-user consoles: ``/login?token=…`` (printed at start) opens a session."""

        @self.app.get("/login", response_class=HTMLResponse)
        async def login(request: Request, token: str = "", next: str = "/"):
            if token and self.sessions.redeem(token):
                return self.log_in(request, user, role, next)
            return self.render(request, "token_login.html", status=401 if token else 200,
                               problem=i18n.Translator(self.language(request))("login.failed")
                               if token else None)

    # --- wiring -----------------------------------------------------------------------
    def _install(self) -> None:
        app = self.app

        @app.middleware("http")
        async def posture(request: Request, call_next):
            if request.method not in SAFE_METHODS and not _same_origin(request):
                resp: Response = self._error(request, "error.csrf", 403)
            else:
                resp = await call_next(request)
            for k, v in HEADERS.items():
                resp.headers.setdefault(k, v)
            return resp

        @app.exception_handler(LoginRequired)
        async def to_login(request: Request, exc: LoginRequired):
            if request.headers.get("hx-request"):
                return Response(status_code=401, headers={"HX-Redirect": "/login"})
            return RedirectResponse(f"/login?next={quote(safe_next(str(request.url.path)))}",
                                    status_code=303)

        @app.exception_handler(Forbidden)
        async def forbidden(request: Request, exc: Forbidden):
            return self._error(request, "error.csrf", 403)

        @app.exception_handler(UserError)
        async def user_error(request: Request, exc: UserError):
            return self.render(request, "error.html", status=400, message=of_error(exc))

        @app.exception_handler(grpc.RpcError)
        async def rpc_error(request: Request, exc: grpc.RpcError):
            from scifed.rpc import rpc_error_message

            return self.render(request, "error.html", status=502,
                               message=rpc_error_message(exc, "the service"))

        @app.get("/lang/{code}")
        async def language(code: str, next: str = "/"):
            resp = RedirectResponse(safe_next(next), status_code=303)
            if code in i18n.LANGUAGES:
                resp.set_cookie(i18n.COOKIE, code, samesite="strict", path="/",
                                secure=self.https, max_age=365 * 86400)
            return resp

        @app.post("/logout")
        async def logout(request: Request):
            await self.user(request)
            self.sessions.drop(request.cookies.get(COOKIE))
            resp = RedirectResponse("/login", status_code=303)
            resp.delete_cookie(COOKIE, path="/")
            return resp

    def _error(self, request: Request, key: str, status: int) -> HTMLResponse:
        t = i18n.Translator(self.language(request))
        return self.render(request, "error.html", status=status, message=t(key))


def _same_origin(request: Request) -> bool:
    """The Origin (or, failing it, the Referer) of a state-changing request names this
    console's own scheme, host and port; a request with neither is refused too."""
    claimed = request.headers.get("origin") or request.headers.get("referer")
    if not claimed or claimed == "null":
        return False
    parts = urlsplit(claimed)
    own = request.url
    return (parts.scheme, parts.netloc) == (own.scheme, own.netloc)


def _has_static(package: str) -> bool:
    import importlib.resources

    try:
        return importlib.resources.files(package).joinpath("static").is_dir()
    except ModuleNotFoundError:
        return False
