"""`scifed access ...` (researchers) and `scifed node access ...` (the data officer):
delivery of shareable data. The logic is in coordinator/access_client.py (researcher)
and node/delivery/ (node); these commands only ask and print."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path

import typer

from cli.common import IdentityOpt, JsonOpt, PassphraseFileOpt, _client, approver_passphrase, show
from cli.officer import ConfigOpt, KeyOpt, _decide, admin_stub
from protos.scifed.v1 import node_admin_pb2 as pb
from scifed.console import console, err_console, handle_errors, print_json, print_table
from scifed.errors import UserError

access_app = typer.Typer(help="Request, download and query shareable datasets "
                         "(delivery by the dataset's declared methods).",
                         no_args_is_help=True)
node_access_app = typer.Typer(help="Access grants and deliveries of this node's datasets "
                              "(data officer).", no_args_is_help=True)


def _when(ms: int | None) -> str:
    return "" if not ms else datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M")


def _grant_rows(grants: list[dict]):
    return [(g["grant_id"], g["node"], g["dataset_id"], g["method"],
             ", ".join(g["columns"]) or "all", g["state"], _when(g.get("expires_ms")),
             g.get("conditions") or g.get("reason", "")) for g in grants]


GRANT_COLUMNS = ["grant", "node", "dataset", "method", "columns", "state", "expires", "note"]


# -- researchers -------------------------------------------------------------------------
@access_app.command("request")
@handle_errors("the coordinator")
def access_request(record_id: str = typer.Argument(..., help="The dataset's catalog id"),
                   method: str = typer.Option("download", "--method",
                                              help="download | in_node_service"),
                   purpose: str = typer.Option(..., "--purpose",
                                               help="What you will use the data for"),
                   columns: str = typer.Option("", "--columns",
                                               help="Comma-separated column subset "
                                               "(download: default the whole file)"),
                   fmt: str = typer.Option("parquet", "--format",
                                           help="parquet | csv, for a column subset"),
                   study: str = typer.Option("", "--study", help="The study you use it in "
                                             "(required for CONDITIONAL data)"),
                   accept: list[str] = typer.Option([], "--accept", help="A condition of "
                                                    "use you accept, by code (repeat)"),
                   accept_all: bool = typer.Option(False, "--accept-all", help="Accept "
                                                   "every condition of use and the licence "
                                                   "the record lists"),
                   identity: Path = IdentityOpt, as_json: bool = JsonOpt) -> None:
    """Ask the dataset's node for access; it grants at once where the dataset's cell
    allows, holds it for its data officer's approval, or refuses with the reason."""
    from coordinator import access_client as ac

    with _client(identity) as c:
        record = c.record(record_id)
        try:
            accepted = ac.require_accepted(record, [t["code"] for t in ac.conditions(record)]
                                           if accept_all else accept)
        except UserError as exc:
            raise UserError(f"{exc} — give --accept CODE for each, or --accept-all") from None
        grant = ac.request_access(c, record_id, method=method, purpose=purpose,
                                  accept=accepted, fmt=fmt, study=study,
                                  columns=[x.strip() for x in columns.split(",") if x.strip()])
    g = grant.shown()
    show(g, as_json, f"grant [bold]{g['grant_id']}[/] at node {g['node']}: "
         f"[bold]{g['state']}[/] ({g['reason']})")


@access_app.command("list")
@handle_errors("the coordinator")
def access_list(identity: Path = IdentityOpt, as_json: bool = JsonOpt) -> None:
    """Your grants at every connected node."""
    from coordinator import access_client as ac

    with _client(identity) as c:
        grants, unreached = ac.list_access(c)
    rows = [g.shown() for g in grants]
    if as_json:
        print_json({"grants": rows, "unreached": unreached})
        return
    print_table(f"{len(rows)} grants", GRANT_COLUMNS, _grant_rows(rows))
    if unreached:
        err_console.print(f"not reached: {', '.join(unreached)}", highlight=False)


@access_app.command("download")
@handle_errors("the coordinator")
def access_download(grant_id: str, out: Path = typer.Option(..., "--out", help="Where to "
                                                            "write the file"),
                    identity: Path = IdentityOpt, as_json: bool = JsonOpt) -> None:
    """Download a granted dataset (resumes an interrupted download to the same --out);
    prints the sha256 the node signed, checked on arrival."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    from coordinator import access_client as ac

    with _client(identity) as c:
        if as_json:
            digest = ac.download(c, grant_id, out)
        else:
            with Progress("[progress.description]{task.description}", BarColumn(),
                          DownloadColumn(), TransferSpeedColumn(), console=err_console) as bar:
                task = bar.add_task(f"grant {grant_id}", total=None)
                digest = ac.download(c, grant_id, out, progress=lambda done, total:
                                     bar.update(task, completed=done, total=total))
    show({"grant_id": grant_id, "out": str(out), "sha256": digest,
          "bytes": out.stat().st_size}, as_json,
         f"{out}: {out.stat().st_size} bytes, sha256 [bold]{digest}[/] (verified)")


@access_app.command("query")
@handle_errors("the coordinator")
def access_query(grant_id: str, sql: str = typer.Argument(..., help="One SELECT over table "
                                                          "`data`"),
                 identity: Path = IdentityOpt, as_json: bool = JsonOpt) -> None:
    """Run one query inside the node over the granted columns (table `data`); where the
    dataset may not be downloaded without approval, only aggregates of at least k rows."""
    from coordinator import access_client as ac

    with _client(identity) as c:
        frame, said = ac.query(c, grant_id, sql)
    if as_json:
        print_json({"columns": list(frame.columns), "rows": frame.values.tolist(), **said})
        return
    print_table(f"{len(frame)} rows ({said['mode']})", [str(x) for x in frame.columns],
                frame.values.tolist())
    if said["withheld"]:
        console.print(f"{said['withheld']} groups withheld (fewer rows than the dataset's k)")


# -- the data officer --------------------------------------------------------------------
@node_access_app.command("list")
@handle_errors("the node")
def node_access_list(state: str = typer.Option("", "--state", help="granted | pending | "
                                               "denied | expired | revoked; default all"),
                     deliveries: bool = typer.Option(False, "--deliveries", help="List "
                                                     "every delivery instead of grants"),
                     config: Path = ConfigOpt, as_json: bool = JsonOpt) -> None:
    """Grants of this node's datasets (or, --deliveries, everything delivered)."""
    rows = json.loads(admin_stub(config).AccessList(
        pb.AccessListRequest(state=state, deliveries=deliveries), timeout=30).json)
    if as_json:
        print_json(rows)
    elif deliveries:
        print_table(f"{len(rows)} deliveries", ["id", "grant", "dataset", "recipient", "kind",
                                                "sha256", "at"],
                    [(d["delivery_id"], d["grant_id"], d["dataset_id"], d["recipient"],
                      d["kind"], d["sha256"][:16] + "…", _when(d["at_ms"])) for d in rows])
    else:
        print_table(f"{len(rows)} grants", [*GRANT_COLUMNS, "researcher", "approval"],
                    [(*r, g["researcher"], g.get("approval_id") or "")
                     for r, g in zip(_grant_rows(rows), rows, strict=True)])


@node_access_app.command("show")
@handle_errors("the node")
def node_access_show(grant_id: str, config: Path = ConfigOpt,
                     as_json: bool = JsonOpt) -> None:
    """One grant: the signed request, the decision, the manifest and every delivery
    (JSON either way)."""
    del as_json
    print_json(json.loads(admin_stub(config).AccessShow(pb.AccessRef(grant_id=grant_id),
                                                        timeout=30).json))


def _approval_of(config: Path, grant_id: str) -> str:
    grant = json.loads(admin_stub(config).AccessShow(pb.AccessRef(grant_id=grant_id),
                                                     timeout=30).json)
    if not grant.get("approval_id"):
        raise UserError(f"grant {grant_id} is {grant['state']}: it was not held for "
                        "approval")
    return grant["approval_id"]


@node_access_app.command("approve")
@handle_errors("the node")
def node_access_approve(grant_id: str,
                        conditions: str = typer.Option("", "--conditions", help="Conditions "
                                                       "of this grant (the researcher sees "
                                                       "them)"),
                        expires: str = typer.Option("30d", "--expires",
                                                    help="e.g. 30d, 12h, 2026-12-31"),
                        key: Path = KeyOpt, passphrase_file: Path | None = PassphraseFileOpt,
                        config: Path = ConfigOpt, as_json: bool = JsonOpt) -> None:
    """Approve a held access request with conditions and an expiry, signed with your
    approver key."""
    _decide(_approval_of(config, grant_id), True, conditions, expires, key, passphrase_file,
            config, as_json)


@node_access_app.command("deny")
@handle_errors("the node")
def node_access_deny(grant_id: str, reason: str = typer.Option(..., "--reason"),
                     key: Path = KeyOpt, passphrase_file: Path | None = PassphraseFileOpt,
                     config: Path = ConfigOpt, as_json: bool = JsonOpt) -> None:
    """Refuse a held access request, signed with your key; the researcher sees why."""
    _decide(_approval_of(config, grant_id), False, reason, "", key, passphrase_file, config,
            as_json)


@node_access_app.command("revoke")
@handle_errors("the node")
def node_access_revoke(grant_id: str, reason: str = typer.Option(..., "--reason"),
                       config: Path = ConfigOpt, as_json: bool = JsonOpt) -> None:
    """End a grant now: nothing more is delivered under it."""
    g = json.loads(admin_stub(config).AccessRevoke(
        pb.AccessRevokeRequest(grant_id=grant_id, reason=reason), timeout=30).json)
    show(g, as_json, f"grant {g['grant_id']} of {g['researcher']}: [bold]revoked[/]")


@node_access_app.command("expire")
@handle_errors("the node")
def node_access_expire(grant_id: str,
                       expires: str = typer.Option(..., "--expires",
                                                   help="When it ends: 30d, 12h, 2026-12-31"),
                       reason: str = typer.Option(..., "--reason"),
                       config: Path = ConfigOpt, as_json: bool = JsonOpt) -> None:
    """Set when a grant ends (an automatic grant, such as an in-node service, has no end
    of its own); it may only come sooner."""
    from node.approvals import parse_expiry

    g = json.loads(admin_stub(config).AccessExpire(pb.AccessExpireRequest(
        grant_id=grant_id, expires_unix_ms=parse_expiry(expires) or 0, reason=reason),
        timeout=30).json)
    show(g, as_json, f"grant {g['grant_id']} of {g['researcher']}: ends {expires}")


@node_access_app.command("record-offline")
@handle_errors("the node")
def node_access_record_offline(
        dataset_id: str,
        recipient: str = typer.Option(..., "--recipient", help="Who received it"),
        what: str = typer.Option(..., "--what", help="What was handed over (file, extract)"),
        medium: str = typer.Option(..., "--medium", help="How (encrypted disk, courier …)"),
        sha256: str = typer.Option("", "--sha256", help="sha256 of what was handed over"),
        file: Path | None = typer.Option(None, "--file", help="Hash this file instead"),
        key: Path = KeyOpt, passphrase_file: Path | None = PassphraseFileOpt,
        config: Path = ConfigOpt, as_json: bool = JsonOpt) -> None:
    """Record an offline transfer you made (nothing goes over the network), signed with
    your officer key; refused where the dataset's cell admits none."""
    from node.admin_client import signed_offline_record
    from scifed.approver_keys import load_key

    if file is not None:
        if sha256:
            raise UserError("give --sha256 or --file, not both")
        digest = hashlib.sha256()
        try:
            with file.open("rb") as f:
                while block := f.read(1 << 20):
                    digest.update(block)
        except OSError as exc:
            raise UserError(f"cannot read {file}: {exc.strerror}") from None
        sha256 = digest.hexdigest()
    if not sha256:
        raise UserError("give the sha256 of what was handed over (--sha256 or --file)")
    r = signed_offline_record(
        admin_stub(config), dataset_id=dataset_id, recipient=recipient, what=what,
        sha256=sha256, medium=medium, key_label=str(key),
        key=lambda: load_key(key, approver_passphrase(passphrase_file, new=False)))
    show(r, as_json, f"offline transfer {r['delivery_id']} of {r['dataset_id']} to "
         f"{r['recipient']} recorded (sha256 {r['sha256'][:16]}…), signed by {r['by']}")
