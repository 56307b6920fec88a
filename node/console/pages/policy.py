"""Policy: the effective cell of each dataset with the source of every value (the
matrix default, or the officer's override), the override in force — its YAML, who set
it, when and why — prefilled to edit, and tightening or resetting it (the node refuses
an override that loosens anything)."""

from __future__ import annotations

import json

import grpc
from fastapi import Depends, Form, Request
from fastapi.responses import HTMLResponse

from node.console.pages import problem_list, refusal, when
from protos.scifed.v1 import node_admin_pb2 as pb
from scifed.web.sessions import Session


def install(nc) -> None:
    app, user = nc.app, nc.console.user

    @app.get("/policy", response_class=HTMLResponse)
    def policies(request: Request, s: Session = Depends(user)):
        admin = nc.admin(s)
        shown = [json.loads(admin.PolicyShow(pb.DatasetRef(dataset_id=d.dataset_id),
                                             timeout=30).json)
                 for d in admin.ListDatasets(pb.ListDatasetsRequest(), timeout=30).datasets]
        return nc.render(request, "policy.html", policies=shown, when=when)

    def one(request: Request, s: Session, dataset_id: str, status: int = 200,
            override: str | None = None, justification: str | None = None, **ctx):
        """The page; the form holds what was just refused, else the override in force."""
        pol = json.loads(nc.admin(s).PolicyShow(pb.DatasetRef(dataset_id=dataset_id),
                                                timeout=30).json)
        force = pol.get("override") or {}
        ctx.setdefault("problems", [])
        return nc.console.render(
            request, "policy_one.html", status=status, pol=pol, when=when,
            override=force.get("yaml", "") if override is None else override,
            justification=force.get("justification", "") if justification is None
            else justification, **ctx)

    @app.get("/policy/{dataset_id}", response_class=HTMLResponse)
    def policy(request: Request, dataset_id: str, s: Session = Depends(user)):
        return one(request, s, dataset_id)

    @app.post("/policy/{dataset_id}", response_class=HTMLResponse)
    def tighten(request: Request, dataset_id: str, s: Session = Depends(user),
                override: str = Form(""), justification: str = Form(""),
                reset: str = Form("")):
        t = nc.t(request)
        if not reset and not justification.strip():
            return one(request, s, dataset_id, 400, override=override,
                       justification=justification, problems=[t("pol.need_justification")])
        try:
            nc.admin(s).PolicySet(pb.PolicySetRequest(
                dataset_id=dataset_id, yaml=override, source="node console",
                justification=justification.strip(), reset=bool(reset)), timeout=30)
        except grpc.RpcError as exc:
            return one(request, s, dataset_id, 400, override=override,
                       justification=justification, problems=problem_list(refusal(exc)))
        return one(request, s, dataset_id,
                   notice=t("pol.reset_done" if reset else "pol.saved", id=dataset_id))
