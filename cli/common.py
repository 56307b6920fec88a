"""What the `scifed` sub-commands share: the CA, identity and `--json` options, making an
identity, and the coordinator client."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from scifed.config import FLOWER_PORT, write_config
from scifed.console import console, print_json
from scifed.errors import UserError

CaDir = typer.Option(Path("ca"), "--ca-dir", envvar="SCIFED_CA_DIR", help="CA directory")
IdentityOpt = typer.Option(Path("."), "--identity", "-i", envvar="SCIFED_IDENTITY",
                           help="Identity directory (client.yaml, key, certificate, ca.crt)")
JsonOpt = typer.Option(False, "--json", help="Machine-readable output")


def show(data: Any, as_json: bool, human: str | Callable[[], None]) -> None:
    """What a command prints, in one place: ``data`` as JSON with ``--json`` (for scripts),
    else ``human`` (rich markup, or a function that prints tables)."""
    if as_json:
        print_json(data)
    elif callable(human):
        human()
    else:
        console.print(human, highlight=False)


def message_dict(message) -> dict:
    """A protobuf message as the dict ``--json`` prints (field names as in the .proto)."""
    from google.protobuf.json_format import MessageToDict

    return MessageToDict(message, preserving_proto_field_name=True)


def default_superlink(coordinator: str, given: str | None) -> str | None:
    """The Flower SuperLink a new node's config names: ``given`` (``none``: no training),
    else the coordinator's host at the SuperLink's default port, which `coordinator init`
    writes too, so a quick start trains without editing either file."""
    if given is not None:
        return None if given.strip().lower() in ("", "none") else given.strip()
    host = coordinator.rsplit(":", 1)[0] if ":" in coordinator else coordinator
    return f"{host}:{FLOWER_PORT}"


def _init_identity(role: str, name: str, dir: Path, coordinator: str,
                   as_json: bool = False) -> None:
    from coordinator.client import ClientConfig
    from scifed.pki import make_key_and_csr

    if (dir / "client.yaml").exists():
        raise UserError(f"{dir / 'client.yaml'} already exists")
    from scifed.sealing import ensure_seal_key

    csr = make_key_and_csr(dir, name=name, role=role)
    ensure_seal_key(dir)  # results are sealed to it; it never leaves this directory
    write_config(dir / "client.yaml", ClientConfig(name=name, role=role,
                                                   coordinator=coordinator))
    show({role: name, "dir": str(dir), "csr": str(csr), "coordinator": coordinator}, as_json,
         f"{role} [bold]{name}[/] key and CSR in {dir}\n"
         f"next: the operator runs `scifed ca sign {csr} --role {role}` and returns "
         f"{name}.crt and ca.crt into {dir}")


def _client(identity: Path):
    from coordinator.client import Client

    return Client(identity)


PassphraseFileOpt = typer.Option(
    None, "--passphrase-file", help="Read the approver key's passphrase from this file's "
    "first line (for scripts); default: $SCIFED_APPROVER_PASSPHRASE, else a prompt")
CountersignOpt = typer.Option(
    [], "--countersign", help="A registered approver's key that countersigns this change "
    "(repeat: the officer's and the security lead's); each key's holder gives its "
    "passphrase")
CountersignPassphraseOpt = typer.Option(
    [], "--countersign-passphrase-file", help="The passphrase of the --countersign key at "
    "the same position, from this file's first line (repeat: one per --countersign, in "
    "order, or none); default: $SCIFED_APPROVER_PASSPHRASE, else a prompt per key")


def approver_passphrase(file: Path | None, *, new: bool, key: Path | None = None) -> bytes:
    """The passphrase of an approver key: from ``file``, $SCIFED_APPROVER_PASSPHRASE, or a
    hidden prompt (asked twice for a ``new`` key; naming ``key`` when given, so that each
    of two countersigners knows whose turn it is). Never echoed or logged."""
    from scifed.approver_keys import (
        MIN_PASSPHRASE,
        PASSPHRASE_ENV,
        passphrase_from_env,
        read_passphrase_file,
    )

    if file is not None:
        phrase = read_passphrase_file(file)
    else:
        phrase = passphrase_from_env()
        if phrase is None:
            what = (f"passphrase of the approver key {key}" if key is not None else
                    "passphrase of the approver key")
            phrase = typer.prompt(what if not new else
                                  "passphrase for the new approver key", hide_input=True,
                                  confirmation_prompt=new, default="",
                                  show_default=False).encode()
    if not phrase:
        raise UserError("an approver key needs a passphrase (--passphrase-file, "
                        f"--countersign-passphrase-file, ${PASSPHRASE_ENV} or the prompt)")
    if new and len(phrase) < MIN_PASSPHRASE:
        raise UserError(f"the passphrase of an approver key has at least {MIN_PASSPHRASE} "
                        "characters")
    return phrase
