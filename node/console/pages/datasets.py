"""Datasets: the list, registration from a form (every problem the node finds, at
once), and a dataset's profile (its scorecard: ``quality.py``)."""

from __future__ import annotations

import json
from urllib.parse import quote

import grpc
import yaml
from fastapi import Depends, Form, Request, UploadFile
from fastapi.responses import HTMLResponse, RedirectResponse

from node.console.pages import problem_list, refusal
from protos.scifed.v1 import node_admin_pb2 as pb
from scifed.errors import UserError
from scifed.web.sessions import Session

GRADES = ("G1", "G2", "G3", "G4", "G5", "G6")
CATEGORIES = ("OPEN", "CONDITIONAL", "CLOSED")
FORM_FIELDS = ("path", "slug", "title_en", "title_zh", "description_en", "description_zh",
               "keywords", "license", "version", "security_grade", "sharing_category",
               "contact_email", "officer_email", "meta_yaml")


def metadata_yaml(base_text: str, form: dict[str, str]) -> str:
    """The metadata YAML the node validates: the officer's YAML (typed or uploaded), with
    each field filled in on the form put over it. Only the YAML's shape is checked here;
    the node checks everything else, all at once."""
    try:
        meta = yaml.safe_load(base_text) if base_text.strip() else {}
    except yaml.YAMLError as exc:
        raise UserError(f"the metadata YAML does not parse: {exc}") from None
    if not isinstance(meta, dict):
        raise UserError("the metadata YAML must be a mapping of fields (title:, license:, …)")
    for lang in ("en", "zh"):
        for name in ("title", "description"):
            value = form.get(f"{name}_{lang}", "").strip()
            if value:
                meta[name] = {**(meta.get(name) or {}), lang: value}
    if form.get("keywords", "").strip():
        meta["keywords"] = [k.strip() for k in form["keywords"].split(",") if k.strip()]
    for name in ("license", "version", "security_grade", "sharing_category"):
        if form.get(name, "").strip():
            meta[name] = form[name].strip()
    for field, person in (("contact_email", "contact_point"), ("officer_email", "data_officer")):
        if form.get(field, "").strip():
            meta[person] = {**(meta.get(person) or {}), "email": form[field].strip()}
    return yaml.safe_dump(meta, allow_unicode=True, sort_keys=False)


def install(nc) -> None:
    app, user = nc.app, nc.console.user

    @app.get("/datasets", response_class=HTMLResponse)
    def datasets(request: Request, s: Session = Depends(user), registered: str = ""):
        admin = nc.admin(s)
        status = admin.Status(pb.StatusRequest(), timeout=10)
        rows = admin.ListDatasets(pb.ListDatasetsRequest(), timeout=30).datasets
        notice = nc.t(request)("ds.registered", id=registered) if registered else None
        return nc.render(request, "datasets.html", node_status=status, datasets=rows,
                         notice=notice)

    def form_page(request: Request, values: dict, problems: list[str] | None = None,
                  status: int = 200):
        return nc.console.render(request, "dataset_new.html", status=status, values=values,
                                 problems=problems or [], grades=GRADES,
                                 categories=CATEGORIES)

    @app.get("/datasets/new", response_class=HTMLResponse)
    def new_dataset(request: Request, s: Session = Depends(user)):
        return form_page(request, dict.fromkeys(FORM_FIELDS, ""))

    @app.post("/datasets/new", response_class=HTMLResponse)
    async def register(request: Request, s: Session = Depends(user),
                       meta_file: UploadFile | None = None,
                       accept_violations: str = Form("")):
        form = await request.form()
        values = {k: str(form.get(k) or "") for k in FORM_FIELDS}
        base = values["meta_yaml"]
        if meta_file is not None and meta_file.filename:
            base = (await meta_file.read()).decode("utf-8", errors="replace")
            values["meta_yaml"] = base
        if not values["path"].strip():
            return form_page(request, values, ["the data file: give its name in the node's "
                                               "data directory"], 400)
        try:
            meta = metadata_yaml(base, values)
        except UserError as exc:
            return form_page(request, values, [str(exc)], 400)
        from starlette.concurrency import run_in_threadpool

        req = pb.AddDatasetRequest(path=values["path"].strip(), meta_yaml=meta,
                                   meta_name="the metadata form",
                                   dataset_id=values["slug"].strip(),
                                   accept_violations=bool(accept_violations))
        try:
            r = await run_in_threadpool(nc.admin(s).AddDataset, req, timeout=120)
        except grpc.RpcError as exc:
            return form_page(request, values, problem_list(refusal(exc)), 400)
        return RedirectResponse(f"/datasets?registered={quote(r.summary.dataset_id)}",
                                status_code=303)

    @app.get("/datasets/{dataset_id}", response_class=HTMLResponse)
    def dataset(request: Request, dataset_id: str, s: Session = Depends(user)):
        r = nc.admin(s).GetDataset(pb.DatasetRef(dataset_id=dataset_id), timeout=30)
        return nc.render(request, "dataset.html", summary=r.summary,
                         record=json.loads(r.record_json))
