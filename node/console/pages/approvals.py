"""Approvals: each request in readable form — the job, the researcher, the study's
purpose, the policy's decision and its reason, the privacy cost — and a decision signed
with the logged-in approver's key, by the same function as the CLI
(:func:`node.admin_client.signed_decision`)."""

from __future__ import annotations

import json
from urllib.parse import quote

import grpc
import yaml
from fastapi import Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from node import admin_client
from node.console.app import KEY
from node.console.pages import flash, refusal, take_flash, when
from protos.scifed.v1 import node_admin_pb2 as pb
from scifed.errors import UserError
from scifed.web.sessions import Session


def _study(admin, study_id: str):
    studies = admin.ListStudies(pb.ListStudiesLocalRequest(), timeout=30).studies
    return next((st for st in studies if st.study_id == study_id), None)


def install(nc) -> None:
    app, user = nc.app, nc.console.user

    @app.get("/approvals", response_class=HTMLResponse)
    def approvals(request: Request, s: Session = Depends(user), state: str = "pending"):
        rows = json.loads(nc.admin(s).ApprovalsList(pb.ApprovalsListRequest(
            state="" if state == "all" else state), timeout=30).json)
        return nc.render(request, "approvals.html", rows=rows, state=state, when=when)

    def one(request: Request, s: Session, approval_id: str, status: int = 200, **ctx):
        admin = nc.admin(s)
        appr = json.loads(admin.ApprovalShow(pb.ApprovalRef(approval_id=approval_id),
                                             timeout=30).json)
        ctx.setdefault("problem", None)
        return nc.console.render(
            request, "approval.html", status=status, a=appr, study=_study(admin, appr["study_id"]),
            spec_yaml=yaml.safe_dump(appr["spec"], allow_unicode=True, sort_keys=False),
            when=when, **ctx)

    @app.get("/approvals/{approval_id}", response_class=HTMLResponse)
    def approval(request: Request, approval_id: str, s: Session = Depends(user)):
        return one(request, s, approval_id, notice=take_flash(s))

    @app.post("/approvals/{approval_id}", response_class=HTMLResponse)
    def decide(request: Request, approval_id: str, s: Session = Depends(user),
               decision: str = Form(...), reason: str = Form(""), expires: str = Form("")):
        from node.approvals import parse_expiry

        t = nc.t(request)
        approve = decision == "approve"
        if not approve and not reason.strip():
            raise UserError(t("ap.needs_reason"))
        expires_ms = parse_expiry(expires.strip()) if approve and expires.strip() else None
        key = s.secrets[KEY]
        try:
            a, me = admin_client.signed_decision(
                nc.admin(s), approval_id, approve=approve, reason=reason.strip(),
                expires_ms=expires_ms, key=lambda: key, key_label=f"of {s.user}")
        except grpc.RpcError as exc:
            return one(request, s, approval_id, 400, problem=refusal(exc))
        flash(s, t("ap.done", id=a["approval_id"], name=me.name))
        return RedirectResponse(f"/approvals/{quote(a['approval_id'])}", status_code=303)
