"""The operator's commands: `scifed coordinator init|serve|audit verify`, `operator init`,
`nodes list`, `study create|add-researcher|list|show`."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from cli.common import (
    FLOWER_PORT,
    CaDir,
    IdentityOpt,
    JsonOpt,
    _client,
    _init_identity,
    message_dict,
    show,
)
from scifed.config import CoordinatorConfig, TlsConfig, load_config, write_config
from scifed.console import console, handle_errors, print_json, print_table
from scifed.errors import UserError

coordinator_app = typer.Typer(help="Run the coordinator (operator).", no_args_is_help=True)
operator_app = typer.Typer(help="Operator identity.", no_args_is_help=True)
nodes_app = typer.Typer(help="The node registry (operator).", no_args_is_help=True)
study_app = typer.Typer(help="Joint studies (operator creates; researchers list).",
                        no_args_is_help=True)
coordinator_audit_app = typer.Typer(help="The coordinator's own tamper-evident audit chain.",
                                    no_args_is_help=True)
coordinator_app.add_typer(coordinator_audit_app, name="audit")
CoordinatorConfigOpt = typer.Option(Path("coordinator.yaml"), "--config", "-c",
                                    envvar="SCIFED_COORDINATOR_CONFIG")


# -- coordinator -----------------------------------------------------------------------
@coordinator_app.command("init")
@handle_errors()
def coordinator_init(dir: Path = typer.Option(Path("."), "--dir"), ca_dir: Path = CaDir,
                     listen: str = typer.Option("127.0.0.1:7443", "--listen"),
                     flower_port: int = typer.Option(
                         FLOWER_PORT, "--flower-port", min=0, max=65535,
                         help="Loopback port of the Flower SuperLink for `train` jobs "
                         "(nodes' --flower-superlink points at it); 0: no training"),
                     as_json: bool = JsonOpt) -> None:
    """Write coordinator.yaml pointing at the CA's coordinator certificate."""
    target = dir / "coordinator.yaml"
    if target.exists():
        raise UserError(f"{target} already exists")
    dir.mkdir(parents=True, exist_ok=True)
    ca = ca_dir.resolve()
    write_config(target, CoordinatorConfig(
        listen=listen, state_dir=dir.resolve() / "state", flower_port=flower_port or None,
        tls=TlsConfig(ca=ca / "ca.crt", cert=ca / "coordinator.crt",
                      key=ca / "coordinator.key", crl=ca / "crl.pem")))
    show({"config": str(target), "listen": listen, "flower_port": flower_port or None},
         as_json, f"wrote {target}" + (f" (Flower SuperLink for training on port {flower_port})"
                                      if flower_port else " (no training: flower_port unset)"))


@coordinator_app.command("serve")
@handle_errors()
def coordinator_serve(config: Path = typer.Option(Path("coordinator.yaml"), "--config", "-c",
                                                  envvar="SCIFED_COORDINATOR_CONFIG"),
                      log_level: str = typer.Option("INFO")) -> None:
    """Run the coordinator."""
    from coordinator.server import serve

    logging.basicConfig(level=log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    serve(load_config(config, CoordinatorConfig))


@coordinator_audit_app.command("verify")
@handle_errors("the coordinator")
def coordinator_audit_verify(config: Path = CoordinatorConfigOpt,
                             as_json: bool = JsonOpt) -> None:
    """Recompute the coordinator's chain (studies, key versions, job submissions and
    ends) from its database and check those tables against it; exit 1 if tampered."""
    from coordinator import audit
    from coordinator.db import Database

    db = Database(load_config(config, CoordinatorConfig).database_url)
    try:
        v = audit.verify(db)
    finally:
        db.close()
    if as_json:
        print_json({"ok": v.ok, "entries": v.entries, "head_seq": v.head_seq,
                    "head_hash": v.head_hash, "problem": v.problem})
        if not v.ok:
            raise typer.Exit(1)
        return
    if not v.ok:
        raise UserError(f"coordinator audit chain tampered: {v.problem}")
    console.print(f"[green]coordinator audit chain intact[/]: {v.entries} entries, head "
                  f"{v.head_seq} {v.head_hash[:16]}")


@operator_app.command("init")
@handle_errors()
def operator_init(name: str = typer.Option(...), dir: Path = typer.Option(Path("."), "--dir"),
                  coordinator: str = typer.Option("127.0.0.1:7443"),
                  as_json: bool = JsonOpt) -> None:
    """Make an operator key pair (kept here) and a CSR for the CA to sign."""
    _init_identity("operator", name, dir, coordinator, as_json)


# -- registry --------------------------------------------------------------------------
@nodes_app.command("list")
@handle_errors("the coordinator")
def nodes_list(identity: Path = IdentityOpt, as_json: bool = JsonOpt) -> None:
    """Every enrolled node: online or not, last seen, version, latest audit head.

    The audit head is the newest position of the node's audit chain the coordinator
    recorded; its age is how long ago that head moved."""
    from cli import operator_views as views

    with _client(identity) as c:
        rows = views.nodes(c)
    show([views.as_dict(r) for r in rows], as_json, lambda: print_table(
        "nodes", ["name", "platform", "status", "last seen", "datasets", "version",
                  "audit head", "head age"],
        [(r.name, r.platform, "[green]online[/]" if r.online else "[red]offline[/]",
          r.last_seen, r.datasets, r.version,
          "" if r.audit_seq is None else f"{r.audit_seq} {r.audit_hash[:12]}",
          views.age_text(r.audit_head_age_s)) for r in rows]))


# -- studies ---------------------------------------------------------------------------
def _show_study(st, as_json: bool) -> None:
    show(message_dict(st), as_json, lambda: _print_study(st))


def _print_study(st) -> None:
    print_table(f"study {st.name} ({st.study_id})", ["field", "value"], [
        ("purpose", st.purpose), ("status", st.status), ("min nodes", st.min_nodes),
        ("key version", st.key_version), ("lead node", st.lead_node),
        ("researchers", ", ".join(st.researchers)),
        *[(f"node {m.node}", f"{m.state} {', '.join(m.datasets)}") for m in st.members]])


@study_app.command("create")
@handle_errors("the coordinator")
def study_create(name: str, purpose: str = typer.Option(..., "--purpose"),
                 nodes: str = typer.Option(..., "--nodes", help="Comma-separated node names"),
                 min_nodes: int = typer.Option(0, "--min-nodes",
                                               help="Default: every invited node"),
                 identity: Path = IdentityOpt, as_json: bool = JsonOpt) -> None:
    """Invite nodes to a joint study; it activates once enough of them accept."""
    with _client(identity) as c:
        st = c.create_study(name, purpose, [n.strip() for n in nodes.split(",")], min_nodes)
    _show_study(st, as_json)


@study_app.command("add-researcher")
@handle_errors("the coordinator")
def study_add_researcher(study: str, researcher: str, identity: Path = IdentityOpt,
                         as_json: bool = JsonOpt) -> None:
    """Let a researcher (by certificate name) submit jobs in the study."""
    with _client(identity) as c:
        st = c.add_researcher(study, researcher)
    show(message_dict(st), as_json, f"study {st.name}: researchers {', '.join(st.researchers)}")


@study_app.command("list")
@handle_errors("the coordinator")
def study_list(identity: Path = IdentityOpt, as_json: bool = JsonOpt) -> None:
    """Studies (operators: all; researchers: their own)."""
    from cli import operator_views as views

    with _client(identity) as c:
        sts = c.studies()
    if as_json:
        print_json([message_dict(s) for s in sts])
        return
    rows = views.study_rows(sts)
    print_table("studies", ["id", "name", "status", "accepted/min", "key", "researchers"],
                [(s.study_id, s.name, s.status, f"{s.accepted}/{s.min_nodes}",
                  s.key_version, ", ".join(s.researchers)) for s in rows])


@study_app.command("show")
@handle_errors("the coordinator")
def study_show(study: str, identity: Path = IdentityOpt, as_json: bool = JsonOpt) -> None:
    """One study: members, their answers and datasets, key version."""
    with _client(identity) as c:
        _show_study(c.study(study), as_json)


# -- the operator's view of jobs and revocations, and the console ---------------------
@operator_app.command("jobs")
@handle_errors("the coordinator")
def operator_jobs(study: str = typer.Option("", "--study", help="Only this study (name or id)"),
                  status: str = typer.Option("", "--status", help="Only jobs in this state"),
                  limit: int = typer.Option(50, "--limit", min=1, help="At most this many"),
                  identity: Path = IdentityOpt, as_json: bool = JsonOpt) -> None:
    """Every researcher's jobs, newest first: their states (never their results)."""
    from cli import operator_views as views

    with _client(identity) as c:
        rows = views.jobs(c, study=study, status=status, limit=limit)
    show([views.as_dict(r) for r in rows], as_json, lambda: print_table(
        f"{len(rows)} jobs", ["id", "study", "researcher", "type", "status", "phase",
                              "created"],
        [(r.job, r.study, r.researcher, r.type, r.status, r.phase, r.created)
         for r in rows]))


@operator_app.command("revocations")
@handle_errors("the coordinator")
def operator_revocations(identity: Path = IdentityOpt, as_json: bool = JsonOpt) -> None:
    """The CA's revocation list the coordinator enforces, named where it can."""
    from cli import operator_views as views

    with _client(identity) as c:
        rev = views.revocations(c)
    show(views.as_dict(rev), as_json, lambda: _print_revocations(rev))


def _print_revocations(rev) -> None:
    if not rev.has_crl:
        console.print("the coordinator holds no CRL: it revokes nothing")
        return
    print_table(f"CRL number {rev.crl_number}, signed {rev.signed}",
                ["serial", "name", "role", "revoked"],
                [(r["serial"], r["name"] or "(not seen)", r["role"], r["revoked"])
                 for r in rev.revoked])


@operator_app.command("console")
@handle_errors("the coordinator")
def operator_console(identity: Path = IdentityOpt,
                     host: str = typer.Option("127.0.0.1", "--host"),
                     port: int = typer.Option(8470, "--port", min=0, max=65535),
                     tls_cert: Path | None = typer.Option(None, "--tls-cert"),
                     tls_key: Path | None = typer.Option(None, "--tls-key"),
                     refresh: float = typer.Option(2.0, "--refresh", min=0.5, max=60,
                                                   help="Seconds between live updates"),
                     as_json: bool = JsonOpt) -> None:
    """The operator's web console: nodes, studies, jobs, revocations, live.

    It runs on this host with the operator's identity directory; open the one-time
    address it prints."""
    from cli.opconsole.app import build
    from scifed.web import serve

    tls = serve.tls_files(host, tls_cert, tls_key)
    console_app = build(identity, refresh_s=refresh, https=tls is not None)

    def announce(url: str) -> None:
        login = f"{url}/login?token={console_app.sessions.login_token()}"
        show({"url": url, "login": login}, as_json,
             f"operator console at {url}\nopen {login} to log in (once); Ctrl-C stops it")

    serve.run(console_app.app, host, port, tls, announce)
