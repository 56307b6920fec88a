"""Alerts: researchers whose refused queries reached the policy's allowance or run
(node/alerts.py); their jobs on the dataset wait for approval until one is approved."""

from __future__ import annotations

import json

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse

from node.console.pages import when
from protos.scifed.v1 import node_admin_pb2 as pb
from scifed.web.sessions import Session


def install(nc) -> None:
    @nc.app.get("/alerts", response_class=HTMLResponse)
    def alerts(request: Request, s: Session = Depends(nc.console.user), state: str = "open"):
        rows = json.loads(nc.admin(s).AlertsList(pb.AlertsListRequest(
            state="" if state == "all" else state), timeout=30).json)
        return nc.render(request, "alerts.html", rows=rows, state=state, when=when)
