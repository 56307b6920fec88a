"""The researcher console's pages (``scifed ui``), on the shared shell (scifed.web).

Every page is a call of the researcher client the CLI uses (:class:`coordinator.client.
Client`, over mTLS with the identity directory) and a template: the catalog
(SearchCatalog), a dataset (GetRecord, its DCAT and Croissant exports), the job form
(validated as `scifed job submit` validates, then SubmitJob), the researcher's jobs
(ListJobs), one job's live progress (GetJob, polled by htmx) and its result (GetResult,
opened and verified here)."""

from __future__ import annotations

from pathlib import Path

import grpc
from fastapi import Depends, Form, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response

import cli.ui.messages  # noqa: F401 - registers the console's interface text
from cli.researcher import ROUND_METRICS
from cli.ui import catalog, field_help, form
from cli.ui.access import Downloads, service_query
from cli.ui.messages import phase_note, phase_text
from cli.ui.results import Results
from coordinator import access_client as ac
from coordinator.client import Client
from jobs import registry
from scifed import sentences
from scifed.errors import UserError
from scifed.exports.formats import FORMATS, export_format, export_record
from scifed.grading import Access
from scifed.record_view import value_text
from scifed.rpc import rpc_error_message
from scifed.states import JobStatus
from scifed.web.app import Console, png_data_uri

NAV = [("/", "ui.nav.catalog"), ("/submit", "ui.nav.submit"), ("/jobs", "ui.nav.jobs"),
       ("/access", "ui.nav.access")]
# how a researcher may ask for a dataset (the record's delivery methods that deliver)
REQUESTABLE = ("download", "in_node_service")
ROLE = "researcher"
ACCESS_KEYS = {Access.AUTO: "ui.access.A", Access.APPROVAL: "ui.access.R"}


def stopped(status: str) -> bool:
    """Nothing more will happen to the job without the researcher (a state this console
    does not know, such as one a newer coordinator adds, is still going on)."""
    try:
        return JobStatus(status).stopped
    except ValueError:
        return False


def iso(ms: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S") if ms else ""


def localized(value, lang: str) -> str:
    """A record value as text in the page's language: a bilingual string in ``lang``
    (the other language where it has none), anything else as `catalog show` prints it."""
    if isinstance(value, dict) and value and set(value) <= {"zh", "en"}:
        return value.get(lang) or next(v for v in value.values() if v)
    return value_text(value)


def build(identity: Path, *, https: bool = False,
          downloads: Path | None = None) -> tuple[Console, Client]:
    """The console for the researcher of ``identity``; the client is the caller's to
    close. Granted datasets are downloaded into ``downloads`` (default: ``downloads/``
    in the identity directory)."""
    client = Client(identity)
    name = client.identity.cfg.name
    if client.identity.cfg.role != ROLE:
        client.close()
        raise UserError(f"{identity} holds a {client.identity.cfg.role} identity; `scifed ui` "
                        "is the researcher's console (make one with `scifed researcher init`)")
    c = Console(title_key="ui.title", nav=NAV, packages=["cli.ui"], https=https)
    c.enable_token_login(name, ROLE)
    results = Results(client)
    deliveries = Downloads(client, downloads or Path(identity) / "downloads")
    user = Depends(c.user)

    def page(request: Request, template: str, **ctx) -> HTMLResponse:
        return c.render(request, template, phase_text=phase_text,
                        phase_note=phase_note, **ctx)

    # -- catalog ------------------------------------------------------------------------
    @c.app.get("/", response_class=HTMLResponse)
    def catalog_page(request: Request, s=user, q: str = "",
                     grade: list[str] = Query([]), category: list[str] = Query([]),
                     node: list[str] = Query([]), quality: list[str] = Query([]),
                     job_type: list[str] = Query([]), keyword: str = ""):
        sel = catalog.Selection(q.strip(), grade, category, node, quality, job_type,
                                keyword.strip())
        hits, facets = catalog.search(client, sel)
        return page(request, "catalog.html", sel=sel, hits=hits, facets=facets)

    # -- one dataset -------------------------------------------------------------------
    @c.app.get("/dataset", response_class=HTMLResponse)
    def dataset_page(request: Request, id: str, s=user):
        record = client.record(id)
        grade, cat = record.get("security_grade", ""), record.get("sharing_category", "")
        lang = c.language(request)
        return page(request, "dataset.html", record=record, rid=id, formats=FORMATS,
                    job_types=catalog.admitted(grade, cat), access_keys=ACCESS_KEYS,
                    text=lambda v: localized(v, lang))

    @c.app.get("/dataset/export")
    def dataset_export(id: str, format: str, s=user):
        fmt = export_format(format)
        body = export_record(client.record(id), fmt.name)
        slug = id.rsplit(":", 1)[-1] or "dataset"
        return Response(body, media_type=fmt.media_type, headers={
            "Content-Disposition": f'attachment; filename="{slug}.{fmt.suffix}"'})

    # -- the job form ------------------------------------------------------------------
    def form_context(f: form.JobForm, problems: dict[str, list[str]], *,
                     fields_shown: bool = True) -> dict:
        """What the form's templates need. ``slots``: where problems may be shown; a
        page whose type fields are not (yet) those of the type gets those problems with
        the job's own."""
        fields = form.type_fields(f.type)
        if not fields_shown:
            problems = form.without_fields(problems)
        return {"f": f, "fields": fields, "advanced_only": form.advanced_only(f.type),
                "problems": problems, "help_text": field_help.help_text,
                "slots": [*form.ENVELOPE, form.ADVANCED, form.GENERAL,
                          *(x.input_name for x in fields if fields_shown)]}

    def form_page(request: Request, f: form.JobForm, *, problems: dict | None = None,
                  status: int = 200) -> HTMLResponse:
        studies = client.studies()
        return page(request, "submit.html", status=status, studies=studies,
                    types=registry.names(), **form_context(f, problems or {}))

    @c.app.get("/submit", response_class=HTMLResponse)
    def submit_page(request: Request, s=user, dataset: str = "", study: str = "",
                    type: str = ""):
        chosen = [dataset] if dataset else []  # from a dataset page: its catalog id
        return form_page(request, form.JobForm(study=study, type=type, datasets=chosen))

    @c.app.get("/submit/fields", response_class=HTMLResponse)
    def submit_fields(request: Request, s=user, type: str = ""):
        """The chosen job type's fields (htmx swaps them in when the type changes)."""
        return page(request, "form_fields.html", **form_context(form.JobForm(type=type), {}))

    async def posted(request: Request) -> form.JobForm:
        """The job form as posted (by the form, or by htmx as it is typed). The type's
        fields are read only when the page showed that type's fields, so a checkbox
        absent because its field was never on the page is not taken as unticked."""
        data = await request.form()
        job_type = str(data.get("type", "")).strip()
        shown = data.get("fields_of") == job_type
        values = {x.name: [str(v) for v in data.getlist(x.input_name)]
                  for x in form.type_fields(job_type)} if shown else {}
        return form.JobForm(str(data.get("study", "")).strip(), job_type,
                            [str(v) for v in data.getlist("datasets")],
                            str(data.get("filter", "")), str(data.get("params", "")), values,
                            shown)

    @c.app.post("/submit/check", response_class=HTMLResponse)
    def submit_check(request: Request, s=user, f: form.JobForm = Depends(posted)):
        """Every problem of the form as the researcher types (htmx): each under its field
        (out-of-band swaps), or the job.yaml once it is valid."""
        try:
            text, problems = form.checked(f), {}
        except form.FormProblems as exc:
            text, problems = None, exc.by_slot
        return page(request, "form_check.html", text=text,
                    **form_context(f, problems, fields_shown=f.shown))

    @c.app.post("/submit", response_class=HTMLResponse)
    def submit(request: Request, s=user, f: form.JobForm = Depends(posted)):
        try:
            text = form.checked(f)
            job_id = client.submit(text, form.SOURCE)
        except form.FormProblems as exc:  # nothing is sent: every problem on the form
            return form_page(request, f, problems=exc.by_slot, status=400)
        except UserError as exc:
            return form_page(request, f, problems={form.GENERAL: [str(exc)]}, status=400)
        except grpc.RpcError as exc:  # the coordinator's refusal, shown on the form
            return form_page(request, f, problems={form.GENERAL: [
                rpc_error_message(exc, "the coordinator")]}, status=400)
        return RedirectResponse(f"/jobs/{job_id}", status_code=303)

    # -- jobs --------------------------------------------------------------------------
    @c.app.get("/jobs", response_class=HTMLResponse)
    def jobs_page(request: Request, s=user, status: str = ""):
        jobs = client.jobs(status=status, limit=200)
        return page(request, "jobs.html", jobs=jobs, chosen=status,
                    statuses=[x.value for x in JobStatus], iso=iso)

    def job_context(job_id: str) -> dict:
        info = client.job(job_id)
        metrics = client.live_metrics(info) if info.progress else []
        names = [k for k in ROUND_METRICS if any(k in m for m in metrics)]
        return {"info": info, "done": stopped(info.status), "metrics": metrics,
                "metric_names": names, "iso": iso}

    @c.app.get("/jobs/{job_id}", response_class=HTMLResponse)
    def job_page(request: Request, job_id: str, s=user):
        return page(request, "job.html", **job_context(job_id))

    @c.app.get("/jobs/{job_id}/progress", response_class=HTMLResponse)
    def job_progress(request: Request, job_id: str, s=user):
        return page(request, "job_progress.html", **job_context(job_id))

    # -- results -----------------------------------------------------------------------
    @c.app.get("/jobs/{job_id}/result", response_class=HTMLResponse)
    def result_page(request: Request, job_id: str, s=user):
        opened = results.get(job_id)
        plots = {name: png_data_uri(data) for name, data in opened.plots().items()}
        return page(request, "result.html", r=opened, plots=plots,
                    files=list(opened.files()))

    @c.app.get("/jobs/{job_id}/files/{name}")
    def result_file(job_id: str, name: str, s=user):
        opened = results.get(job_id)
        if name == f"{job_id}.zip":
            media, body = "application/zip", opened.zip()
        else:
            try:
                media, body = opened.files()[name]
            except KeyError:
                raise UserError(f"job {job_id}: the result has no file {name!r}") from None
        return Response(body, media_type=media, headers={
            "Content-Disposition": f'attachment; filename="{name}"'})

    # -- delivery: access requests, grants, downloads -------------------------------------
    def request_page(request: Request, rid: str, *, problem: str | None = None,
                     status: int = 200, **kept) -> HTMLResponse:
        record = client.record(rid)
        methods = [m for m in record.get("delivery_methods", []) if m in REQUESTABLE]
        return page(request, "access_request.html", status=status, problem=problem,
                    record=record, rid=rid, methods=methods, terms=ac.conditions(record),
                    studies=client.studies(), kept=kept,
                    text=lambda v: localized(v, c.language(request)))

    @c.app.get("/access/request", response_class=HTMLResponse)
    def access_request_page(request: Request, id: str, s=user):
        return request_page(request, id)

    @c.app.post("/access/request", response_class=HTMLResponse)
    def access_request(request: Request, s=user, id: str = Form(...),
                       method: str = Form("download"), purpose: str = Form(""),
                       columns: list[str] = Form([]), format: str = Form("parquet"),
                       study: str = Form(""), accept: list[str] = Form([])):
        kept = {"method": method, "purpose": purpose, "columns": columns, "format": format,
                "study": study, "accept": accept}
        try:
            if not purpose.strip():
                raise UserError(sentences.say("access.purpose"))
            accepted = ac.require_accepted(client.record(id), accept)
            grant = ac.request_access(client, id, method=method, purpose=purpose.strip(),
                                      accept=accepted, columns=columns, fmt=format,
                                      study=study)
        except UserError as exc:
            return request_page(request, id, problem=sentences.of_error(exc), status=400,
                                **kept)
        except grpc.RpcError as exc:
            return request_page(request, id, problem=rpc_error_message(
                exc, "the coordinator"), status=400, **kept)
        return RedirectResponse(f"/access?new={grant.grant_id}", status_code=303)

    @c.app.get("/access", response_class=HTMLResponse)
    def access_page(request: Request, s=user, new: str = ""):
        grants, unreached = ac.list_access(client)
        return page(request, "access_list.html", grants=grants, unreached=unreached,
                    new=new, when=iso)

    @c.app.post("/access/{grant_id}/download")
    def access_download(grant_id: str, s=user):
        deliveries.start(grant_id)
        return RedirectResponse(f"/access/{grant_id}/download", status_code=303)

    @c.app.get("/access/{grant_id}/download", response_class=HTMLResponse)
    def access_download_page(request: Request, grant_id: str, s=user):
        return page(request, "access_download.html", d=deliveries.get(grant_id),
                    grant_id=grant_id)

    @c.app.get("/access/{grant_id}/download/progress", response_class=HTMLResponse)
    def access_download_progress(request: Request, grant_id: str, s=user):
        return page(request, "access_progress.html", d=deliveries.get(grant_id),
                    grant_id=grant_id)

    # -- queries inside the node, under an in_node_service grant --------------------------
    def query_page(request: Request, grant_id: str, *, sql: str = "", answer=None,
                   refusal: str | None = None, status: int = 200) -> HTMLResponse:
        grant = ac.find_grant(client, grant_id)
        return page(request, "access_query.html", status=status, grant=grant, sql=sql,
                    answer=answer, refusal=refusal, when=iso)

    @c.app.get("/access/{grant_id}/query", response_class=HTMLResponse)
    def access_query_page(request: Request, grant_id: str, s=user):
        return query_page(request, grant_id)

    @c.app.post("/access/{grant_id}/query", response_class=HTMLResponse)
    def access_query(request: Request, grant_id: str, s=user, sql: str = Form("")):
        """Run the query; a refusal (SQL the node does not accept, a revoked or expired
        grant) is shown in the node's words with the query kept to edit."""
        try:
            if not sql.strip():
                raise UserError("write one SELECT over table data")
            answer = service_query(client, grant_id, sql)
        except UserError as exc:
            # the node's sentence itself where it came with its key (shown in the page's
            # language), else its text
            return query_page(request, grant_id, sql=sql, refusal=sentences.of_error(exc),
                              status=400)
        except grpc.RpcError as exc:
            return query_page(request, grant_id, sql=sql, status=400,
                              refusal=rpc_error_message(exc, "the coordinator"))
        return query_page(request, grant_id, sql=sql, answer=answer)

    @c.app.get("/access/{grant_id}/file")
    def access_file(grant_id: str, s=user):
        d = deliveries.get(grant_id)
        if d is None or not d.sha256:
            raise UserError(f"grant {grant_id}: no verified download here yet")
        return FileResponse(d.path, filename=d.path.name)

    return c, client
