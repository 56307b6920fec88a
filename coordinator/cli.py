"""`scifed ca|coordinator|researcher|operator|catalog|nodes ...` commands."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from scifed.config import CoordinatorConfig, TlsConfig, load_config, write_config
from scifed.console import console, handle_errors, print_json, print_table
from scifed.errors import UserError

ca_app = typer.Typer(help="The federation CA (operator).", no_args_is_help=True)
coordinator_app = typer.Typer(help="Run the coordinator (operator).", no_args_is_help=True)
researcher_app = typer.Typer(help="Researcher identity.", no_args_is_help=True)
operator_app = typer.Typer(help="Operator identity.", no_args_is_help=True)
catalog_app = typer.Typer(help="Search the federated catalog.", no_args_is_help=True)
nodes_app = typer.Typer(help="The node registry (operator).", no_args_is_help=True)

CaDir = typer.Option(Path("ca"), "--ca-dir", envvar="SCIFED_CA_DIR", help="CA directory")
IdentityOpt = typer.Option(Path("."), "--identity", "-i", envvar="SCIFED_IDENTITY",
                           help="Identity directory (client.yaml, key, certificate, ca.crt)")
JsonOpt = typer.Option(False, "--json", help="Machine-readable output")


# -- CA ------------------------------------------------------------------------------
@ca_app.command("init")
@handle_errors()
def ca_init(ca_dir: Path = CaDir,
            host: list[str] = typer.Option(["127.0.0.1", "localhost"], "--host",
                                           help="Names/IPs the coordinator is reached at")) -> None:
    """Make the federation CA and the coordinator's certificate."""
    from scifed.pki import init_ca

    init_ca(ca_dir, coordinator_hosts=host)
    console.print(f"CA ready in {ca_dir} (coordinator certificate for {', '.join(host)})")


@ca_app.command("sign")
@handle_errors()
def ca_sign(csr: Path, role: str = typer.Option(..., "--role",
                                               help="node | researcher | operator"),
            ca_dir: Path = CaDir, out: Path | None = typer.Option(None, "--out")) -> None:
    """Issue a certificate for a CSR; the role is carried in the certificate."""
    from scifed.pki import sign_csr

    cert = sign_csr(ca_dir, csr, role=role, out_path=out)
    console.print(f"issued {cert} (role {role}); give it with {ca_dir / 'ca.crt'} to its owner")


@ca_app.command("revoke")
@handle_errors()
def ca_revoke(name: str, role: str | None = typer.Option(None, "--role"),
              ca_dir: Path = CaDir) -> None:
    """Revoke a certificate; the coordinator refuses it from its next call."""
    from scifed.pki import revoke

    serial = revoke(ca_dir, name=name, role=role)
    console.print(f"revoked {name} (serial {serial:x}); CRL updated")


@ca_app.command("list")
@handle_errors()
def ca_list(ca_dir: Path = CaDir, as_json: bool = JsonOpt) -> None:
    """Certificates this CA has issued."""
    from scifed.pki import issued

    rows = issued(ca_dir)
    if as_json:
        print_json(rows)
    else:
        print_table("issued certificates", ["name", "role", "serial", "expires", "revoked"],
                    [(r["name"], r["role"], f"{r['serial']:x}", r["not_after"], r["revoked"])
                     for r in rows])


# -- coordinator -----------------------------------------------------------------------
@coordinator_app.command("init")
@handle_errors()
def coordinator_init(dir: Path = typer.Option(Path("."), "--dir"), ca_dir: Path = CaDir,
                     listen: str = typer.Option("127.0.0.1:7443", "--listen")) -> None:
    """Write coordinator.yaml pointing at the CA's coordinator certificate."""
    target = dir / "coordinator.yaml"
    if target.exists():
        raise UserError(f"{target} already exists")
    dir.mkdir(parents=True, exist_ok=True)
    ca = ca_dir.resolve()
    write_config(target, CoordinatorConfig(
        listen=listen, state_dir=dir.resolve() / "state",
        tls=TlsConfig(ca=ca / "ca.crt", cert=ca / "coordinator.crt",
                      key=ca / "coordinator.key", crl=ca / "crl.pem")))
    console.print(f"wrote {target}")


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


# -- identities ------------------------------------------------------------------------
def _init_identity(role: str, name: str, dir: Path, coordinator: str) -> None:
    from coordinator.client import ClientConfig
    from scifed.pki import make_key_and_csr

    if (dir / "client.yaml").exists():
        raise UserError(f"{dir / 'client.yaml'} already exists")
    csr = make_key_and_csr(dir, name=name, role=role)
    write_config(dir / "client.yaml", ClientConfig(name=name, role=role,
                                                   coordinator=coordinator))
    console.print(f"{role} [bold]{name}[/] key and CSR in {dir}\n"
                  f"next: the operator runs `scifed ca sign {csr} --role {role}` and returns "
                  f"{name}.crt and ca.crt into {dir}")


@researcher_app.command("init")
@handle_errors()
def researcher_init(name: str = typer.Option(...), dir: Path = typer.Option(Path("."), "--dir"),
                    coordinator: str = typer.Option("127.0.0.1:7443")) -> None:
    """Make a researcher key pair (kept here) and a CSR for the operator to sign."""
    _init_identity("researcher", name, dir, coordinator)


@operator_app.command("init")
@handle_errors()
def operator_init(name: str = typer.Option(...), dir: Path = typer.Option(Path("."), "--dir"),
                  coordinator: str = typer.Option("127.0.0.1:7443")) -> None:
    """Make an operator key pair (kept here) and a CSR for the CA to sign."""
    _init_identity("operator", name, dir, coordinator)


# -- catalog ---------------------------------------------------------------------------
def _client(identity: Path):
    from coordinator.client import Client

    return Client(identity)


@catalog_app.command("search")
@handle_errors("the coordinator")
def catalog_search(query: str = typer.Argument("", help="Free text"),
                   subject: list[str] = typer.Option([], "--subject"),
                   platform: list[str] = typer.Option([], "--platform"),
                   grade: list[str] = typer.Option([], "--grade"),
                   category: list[str] = typer.Option([], "--category"),
                   keyword: list[str] = typer.Option([], "--keyword"),
                   column: list[str] = typer.Option([], "--column"),
                   limit: int = typer.Option(50, "--limit"),
                   identity: Path = IdentityOpt, as_json: bool = JsonOpt) -> None:
    """Search datasets across the federation (metadata only)."""
    with _client(identity) as c:
        df = c.search(query, subjects=subject, platforms=platform, grades=grade,
                      categories=category, keywords=keyword, columns=column, limit=limit)
    if as_json:
        print_json(df.to_dict(orient="records"))
        return
    print_table(f"{len(df)} datasets", ["id", "title", "platform", "grade", "category", "rows"],
                [(r.id, r.title + (" [stub]" if r.stub else ""), r.platform, r.grade,
                  r.category, "" if r.stub else r.rows) for r in df.itertuples()])


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


# -- registry --------------------------------------------------------------------------
@nodes_app.command("list")
@handle_errors("the coordinator")
def nodes_list(identity: Path = IdentityOpt, as_json: bool = JsonOpt) -> None:
    """Every enrolled node, online or offline, and when it was last seen."""
    with _client(identity) as c:
        df = c.nodes()
    if as_json:
        print_json(df.to_dict(orient="records"))
        return
    print_table("nodes", ["name", "platform", "status", "last seen", "datasets", "version"],
                [(r.name, r.platform, "[green]online[/]" if r.online else "[red]offline[/]",
                  r.last_seen, r.datasets, r.version) for r in df.itertuples()])
