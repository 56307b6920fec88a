"""The quality scorecard of a dataset: run it (with an officer's overrides, each with
its justification) and read the report with its plots.

Scoring takes from seconds (fast mode) to minutes, so it runs on a thread while the page
shows the node's progress messages (htmx polls every 2 s); the finished report is kept in
the session (server-side), and the page shows it until the next run.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from urllib.parse import quote

import grpc
from fastapi import Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from node.console import charts
from node.console.pages import refusal
from protos.scifed.v1 import node_admin_pb2 as pb
from scifed.errors import UserError
from scifed.web.app import png_data_uri
from scifed.web.sessions import Session

RUNS = "quality_runs"  # session secret: dataset id -> Run


@dataclass
class Run:
    step: str = "starting"
    report: dict | None = None
    problem: str | None = None
    done: threading.Event = field(default_factory=threading.Event)


def _score(stub, request: pb.QualityRequest, run: Run) -> None:
    try:
        for msg in stub.DatasetQuality(request, timeout=1800):
            if msg.report_json:
                run.report = json.loads(msg.report_json)
            else:
                run.step = msg.step
    except grpc.RpcError as exc:
        try:
            run.problem = refusal(exc)
        except grpc.RpcError:
            run.problem = exc.details() or str(exc.code())
    finally:
        run.done.set()


def install(nc) -> None:
    app, user = nc.app, nc.console.user

    def page(request: Request, s: Session, dataset_id: str):
        r = nc.admin(s).GetDataset(pb.DatasetRef(dataset_id=dataset_id), timeout=30)
        run = s.secrets.get(RUNS, {}).get(dataset_id)
        report = run.report if run and run.done.is_set() else None
        plots = [png_data_uri(charts.dimensions(report)),
                 png_data_uri(charts.metric_status(report))] if report else []
        return nc.render(request, "quality.html", summary=r.summary,
                         record=json.loads(r.record_json), run=run, report=report,
                         plots=plots, problem=run.problem if run else None)

    @app.get("/datasets/{dataset_id}/quality", response_class=HTMLResponse)
    def quality(request: Request, dataset_id: str, s: Session = Depends(user)):
        return page(request, s, dataset_id)

    @app.post("/datasets/{dataset_id}/quality", response_class=HTMLResponse)
    def score(request: Request, dataset_id: str, s: Session = Depends(user),
              fast: str = Form(""), metric: str = Form(""), justification: str = Form("")):
        if metric.strip() and not justification.strip():
            raise UserError(nc.t(request)("q.need_justification", metric=metric.strip()))
        here = RedirectResponse(f"/datasets/{quote(dataset_id)}/quality", status_code=303)
        runs = s.secrets.setdefault(RUNS, {})
        if dataset_id in runs and not runs[dataset_id].done.is_set():
            return here  # one run at a time
        overrides = ([pb.QualityOverride(metric=metric.strip(),
                                         justification=justification.strip())]
                     if metric.strip() else [])
        run = runs[dataset_id] = Run()
        threading.Thread(target=_score, daemon=True, name="scifed-console-quality", args=(
            nc.admin(s), pb.QualityRequest(dataset_id=dataset_id, fast=bool(fast),
                                           overrides=overrides), run)).start()
        return here

    @app.get("/datasets/{dataset_id}/quality/progress", response_class=HTMLResponse)
    def progress(request: Request, dataset_id: str, s: Session = Depends(user)):
        run = s.secrets.get(RUNS, {}).get(dataset_id)
        if run is None or run.done.is_set():  # the whole page again, with the report
            return Response(headers={"HX-Redirect": f"/datasets/{quote(dataset_id)}/quality"})
        return nc.console.templates.TemplateResponse(
            request, "_quality_progress.html",
            {"t": nc.t(request), "run": run, "summary": {"dataset_id": dataset_id}})
