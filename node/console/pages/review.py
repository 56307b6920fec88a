"""Output review (node/review.py): a pooled result held before it is sealed to the
researcher, shown as it would leave — its tables and figures, with the disclosure checks
already applied — and released or withheld, signed with the logged-in approver's key
over the result's hash (the same function as `scifed node review release|withhold`)."""

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


def install(nc) -> None:
    app, user = nc.app, nc.console.user

    @app.get("/review", response_class=HTMLResponse)
    def reviews(request: Request, s: Session = Depends(user), state: str = "pending"):
        rows = json.loads(nc.admin(s).ReviewList(pb.ReviewListRequest(
            state="" if state == "all" else state), timeout=60).json)
        return nc.render(request, "reviews.html", rows=rows, state=state)

    def one(request: Request, s: Session, review_id: str, status: int = 200, **ctx):
        v = json.loads(nc.admin(s).ReviewShow(pb.ReviewRef(review_id=review_id),
                                              timeout=60).json)
        plots = {name: "data:image/png;base64," + data
                 for name, data in (v.get("view") or {}).get("plots", {}).items()}
        ctx.setdefault("problem", None)
        return nc.console.render(request, "review.html", status=status, v=v, plots=plots,
                                 when=when, checks=json.dumps(v["checks"], indent=2,
                                                              ensure_ascii=False), **ctx)

    @app.get("/review/{review_id}", response_class=HTMLResponse)
    def review(request: Request, review_id: str, s: Session = Depends(user)):
        return one(request, s, review_id, notice=take_flash(s))

    @app.post("/review/{review_id}", response_class=HTMLResponse)
    def decide(request: Request, review_id: str, s: Session = Depends(user),
               decision: str = Form(...), reason: str = Form("")):
        t = nc.t(request)
        release = decision == "release"
        if not release and not reason.strip():
            raise UserError(t("ap.needs_reason"))
        key = s.secrets[KEY]
        try:
            v, me = admin_client.signed_review_decision(
                nc.admin(s), review_id, release=release, reason=reason.strip(),
                key=lambda: key, key_label=f"of {s.user}")
        except grpc.RpcError as exc:
            return one(request, s, review_id, 400, problem=refusal(exc))
        flash(s, t("rv.done", id=v["review_id"], state=t.term(v["state"]), name=me.name))
        return RedirectResponse(f"/review/{quote(review_id)}", status_code=303)
