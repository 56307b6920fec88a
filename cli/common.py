"""What the `scifed` sub-commands share: the CA, identity and `--json` options, making an
identity, and the coordinator client."""

from __future__ import annotations

from pathlib import Path

import typer

from scifed.config import write_config
from scifed.console import console
from scifed.errors import UserError

CaDir = typer.Option(Path("ca"), "--ca-dir", envvar="SCIFED_CA_DIR", help="CA directory")
IdentityOpt = typer.Option(Path("."), "--identity", "-i", envvar="SCIFED_IDENTITY",
                           help="Identity directory (client.yaml, key, certificate, ca.crt)")
JsonOpt = typer.Option(False, "--json", help="Machine-readable output")


def _init_identity(role: str, name: str, dir: Path, coordinator: str) -> None:
    from coordinator.client import ClientConfig
    from scifed.pki import make_key_and_csr

    if (dir / "client.yaml").exists():
        raise UserError(f"{dir / 'client.yaml'} already exists")
    from scifed.sealing import ensure_seal_key

    csr = make_key_and_csr(dir, name=name, role=role)
    ensure_seal_key(dir)  # results are sealed to it; it never leaves this directory
    write_config(dir / "client.yaml", ClientConfig(name=name, role=role,
                                                   coordinator=coordinator))
    console.print(f"{role} [bold]{name}[/] key and CSR in {dir}\n"
                  f"next: the operator runs `scifed ca sign {csr} --role {role}` and returns "
                  f"{name}.crt and ca.crt into {dir}")


def _client(identity: Path):
    from coordinator.client import Client

    return Client(identity)
