"""`scifed ca ...`: the federation CA (operator)."""

from __future__ import annotations

from pathlib import Path

import typer

from cli.common import CaDir, JsonOpt, show
from scifed.console import handle_errors, print_json, print_table

ca_app = typer.Typer(help="The federation CA (operator).", no_args_is_help=True)


@ca_app.command("init")
@handle_errors()
def ca_init(ca_dir: Path = CaDir,
            host: list[str] = typer.Option(["127.0.0.1", "localhost"], "--host",
                                           help="Names/IPs the coordinator is reached at"),
            as_json: bool = JsonOpt) -> None:
    """Make the federation CA and the coordinator's certificate."""
    from scifed.pki import init_ca

    init_ca(ca_dir, coordinator_hosts=host)
    show({"ca_dir": str(ca_dir), "ca": str(ca_dir / "ca.crt"), "coordinator_hosts": host},
         as_json, f"CA ready in {ca_dir} (coordinator certificate for {', '.join(host)})")


@ca_app.command("sign")
@handle_errors()
def ca_sign(csr: Path, role: str = typer.Option(..., "--role",
                                               help="node | researcher | operator"),
            ca_dir: Path = CaDir, out: Path | None = typer.Option(None, "--out"),
            as_json: bool = JsonOpt) -> None:
    """Issue a certificate for a CSR; the role is carried in the certificate."""
    from cryptography import x509

    from scifed.pki import sign_csr

    cert = sign_csr(ca_dir, csr, role=role, out_path=out)
    serial = x509.load_pem_x509_certificate(cert.read_bytes()).serial_number
    show({"certificate": str(cert), "role": role, "serial": f"{serial:x}",
          "ca": str(ca_dir / "ca.crt")}, as_json,
         f"issued {cert} (role {role}); give it with {ca_dir / 'ca.crt'} to its owner")


@ca_app.command("revoke")
@handle_errors()
def ca_revoke(name: str = typer.Option(..., "--name", help="The certificate's name: the "
                                       "node, researcher or operator name it was issued "
                                       "to (see `scifed ca list`)"),
              role: str | None = typer.Option(None, "--role",
                                              help="node | researcher | operator"),
              ca_dir: Path = CaDir, as_json: bool = JsonOpt) -> None:
    """Revoke a certificate; the coordinator refuses it from its next call."""
    from scifed.pki import revoke

    serial = revoke(ca_dir, name=name, role=role)
    show({"revoked": name, "role": role, "serial": f"{serial:x}"}, as_json,
         f"revoked {name} (serial {serial:x}); CRL updated")


@ca_app.command("crl")
@handle_errors()
def ca_crl(ca_dir: Path = CaDir, as_json: bool = JsonOpt) -> None:
    """Sign the CRL again (same revocations, next number): nodes refuse a CRL older than
    their crl_max_age_seconds (a day by default), so run this at least daily."""
    from scifed.pki import refresh_crl

    number = refresh_crl(ca_dir)
    show({"crl": str(ca_dir / "crl.pem"), "number": number}, as_json,
         f"CRL number {number} signed in {ca_dir / 'crl.pem'}; the coordinator "
         "forwards it to the nodes within seconds")


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
