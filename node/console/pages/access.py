"""Access requests and deliveries (node/delivery): the grants of this node's datasets,
a held request approved with conditions and an expiry or denied (signed, as `scifed node
access approve|deny` signs), a grant revoked, everything delivered, and an offline
transfer the officer made, recorded under their signature."""

from __future__ import annotations

import json
from urllib.parse import quote

import grpc
from fastapi import Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from node import admin_client
from node.console.app import KEY
from node.console.pages import flash, refusal, take_flash, when
from protos.scifed.v1 import node_admin_pb2 as pb
from scifed.errors import UserError
from scifed.web.sessions import Session

STATES = ("", "pending", "granted", "denied", "expired", "revoked")


def install(nc) -> None:
    app, user = nc.app, nc.console.user

    @app.get("/access", response_class=HTMLResponse)
    def grants(request: Request, s: Session = Depends(user), state: str = ""):
        admin = nc.admin(s)
        rows = json.loads(admin.AccessList(pb.AccessListRequest(
            state=state if state in STATES else ""), timeout=30).json)
        delivered = json.loads(admin.AccessList(pb.AccessListRequest(deliveries=True),
                                                timeout=30).json)
        notice = take_flash(s)
        return nc.render(request, "access.html", rows=rows, deliveries=delivered,
                         state=state, states=STATES, when=when, notice=notice)

    def one(request: Request, s: Session, grant_id: str, status: int = 200, **ctx):
        g = json.loads(nc.admin(s).AccessShow(pb.AccessRef(grant_id=grant_id),
                                              timeout=30).json)
        ctx.setdefault("problem", None)
        return nc.console.render(request, "grant.html", status=status, g=g, when=when,
                                 **ctx)

    @app.get("/access/{grant_id}", response_class=HTMLResponse)
    def grant(request: Request, grant_id: str, s: Session = Depends(user)):
        return one(request, s, grant_id, notice=take_flash(s))

    @app.post("/access/{grant_id}", response_class=HTMLResponse)
    def decide(request: Request, grant_id: str, s: Session = Depends(user),
               action: str = Form(...), conditions: str = Form(""), expires: str = Form(""),
               reason: str = Form("")):
        from node.approvals import parse_expiry

        t = nc.t(request)
        admin = nc.admin(s)
        try:
            if action == "revoke":
                admin.AccessRevoke(pb.AccessRevokeRequest(grant_id=grant_id,
                                                          reason=reason.strip()), timeout=30)
            else:
                g = json.loads(admin.AccessShow(pb.AccessRef(grant_id=grant_id),
                                                timeout=30).json)
                if not g.get("approval_id"):
                    raise UserError(f"grant {grant_id} is {g['state']}: it was not held "
                                    "for approval")
                approve = action == "approve"
                if not approve and not reason.strip():
                    raise UserError(t("ap.needs_reason"))
                key = s.secrets[KEY]
                admin_client.signed_decision(
                    admin, g["approval_id"], approve=approve,
                    reason=conditions.strip() if approve else reason.strip(),
                    expires_ms=parse_expiry(expires.strip()) if approve else None,
                    key=lambda: key, key_label=f"of {s.user}")
        except grpc.RpcError as exc:
            return one(request, s, grant_id, 400, problem=refusal(exc))
        flash(s, t("ac.done", id=grant_id))
        return RedirectResponse(f"/access/{quote(grant_id)}", status_code=303)

    @app.get("/access-offline", response_class=HTMLResponse)
    def offline_form(request: Request, s: Session = Depends(user)):
        datasets = nc.admin(s).ListDatasets(pb.ListDatasetsRequest(), timeout=30).datasets
        return nc.render(request, "offline.html", datasets=datasets, values={})

    @app.post("/access-offline", response_class=HTMLResponse)
    def offline(request: Request, s: Session = Depends(user), dataset_id: str = Form(...),
                recipient: str = Form(""), what: str = Form(""), medium: str = Form(""),
                sha256: str = Form("")):
        key = s.secrets[KEY]
        try:
            r = admin_client.signed_offline_record(
                nc.admin(s), dataset_id=dataset_id, recipient=recipient.strip(),
                what=what.strip(), sha256=sha256.strip().lower(), medium=medium.strip(),
                key=lambda: key, key_label=f"of {s.user}")
        except grpc.RpcError as exc:
            datasets = nc.admin(s).ListDatasets(pb.ListDatasetsRequest(),
                                                timeout=30).datasets
            return nc.console.render(request, "offline.html", status=400, datasets=datasets,
                                     problem=refusal(exc), values={
                                         "dataset_id": dataset_id, "recipient": recipient,
                                         "what": what, "medium": medium, "sha256": sha256})
        flash(s, nc.t(request)("ac.recorded", id=r["delivery_id"]))
        return RedirectResponse("/access", status_code=303)
