"""The node console app: login with an approver key, and the pages of each area.

A person logs in with their approver name, key file and passphrase. The console unlocks
the key here (the passphrase is used once and dropped), and asks the node's registry
(``ApproverList``) whether that key is the one registered for that name: an unknown
name, a key registered to someone else, or a wrong passphrase each get one message and
no session. The unlocked key then lives only in the session's server-side secrets, so
that decisions are signed as ``scifed node approvals approve --key`` signs them, and is
gone at logout, idle expiry or a restart. The role shown is the registry's; the node
decides what each role may approve (a liaison's approval of G4 data is refused there).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import grpc
from fastapi import Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from node import admin_client
from node.console import messages  # noqa: F401 - registers the interface text
from protos.scifed.v1 import node_admin_pb2 as pb
from protos.scifed.v1 import node_admin_pb2_grpc as pbg
from scifed.config import NodeConfig
from scifed.errors import UserError
from scifed.web import i18n
from scifed.web.app import Console, safe_next
from scifed.web.sessions import Session

NAV = [("/datasets", "node.nav.datasets"), ("/policy", "node.nav.policy"),
       ("/approvals", "node.nav.approvals"), ("/review", "node.nav.review"),
       ("/access", "node.nav.access"),
       ("/budget", "node.nav.budget"),
       ("/audit", "node.nav.audit"), ("/studies", "node.nav.studies"),
       ("/alerts", "node.nav.alerts")]
KEY = "approver_key"  # the session secret holding the unlocked key


@dataclass
class NodeConsole:
    """The console and its one channel to the node's admin socket."""

    console: Console
    cfg: NodeConfig
    channel: grpc.Channel

    @property
    def app(self):
        return self.console.app

    def admin(self, session: Session) -> pbg.NodeAdminStub:
        """The admin API, every call audited under the logged-in approver's name."""
        return admin_client.acting(self.channel, session.user)

    def render(self, request: Request, template: str, **ctx) -> HTMLResponse:
        return self.console.render(request, template, **ctx)

    def t(self, request: Request) -> i18n.Translator:
        return i18n.Translator(self.console.language(request))


def build(cfg: NodeConfig, *, https: bool = False) -> NodeConsole:
    channel = admin_client.admin_channel(cfg, "`scifed node serve`")
    console = Console(title_key="node.title", nav=NAV, packages=["node.console"], https=https)
    nc = NodeConsole(console, cfg, channel)
    _install_login(nc)
    from node.console.pages import install_all

    install_all(nc)
    return nc


def jloads(reply) -> object:
    return json.loads(reply.json)


def _install_login(nc: NodeConsole) -> None:
    app = nc.app

    @app.get("/", response_class=HTMLResponse)
    def home(s: Session = Depends(nc.console.user)):
        return RedirectResponse("/datasets", status_code=303)

    def page(request: Request, status: int = 200, problem: str | None = None,
             name: str = "", key_path: str = "", next_path: str = "/"):
        from scifed.approver_keys import default_key_path

        return nc.console.render(request, "login.html", status=status, problem=problem,
                                 name=name, key_path=key_path, next=safe_next(next_path),
                                 node=nc.cfg.name,
                                 default_key=str(default_key_path(name or "NAME")))

    @app.get("/login", response_class=HTMLResponse)
    def login_form(request: Request, next: str = "/"):
        return page(request, next_path=next)

    @app.post("/login", response_class=HTMLResponse)
    def login(request: Request, name: str = Form(""), key_path: str = Form(""),
              passphrase: str = Form(""), next: str = Form("/")):
        try:
            key, person = unlock(nc, name.strip(), key_path.strip(), passphrase,
                                 nc.t(request))
        except UserError as exc:
            return page(request, 401, str(exc), name, key_path, next)
        return nc.console.log_in(request, person["name"], person["role"], next,
                                 **{KEY: key})


def unlock(nc: NodeConsole, name: str, key_path: str, passphrase: str,
           t: i18n.Translator):
    """The person's unlocked key and registry entry, once the key is theirs at this node;
    one UserError otherwise (nothing is kept of a failed attempt)."""
    from scifed.approver_keys import (
        check_approver,
        default_key_path,
        fingerprint,
        load_key,
        public_pem,
    )

    check_approver(name)
    path = Path(key_path) if key_path else default_key_path(name)
    if not passphrase:
        raise UserError(f"approver key {path}: give its passphrase")
    key = load_key(path, passphrase.encode())
    fp = fingerprint(public_pem(key))
    people = jloads(admin_client.acting(nc.channel, name).ApproverList(
        pb.ApproverListRequest(), timeout=30))
    person = next((p for p in people if p["name"] == name), None)
    holder = next((p for p in people if p["fingerprint"] == fp), None)
    if person is None:
        raise UserError(t("node.login.unknown", name=name, node=nc.cfg.name))
    if person["fingerprint"] != fp:
        if holder is not None:
            raise UserError(t("node.login.other_key", other=holder["name"], name=name))
        raise UserError(t("node.login.not_theirs", name=name, node=nc.cfg.name))
    return key, person
