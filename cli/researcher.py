"""The researcher's commands: `scifed researcher init`, `catalog ...`, `job ...`,
`model load`."""

from __future__ import annotations

from pathlib import Path

import typer

from cli.common import IdentityOpt, JsonOpt, _client, _init_identity, show
from scifed.console import console, err_console, handle_errors, print_json, print_table
from scifed.errors import UserError
from scifed.states import JobStatus

# ended without a result: failed, or withheld by an officer's output review
UNRELEASED = (JobStatus.FAILED, JobStatus.WITHHELD)

researcher_app = typer.Typer(help="Researcher identity.", no_args_is_help=True)
catalog_app = typer.Typer(help="Search the federated catalog.", no_args_is_help=True)
job_app = typer.Typer(help="Federated jobs (researcher).", no_args_is_help=True)
model_app = typer.Typer(help="Models released by `train` jobs.", no_args_is_help=True)


@researcher_app.command("init")
@handle_errors()
def researcher_init(name: str = typer.Option(...), dir: Path = typer.Option(Path("."), "--dir"),
                    coordinator: str = typer.Option("127.0.0.1:7443"),
                    as_json: bool = JsonOpt) -> None:
    """Make a researcher key pair (kept here) and a CSR for the operator to sign."""
    _init_identity("researcher", name, dir, coordinator, as_json)


# -- catalog ---------------------------------------------------------------------------
@catalog_app.command("search")
@handle_errors("the coordinator")
def catalog_search(query: str = typer.Argument("", help="Free text"),
                   subject: list[str] = typer.Option([], "--subject"),
                   platform: list[str] = typer.Option([], "--platform"),
                   grade: list[str] = typer.Option([], "--grade"),
                   category: list[str] = typer.Option([], "--category"),
                   keyword: list[str] = typer.Option([], "--keyword"),
                   column: list[str] = typer.Option([], "--column"),
                   min_quality: str = typer.Option("", "--min-quality",
                                                   help="A..D: quality grade this good or better"),
                   limit: int = typer.Option(50, "--limit"),
                   identity: Path = IdentityOpt, as_json: bool = JsonOpt) -> None:
    """Search datasets across the federation (metadata only)."""
    with _client(identity) as c:
        df = c.search(query, subjects=subject, platforms=platform, grades=grade,
                      categories=category, keywords=keyword, columns=column, limit=limit,
                      min_quality=min_quality)
    if as_json:
        print_json(df.to_dict(orient="records"))
        return
    print_table(f"{len(df)} datasets", ["id", "title", "platform", "grade", "category", "rows",
                                        "quality"],
                [(r.id, r.title + (" [stub]" if r.stub else ""), r.platform, r.grade,
                  r.category, "" if r.stub else r.rows, r.quality or "")
                 for r in df.itertuples()])


@catalog_app.command("show")
@handle_errors("the coordinator")
def catalog_show(record_id: str, identity: Path = IdentityOpt, as_json: bool = JsonOpt) -> None:
    """One catalog record as published by its node."""
    with _client(identity) as c:
        record = c.record(record_id)
    if as_json:
        print_json(record)
    else:
        from scifed.record_view import print_record

        print_record(record)


@catalog_app.command("export")
@handle_errors("the coordinator")
def catalog_export(record_id: str,
                   fmt: str = typer.Option("dcat", "--format",
                                           help="dcat (Turtle) | dcat-jsonld | croissant"),
                   out: Path | None = typer.Option(None, "--out", help="File; default stdout"),
                   identity: Path = IdentityOpt) -> None:
    """Export a record as DCAT-3 (rdflib) or Croissant JSON-LD (validated by mlcroissant)."""
    import json

    from scifed.exports import to_croissant, to_dcat

    if fmt not in ("dcat", "dcat-jsonld", "croissant"):
        raise UserError(f"--format {fmt}: choose dcat, dcat-jsonld or croissant")
    with _client(identity) as c:
        record = c.record(record_id)
    if fmt == "croissant":
        text = json.dumps(to_croissant(record), indent=2, ensure_ascii=False)
    else:
        text = to_dcat([record], "turtle" if fmt == "dcat" else "json-ld")
    if out:
        out.write_text(text, encoding="utf-8")
        console.print(f"wrote {out}")
    else:
        typer.echo(text)


# -- jobs ------------------------------------------------------------------------------
@job_app.command("submit")
@handle_errors("the coordinator")
def job_submit(spec: Path, identity: Path = IdentityOpt,
               wait: bool = typer.Option(False, "--wait", help="Wait until it finishes"),
               as_json: bool = JsonOpt) -> None:
    """Submit job.yaml; prints the job id (with --json, the job as `job status` shows it)."""
    try:
        text = spec.read_text(encoding="utf-8")
    except OSError as exc:
        raise UserError(f"cannot read {spec}: {exc.strerror}") from None
    with _client(identity) as c:
        job_id = c.submit(text, str(spec))
        info = c.wait(job_id) if wait else (c.job(job_id) if as_json else None)
    if as_json:
        print_json(_job_dict(info))
        if info.status in UNRELEASED:
            raise typer.Exit(1)
        return
    if info is not None and info.status in UNRELEASED:
        raise UserError(f"job {job_id} {info.status}: {info.error}")
    typer.echo(job_id)


@job_app.command("list")
@handle_errors("the coordinator")
def job_list(study: str = typer.Option("", "--study", help="Only this study (name or id)"),
             status: str = typer.Option("", "--status", help="Only jobs in this state: "
                                        + " | ".join(s.value for s in JobStatus)),
             limit: int = typer.Option(50, "--limit", min=1, help="At most this many"),
             identity: Path = IdentityOpt, as_json: bool = JsonOpt) -> None:
    """Your jobs, newest first: id, study, type, status, created."""
    with _client(identity) as c:
        jobs = c.jobs(study=study, status=status, limit=limit)
    rows = [{"job": j.job_id, "study": j.study, "type": j.type, "status": j.status,
             "phase": j.phase, "created": _iso(j.created_unix_ms),
             "updated": _iso(j.updated_unix_ms)} for j in jobs]
    show(rows, as_json, lambda: print_table(
        f"{len(rows)} jobs", ["id", "study", "type", "status", "phase", "created"],
        [(r["job"], r["study"], r["type"], r["status"], r["phase"], r["created"])
         for r in rows]))


def _iso(ms: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds") if ms else ""


def _job_dict(info) -> dict:
    return {"job": info.job_id, "study": info.study, "type": info.type,
            "status": info.status, "phase": info.phase,
            "phase_info": {"name": info.phase_info.name, "round": info.phase_info.round,
                           "rounds": info.phase_info.rounds}, "error": info.error,
            "contributors": list(info.contributors),
            "tasks": [{"node": t.node, "phase": t.phase, "state": t.state,
                       "detail": t.detail} for t in info.tasks]}


def _print_job(info) -> None:
    colour = {"done": "green", "failed": "red", "withheld": "red"}.get(info.status, "yellow")
    console.print(f"job {info.job_id} ({info.type}, study {info.study}): "
                  f"[{colour}]{info.status}[/] {info.phase}")
    if info.error:
        console.print(f"[red]reason:[/] {info.error}", highlight=False)
    if info.tasks:
        print_table("per node", ["node", "phase", "state", "detail"],
                    [(t.node, t.phase, t.state, t.detail) for t in info.tasks])


@job_app.command("status")
@handle_errors("the coordinator")
def job_status(job_id: str, identity: Path = IdentityOpt, as_json: bool = JsonOpt) -> None:
    """Where a job is, node by node."""
    with _client(identity) as c:
        info = c.job(job_id)
    show(_job_dict(info), as_json, lambda: _print_job(info))


@job_app.command("watch")
@handle_errors("the coordinator")
def job_watch(job_id: str, identity: Path = IdentityOpt, as_json: bool = JsonOpt) -> None:
    """Follow a job live until it is done or failed (with --json, no live view: the final
    state, and a training job's per-round metrics, as JSON)."""

    from rich.console import Group
    from rich.live import Live
    from rich.progress import BarColumn, Progress, TextColumn
    from rich.table import Table

    if as_json:
        with _client(identity) as c:
            info = c.wait(job_id, timeout=float("inf"))  # as long as the live view would
            metrics = c.live_metrics(info) if info.progress else []
        print_json({**_job_dict(info), "metrics": metrics})
        if info.status in UNRELEASED:
            raise typer.Exit(1)
        return
    bar = Progress(TextColumn("rounds"), BarColumn(), TextColumn("{task.completed}/{task.total}"))
    rounds, metrics, opened, wait = None, [], 0, 0.0
    with _client(identity) as c, Live(console=console, refresh_per_second=4) as live:
        while True:
            info = c.job(job_id, wait=wait)  # after the first: as soon as the job moves
            table = Table(title=f"job {job_id}: {info.status} {info.phase}",
                          title_justify="left")
            for col in ("node", "phase", "state", "detail"):
                table.add_column(col)
            for t in info.tasks:
                table.add_row(t.node, t.phase, t.state, t.detail)
            phase = info.phase_info
            if phase.name == "round" and phase.rounds:
                if rounds is None:
                    rounds = bar.add_task("rounds", total=phase.rounds)
                bar.update(rounds, completed=phase.round - 1)
            elif rounds is not None and info.status == "done":
                bar.update(rounds, completed=bar.tasks[0].total)
            if len(info.progress) != opened:  # a round's metrics arrived, sealed to us
                metrics, opened = c.live_metrics(info), len(info.progress)
            parts = [bar] if rounds is not None else []
            live.update(Group(*parts, *([_metrics_table(metrics)] if metrics else []), table))
            if JobStatus(info.status).stopped:
                break
            wait = 1.0
    if info.status in UNRELEASED:
        raise UserError(f"job {job_id} {info.status}: {info.error}")


def _metrics_table(metrics: list[dict]):
    """Per-round pooled metrics of a training job, as `job watch` shows them."""
    from rich.table import Table

    names = [k for k in ("train_loss", "val_loss", "val_accuracy", "val_r2")
             if any(k in m for m in metrics)]
    table = Table(title="pooled metrics (validation: the model after that round)",
                  title_justify="left")
    for col in ("round", *names):
        table.add_column(col, justify="right")
    for m in metrics:
        table.add_row(str(m["round"]), *(f"{m[k]:.4f}" if k in m else "" for k in names))
    return table


@job_app.command("resume")
@handle_errors("the coordinator")
def job_resume(job_id: str, identity: Path = IdentityOpt, as_json: bool = JsonOpt) -> None:
    """Continue a training job interrupted by a coordinator restart."""
    with _client(identity) as c:
        info = c.resume(job_id)
    show(_job_dict(info), as_json, lambda: _print_job(info))


@job_app.command("cancel")
@handle_errors("the coordinator")
def job_cancel(job_id: str, identity: Path = IdentityOpt, as_json: bool = JsonOpt) -> None:
    """Stop a job that has not finished (a training job's Flower run is stopped)."""
    with _client(identity) as c:
        info = c.cancel(job_id)
    show(_job_dict(info), as_json, lambda: _print_job(info))


@job_app.command("result")
@handle_errors("the coordinator")
def job_result(job_id: str, identity: Path = IdentityOpt, as_json: bool = JsonOpt,
               out: Path | None = typer.Option(None, "--out",
                                               help="Write CSV tables, PNG plots, report"),
               verify: bool = typer.Option(
                   False, "--verify", help="Only check who released the result and what it "
                   "was computed from; exit 1 if anything does not hold"),
               spec: Path | None = typer.Option(
                   None, "--spec", help="Check the result against this job.yaml (default: "
                   "the copy kept when the job was submitted from this identity)"),
               allow_unsigned: bool = typer.Option(
                   False, "--allow-unsigned", help="Show a result released before results "
                   "were signed, marked unverified (never with --verify)")) -> None:
    """Open the released result (sealed to you), check the release node's signature and
    provenance, and print or save it. A result that fails the check is refused."""
    from coordinator.client import load_spec_file
    from jobs.views import load_result

    own_spec = load_spec_file(spec) if spec else None
    with _client(identity) as c:
        raw, verified = c.open_result(job_id, allow_unsigned=allow_unsigned and not verify,
                                      spec=own_spec)
        revocation = _revocation_checked(c) if verify else ""
    if verify:
        if as_json:
            print_json({"verified": True, "signer": verified.signer,
                        "certificate_serial": verified.serial,
                        "spec_checked": verified.spec_checked,
                        "attested": {n: serial for n, serial in verified.attested},
                        "revocation": revocation,
                        "provenance": verified.provenance})
            return
        console.print(f"[green]verified:[/] {verified.summary()}", highlight=False)
        if revocation:
            console.print(f"revocation: {revocation}", highlight=False)
        _print_provenance(verified)
        return
    if verified is None:
        err_console.print("[bold red]unverified:[/] this result carries no signature "
                          "(released before results were signed): nothing says which node "
                          "released it or what it was computed from", highlight=False)
    if as_json:
        print_json(raw)
        return
    res = load_result(raw)
    if out:
        for p in res.write(out):
            console.print(f"wrote {p}")
        return
    if verified is not None:
        _print_provenance(verified)
    headline = getattr(res, "headline", None)  # a type's own first line (train), else:
    console.print(headline() if headline else
                  f"rows: {res.rows}; contributors: "
                  f"{', '.join(res.meta.get('contributors', []))}; k = {res.meta.get('k')}",
                  highlight=False)
    for name, text in res.meta.get("conventions", {}).items():
        console.print(f"{name.replace('_', ' ')}: {text}", highlight=False)
    for name, df in res.tables().items():
        print_table(name, [str(c) for c in df.columns],
                    df.round(6).astype(object).where(df.notna(), "").values.tolist())


def _revocation_checked(client) -> str:
    """What the release node's certificate was checked against for revocation (the
    client refuses a result whose signer the CRL revokes): the CRL in the identity
    directory, or that there is none."""
    from scifed.pki import load_crl

    identity = getattr(client, "identity", None)
    if identity is None:
        return ""
    crl = identity.path / "crl.pem"
    if not crl.exists():
        return (f"not checked: no crl.pem (a copy of the CA's revocation list) in "
                f"{identity.path}")
    info = load_crl(crl.read_bytes(), identity.tls().ca.read_bytes(), source=str(crl))
    return f"the signer is not revoked by the CA's {info.describe()} ({crl})"


def _dp_text(report: dict | None) -> str:
    if not report:
        return "exact"
    return f"ε = {report.get('epsilon')}, δ = {report.get('delta', 0)}"


def _print_provenance(verified) -> None:
    """The signed provenance of a result, as `scifed job result` shows it."""
    p = verified.provenance
    pol, rules, head = p.get("policy", {}), p.get("rules", {}), p.get("audit_head", {})
    dp = p.get("dp") or {}
    spec = p["spec_sha256"][:16] + ("… (matches your job spec)" if verified.spec_checked
                                    else "… (not checked: no copy of your job spec)")
    rows = [
        ("signed by", f"node {verified.signer} (certificate serial {verified.serial})"),
        ("job", f"{p['job_id']} ({p.get('job_type', '')}), released {p.get('released_at')}"),
        ("spec sha256", spec),
        ("study", f"{p.get('study_id')} (key v{p.get('key_version')})"),
        ("contributors", ", ".join(p["contributors"])),
        (f"policy cell at {pol.get('node', verified.signer)}",
         f"{pol.get('grade')}/{pol.get('category')}: k ≥ {pol.get('min_cell_count')}, "
         f"≥ {pol.get('min_contributors')} contributors, DP "
         f"{'required' if pol.get('dp_required') else 'not required'}"
         f" (decided by: {pol.get('decision')})"),
        ("rules applied", f"k = {rules.get('k')}, min contributors "
                          f"{rules.get('min_contributors')}, {rules.get('release')}"),
        *((f"DP at {node}", _dp_text(dp.get(node))) for node in p["contributors"]),
        (f"audit head of {head.get('node')} at release",
         f"#{head.get('seq')} {str(head.get('hash', ''))[:16]}…"),
        ("contributions", f"attested by each contributor ({len(verified.attested)} "
                          "signatures of node certificates checked)" if verified.attested
         else "not attested: " + p.get("unattested", "released before contributions "
                                                      "were attested")),
    ]
    print_table("provenance (signed by the release node)", ["", "value"], rows)
    datasets = p.get("datasets", {})
    print_table("datasets", ["node", "dataset", "sha256", "version", "vouched for by"],
                [(node, d.get("dataset", ""), (d["sha256"][:16] + "…") if d.get("sha256")
                  else "", d.get("version", ""), d.get("source", ""))
                 for node, d in sorted(datasets.items())])
    if verified.attested:
        heads = p.get("audit_heads", {})
        print_table("contributions (each attested by its node, signature checked)",
                    ["node", "schema hash", "audit head", "DP"],
                    [(node, str(datasets.get(node, {}).get("schema_hash", ""))[:12] + "…",
                      f"#{heads.get(node, {}).get('seq')} "
                      f"{str(heads.get(node, {}).get('hash', ''))[:12]}…",
                      _dp_text(dp.get(node))) for node, _ in verified.attested])


@model_app.command("load")
@handle_errors()
def model_load(path: Path, as_json: bool = JsonOpt) -> None:
    """Open a model file from `scifed job result --out` and describe it."""
    from jobs.train.models import load_model_file

    model, info = load_model_file(path)
    data = {"path": str(path), "kind": info.get("kind"), "hidden": info.get("hidden"),
            "task": info.get("task"), "features": list(info.get("features", [])),
            "label": info.get("label"), "classes": info.get("classes"),
            "round": info.get("round"), "selected_by": info.get("selected_by"),
            "parameters": sum(p.numel() for p in model.parameters()),
            "module": str(model).replace("\n", " ")}
    show(data, as_json, lambda: print_table(f"model {path}", ["field", "value"], [
        (k, ", ".join(map(str, v)) if isinstance(v, list) else v)
        for k, v in data.items() if k != "path"]))
