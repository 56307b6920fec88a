"""Budget: ε spent and left per dataset and per researcher this year, and a chart of
the spending over time."""

from __future__ import annotations

import json

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse

from node.console import charts
from protos.scifed.v1 import node_admin_pb2 as pb
from scifed.web.app import png_data_uri
from scifed.web.sessions import Session


def install(nc) -> None:
    @nc.app.get("/budget", response_class=HTMLResponse)
    def budget(request: Request, s: Session = Depends(nc.console.user)):
        rows = json.loads(nc.admin(s).BudgetShow(pb.BudgetRequest(), timeout=30).json)
        chart = charts.budget_over_time(rows)
        return nc.render(request, "budget.html", rows=rows,
                         chart=png_data_uri(chart) if chart else None)
