"""`scifed node ...`: the data officer's commands."""

from __future__ import annotations

import getpass
import json
import logging
import os
from datetime import UTC, datetime
from pathlib import Path

import typer

from cli.common import (
    FLOWER_PORT,
    CountersignOpt,
    CountersignPassphraseOpt,
    JsonOpt,
    PassphraseFileOpt,
    approver_passphrase,
    default_superlink,
    message_dict,
    show,
)
from protos.scifed.v1 import node_admin_pb2 as pb
from protos.scifed.v1 import node_admin_pb2_grpc as pbg
from scifed.config import NodeConfig, TlsConfig, load_config, write_config
from scifed.console import console, err_console, handle_errors, print_json, print_table
from scifed.errors import UserError

app = typer.Typer(help="Run a platform node and manage its datasets (data officer).",
                  no_args_is_help=True)
dataset_app = typer.Typer(help="Register and describe datasets.", no_args_is_help=True)
app.add_typer(dataset_app, name="dataset")

ConfigOpt = typer.Option(Path("node.yaml"), "--config", "-c", envvar="SCIFED_NODE_CONFIG",
                         help="The node's config file.")


def acting_as() -> str:
    """The audit log's name for this account ($SCIFED_ACTOR, else the login name); it
    decides no approval (those are signed: `scifed node approvals approve --key`)."""
    return os.environ.get("SCIFED_ACTOR") or getpass.getuser()


def admin_stub(config: Path) -> pbg.NodeAdminStub:
    from node.admin_client import acting, admin_channel

    channel = admin_channel(load_config(config, NodeConfig),
                            f"`scifed node serve --config {config}`")
    return acting(channel, acting_as())


@app.command()
@handle_errors("the CA")
def init(name: str = typer.Option(..., help="Node name (lower-case, a-z0-9-)"),
         platform: str = typer.Option(..., help="The platform this node serves"),
         coordinator: str = typer.Option(..., help="Coordinator address host:port"),
         dir: Path = typer.Option(Path("."), "--dir", help="Deployment directory"),
         flower_superlink: str | None = typer.Option(
             None, "--flower-superlink", help="host:port of the coordinator's Flower "
             f"SuperLink, for `train` jobs (default: the coordinator's host, port "
             f"{FLOWER_PORT}); none: this node takes no part in training"),
         as_json: bool = JsonOpt) -> None:
    """Make the node's key pair and CSR (the key never leaves this directory) and node.yaml."""
    from scifed.pki import make_key_and_csr

    superlink = default_superlink(coordinator, flower_superlink)
    dir.mkdir(parents=True, exist_ok=True)
    cfg = NodeConfig(name=name, platform=platform, coordinator=coordinator,
                     flower_superlink=superlink,
                     data_dir=dir / "data", state_dir=dir / "state",
                     tls=TlsConfig(ca=dir / "pki" / "ca.crt", cert=dir / "pki" / f"{name}.crt",
                                   key=dir / "pki" / "node.key"))
    if (dir / "node.yaml").exists():
        raise UserError(f"{dir / 'node.yaml'} already exists")
    csr = make_key_and_csr(dir / "pki", name=name, role="node")
    cfg.data_dir.mkdir(exist_ok=True)
    write_config(dir / "node.yaml", cfg)
    show({"node": name, "config": str(dir / "node.yaml"), "csr": str(csr),
          "flower_superlink": superlink},
         as_json, f"node [bold]{name}[/] initialised in {dir} (training: "
         f"{'Flower SuperLink ' + superlink if superlink else 'off'})\n"
         f"next: the operator runs `scifed ca sign {csr} --role node` and returns "
         f"{cfg.tls.cert.name} and ca.crt into {dir / 'pki'}")


@app.command()
@handle_errors("the coordinator")
def serve(config: Path = ConfigOpt,
          log_level: str = typer.Option("INFO", help="Logging level")) -> None:
    """Run the node: admin API on a local socket, outbound link to the coordinator."""
    from node.server import serve as run

    logging.basicConfig(level=log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run(load_config(config, NodeConfig))


@app.command("console")
@handle_errors("the node")
def console_cmd(config: Path = ConfigOpt,
                host: str = typer.Option("127.0.0.1", "--host",
                                         help="Address to listen on (loopback by default)"),
                port: int = typer.Option(8710, "--port", help="Port (0: any free one)"),
                tls_cert: Path | None = typer.Option(None, "--tls-cert",
                                                     help="Certificate, to serve over TLS"),
                tls_key: Path | None = typer.Option(None, "--tls-key",
                                                    help="Its private key"),
                as_json: bool = JsonOpt) -> None:
    """The node console in a browser, for officers, liaisons and security leads: they
    log in with their approver key; serves until interrupted."""
    from node.console.app import build
    from scifed.web.serve import run, tls_files

    tls = tls_files(host, tls_cert, tls_key)
    nc = build(load_config(config, NodeConfig), https=tls is not None)
    run(nc.app, host, port, tls, lambda url: show(
        {"url": url, "node": nc.cfg.name}, as_json,
        f"node console of [bold]{nc.cfg.name}[/] at {url} (Ctrl-C to stop)"))


@app.command()
@handle_errors("the node")
def status(config: Path = ConfigOpt, as_json: bool = JsonOpt) -> None:
    """Is the node connected to the coordinator, and what does it publish?"""
    s = admin_stub(config).Status(pb.StatusRequest(), timeout=10)
    data = {"node": s.node_name, "platform": s.platform, "coordinator": s.coordinator,
            "connected": s.connected, "last_contact": _ts(s.last_contact_unix_ms),
            "datasets": s.datasets, "published": s.published}
    if as_json:
        print_json(data)
    else:
        print_table(f"node {s.node_name}", ["field", "value"], data.items())


def _ts(ms: int) -> str | None:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds") if ms else None


def _read_meta(meta: Path) -> str:
    try:
        return meta.read_text(encoding="utf-8")
    except OSError as exc:
        raise UserError(f"cannot read {meta}: {exc.strerror}") from None


AcceptViolationsOpt = typer.Option(
    False, "--accept-violations",
    help="Register even though rows break the column dictionary; the counts are recorded")


def _print_summary(d: pb.DatasetSummary) -> None:
    print_table("dataset registered", ["id", "title", "grade", "category", "rows", "published as"],
                [(d.dataset_id, d.title, d.grade, d.category, d.record_count, d.publication)])


@dataset_app.command("add")
@handle_errors("the node")
def dataset_add(file: str = typer.Argument(..., help="Data file (CSV or Parquet) inside the "
                                           "node's data directory"),
                meta: Path = typer.Option(..., "--meta", help="Metadata YAML"),
                dataset_id: str = typer.Option("", "--id", help="Short id; default: file name"),
                accept_violations: bool = AcceptViolationsOpt,
                config: Path = ConfigOpt, as_json: bool = JsonOpt) -> None:
    """Register a data file with its metadata.

    Refused when rows break the column dictionary's constraints (each column, constraint
    and row count is listed), unless --accept-violations records them instead."""
    path = Path(file)
    # Paths typed by the officer are relative to where they stand, not to the node.
    sent = str(path.resolve()) if not path.is_absolute() and path.exists() else file
    r = admin_stub(config).AddDataset(pb.AddDatasetRequest(
        path=sent, meta_yaml=_read_meta(meta), meta_name=str(meta), dataset_id=dataset_id,
        accept_violations=accept_violations),
        timeout=120)
    print_json(json.loads(r.record_json)) if as_json else _print_summary(r.summary)


@dataset_app.command("update")
@handle_errors("the node")
def dataset_update(dataset_id: str, meta: Path | None = typer.Option(None, "--meta"),
                   refresh_data: bool = typer.Option(False, "--refresh-data",
                                                     help="Re-read the data file"),
                   accept_violations: bool = AcceptViolationsOpt,
                   config: Path = ConfigOpt, as_json: bool = JsonOpt) -> None:
    """Replace a dataset's metadata and/or re-read its file."""
    r = admin_stub(config).UpdateDataset(pb.UpdateDatasetRequest(
        dataset_id=dataset_id, meta_yaml=_read_meta(meta) if meta else "",
        meta_name=str(meta or ""), refresh_data=refresh_data,
        accept_violations=accept_violations), timeout=120)
    show(message_dict(r.summary), as_json, lambda: _print_summary(r.summary))


@dataset_app.command("remove")
@handle_errors("the node")
def dataset_remove(dataset_id: str, config: Path = ConfigOpt,
                   as_json: bool = JsonOpt) -> None:
    """Unregister a dataset (its file is left in place) and withdraw it from the catalog."""
    r = admin_stub(config).RemoveDataset(pb.DatasetRef(dataset_id=dataset_id), timeout=30)
    show({"removed": r.dataset_id}, as_json, f"removed {r.dataset_id}")


@dataset_app.command("list")
@handle_errors("the node")
def dataset_list(config: Path = ConfigOpt, as_json: bool = JsonOpt) -> None:
    """Datasets registered at this node."""
    rows = admin_stub(config).ListDatasets(pb.ListDatasetsRequest(), timeout=30).datasets
    if as_json:
        print_json([{"id": d.dataset_id, "title": d.title, "grade": d.grade,
                     "category": d.category, "rows": d.record_count,
                     "publication": d.publication, "path": d.path} for d in rows])
    else:
        print_table("datasets", ["id", "title", "grade", "category", "rows", "published as",
                                 "file"],
                    [(d.dataset_id, d.title, d.grade, d.category, d.record_count, d.publication,
                      d.path) for d in rows])


@dataset_app.command("show")
@handle_errors("the node")
def dataset_show(dataset_id: str, config: Path = ConfigOpt,
                 as_json: bool = JsonOpt) -> None:
    """The full catalog record of a dataset, as the node holds it."""
    r = admin_stub(config).GetDataset(pb.DatasetRef(dataset_id=dataset_id), timeout=30)
    record = json.loads(r.record_json)
    if as_json:
        print_json(record)
        return
    from scifed.record_view import print_record

    print_record(record)


studies_app = typer.Typer(help="Answer study invitations.", no_args_is_help=True)
app.add_typer(studies_app, name="studies")


def _study_rows(studies, me: str):
    for st in studies:
        mine = next((m for m in st.members if m.node == me), None)
        accepted = sum(m.state == "accepted" for m in st.members)
        yield (st.study_id, st.name, st.purpose, st.status,
               f"{accepted}/{st.min_nodes}", mine.state if mine else "",
               ", ".join(mine.datasets) if mine else "")


@studies_app.command("list")
@handle_errors("the node")
def studies_list(config: Path = ConfigOpt, as_json: bool = JsonOpt) -> None:
    """Studies this node is invited to, and its answers."""
    from google.protobuf.json_format import MessageToDict

    stub = admin_stub(config)
    me = stub.Status(pb.StatusRequest(), timeout=10).node_name
    reply = stub.ListStudies(pb.ListStudiesLocalRequest(), timeout=30)
    if as_json:
        print_json([MessageToDict(s, preserving_proto_field_name=True) for s in reply.studies])
        return
    print_table("studies", ["id", "name", "purpose", "status", "accepted/min", "this node",
                            "datasets"], _study_rows(reply.studies, me))


@studies_app.command("accept")
@handle_errors("the node")
def studies_accept(study_id: str,
                   datasets: str = typer.Option(..., "--datasets",
                                                help="Comma-separated dataset ids to contribute"),
                   config: Path = ConfigOpt, as_json: bool = JsonOpt) -> None:
    """Join a study, contributing the given datasets (they never leave the node)."""
    from protos.scifed.v1 import federation_pb2 as fpb

    names = [d.strip() for d in datasets.split(",") if d.strip()]
    st = admin_stub(config).AnswerStudy(fpb.AnswerInvitationRequest(
        study_id=study_id, accept=True, datasets=names), timeout=60)
    show(message_dict(st), as_json, f"accepted study [bold]{st.name}[/] with "
         f"{', '.join(names)}; study status: {st.status}")


@studies_app.command("decline")
@handle_errors("the node")
def studies_decline(study_id: str, config: Path = ConfigOpt, as_json: bool = JsonOpt) -> None:
    """Decline (or leave) a study."""
    from protos.scifed.v1 import federation_pb2 as fpb

    st = admin_stub(config).AnswerStudy(fpb.AnswerInvitationRequest(
        study_id=study_id, accept=False), timeout=60)
    show(message_dict(st), as_json,
         f"declined study [bold]{st.name}[/]; study status: {st.status}")



policy_app = typer.Typer(help="The policy engine: effective policy per dataset.",
                         no_args_is_help=True)
approvals_app = typer.Typer(help="The approval queue.", no_args_is_help=True)
budget_app = typer.Typer(help="The privacy-budget ledger.", no_args_is_help=True)
audit_app = typer.Typer(help="The tamper-evident audit chain.", no_args_is_help=True)
app.add_typer(policy_app, name="policy")
app.add_typer(approvals_app, name="approvals")
app.add_typer(budget_app, name="budget")
app.add_typer(audit_app, name="audit")
alerts_app = typer.Typer(help="Alerts for the officer (refused-query runs).",
                         no_args_is_help=True)
app.add_typer(alerts_app, name="alerts")


def _print_policy(data: dict, as_json: bool) -> None:
    if as_json:
        print_json(data)
        return
    print_table(f"effective policy of {data['dataset_id']} ({data['grade']}/{data['category']})",
                ["setting", "value", "source"],
                [(r["setting"], r["value"], r["source"]) for r in data["settings"]])


@policy_app.command("show")
@handle_errors("the node")
def policy_show(dataset_id: str, config: Path = ConfigOpt,
                as_json: bool = JsonOpt) -> None:
    """The effective policy of a dataset and where each value comes from."""
    r = admin_stub(config).PolicyShow(pb.DatasetRef(dataset_id=dataset_id), timeout=30)
    _print_policy(json.loads(r.json), as_json)


@policy_app.command("set")
@handle_errors("the node")
def policy_set(dataset_id: str, file: Path = typer.Option(..., "--file",
                                                          help="Override YAML (tighten only)"),
               justification: str = typer.Option(
                   ..., "--justification",
                   help="Why (required; kept with the override and audited)"),
               config: Path = ConfigOpt, as_json: bool = JsonOpt) -> None:
    """Tighten a dataset's policy; an override that loosens anything is refused."""
    r = admin_stub(config).PolicySet(pb.PolicySetRequest(
        dataset_id=dataset_id, yaml=_read_meta(file), source=str(file),
        justification=justification), timeout=30)
    _print_policy(json.loads(r.json), as_json)


@policy_app.command("reset")
@handle_errors("the node")
def policy_reset(dataset_id: str, config: Path = ConfigOpt, as_json: bool = JsonOpt) -> None:
    """Back to the defaults of the dataset's (grade, category) cell."""
    r = admin_stub(config).PolicySet(pb.PolicySetRequest(dataset_id=dataset_id, reset=True),
                                     timeout=30)
    _print_policy(json.loads(r.json), as_json)


@approvals_app.command("list")
@handle_errors("the node")
def approvals_list(state: str = typer.Option("pending", help="pending|approved|denied|"
                                             "expired|withdrawn|all"),
                   config: Path = ConfigOpt, as_json: bool = JsonOpt) -> None:
    """Tasks waiting for (or given) a decision."""
    r = admin_stub(config).ApprovalsList(pb.ApprovalsListRequest(
        state="" if state == "all" else state), timeout=30)
    rows = json.loads(r.json)
    if as_json:
        print_json(rows)
        return
    print_table(f"approvals ({state})", ["id", "job", "dataset", "type", "researcher", "grade",
                                         "state", "why"],
                [(a["approval_id"], a["job_id"], a["dataset_id"], a["job_type"],
                  a["researcher"], a["grade"], a["state"], a["reason"]) for a in rows])


@approvals_app.command("show")
@handle_errors("the node")
def approvals_show(approval_id: str, config: Path = ConfigOpt,
                   as_json: bool = JsonOpt) -> None:
    """One request with the job's full specification (JSON either way: ``--json`` is
    accepted so that scripts may pass it to every command)."""
    del as_json
    print_json(json.loads(admin_stub(config).ApprovalShow(
        pb.ApprovalRef(approval_id=approval_id), timeout=30).json))


def _decide(approval_id: str, approve: bool, reason: str, expires: str, key_path: Path,
            passphrase_file: Path | None, config: Path, as_json: bool) -> None:
    """Sign this one decision with the approver's key and send it (the node checks the
    signature against the registered key and takes the role from its registry)."""
    from node.admin_client import signed_decision
    from node.approvals import parse_expiry
    from scifed.approver_keys import load_key

    expires_ms = parse_expiry(expires) if approve else None
    a, me = signed_decision(
        admin_stub(config), approval_id, approve=approve, reason=reason,
        expires_ms=expires_ms, key_label=str(key_path),
        key=lambda: load_key(key_path, approver_passphrase(passphrase_file, new=False)))
    more = " (G5: it also needs the other of officer and security lead)" \
        if a["state"] == "pending" else ""
    show({**a, "signed_by": me.name, "role": me.role, "key": me.fingerprint}, as_json,
         f"approval {a['approval_id']} for job {a['job_id']}: [bold]{a['state']}[/]"
         f"{more}; signed by {me.name} ({me.role}, key {me.fingerprint[:23]}…)")


KeyOpt = typer.Option(..., "--key", help="Your approver key (`scifed node approver add`)")


@approvals_app.command("approve")
@handle_errors("the node")
def approvals_approve(approval_id: str,
                      expires: str = typer.Option("", "--expires",
                                                  help="e.g. 7d, 12h, 2026-12-31"),
                      key: Path = KeyOpt, passphrase_file: Path | None = PassphraseFileOpt,
                      config: Path = ConfigOpt, as_json: bool = JsonOpt) -> None:
    """Let the task run, signed with your key (a liaison may approve up to G3, G4+ needs
    the officer, G5 the officer and the security lead)."""
    _decide(approval_id, True, "", expires, key, passphrase_file, config, as_json)


@approvals_app.command("deny")
@handle_errors("the node")
def approvals_deny(approval_id: str, reason: str = typer.Option(..., "--reason"),
                   key: Path = KeyOpt, passphrase_file: Path | None = PassphraseFileOpt,
                   config: Path = ConfigOpt, as_json: bool = JsonOpt) -> None:
    """Refuse the task, signed with your key; the researcher sees the reason."""
    _decide(approval_id, False, reason, "", key, passphrase_file, config, as_json)


approver_app = typer.Typer(help="The people who decide approvals, each with their own key. "
                           "After the first officer and security lead, every change is "
                           "countersigned by an officer and a security lead.",
                           no_args_is_help=True)
app.add_typer(approver_app, name="approver")


def _registry_state(stub: pbg.NodeAdminStub) -> dict:
    return json.loads(stub.ApproverRegistryState(pb.ApproverRegistryStateRequest(),
                                                 timeout=30).json)


def _needs_countersign(state: dict, action: str, name: str, role: str,
                       keys: list[Path]) -> bool:
    """Whether the change is countersigned (else it is the bootstrap of ``role``); a
    UserError before anything is made when it needs countersignatures and has none."""
    if keys:
        return True
    if action == "add" and role in state["bootstrap"]:
        return False
    raise UserError(f"to {action} approver {name} ({role}) at node {state['node']} needs the "
                    "countersignatures of its officer and its security lead: give "
                    "`--countersign OFFICER.KEY --countersign SECURITY_LEAD.KEY` (only the "
                    "node's first officer and first security lead are added without)")


def _countersign(stub: pbg.NodeAdminStub, state: dict, action: str, name: str, role: str,
                 key_fp: str, keys: list[Path],
                 phrase_files: list[Path]) -> list[pb.Countersignature]:
    """Each --countersign key's signature over exactly this change and the registry as
    the node has it now (its holder gives the passphrase; the node checks each)."""
    from scifed.approver_keys import (
        change_statement,
        fingerprint,
        load_key,
        public_pem,
        sign_change,
    )
    from scifed.chain import canonical

    if phrase_files and len(phrase_files) != len(keys):
        raise UserError(f"{len(phrase_files)} --countersign-passphrase-file for "
                        f"{len(keys)} --countersign: give one per key, in the same order, "
                        "or none")
    people = json.loads(stub.ApproverList(pb.ApproverListRequest(), timeout=30).json)
    err_console.print(f"countersigning: {action} approver [bold]{name}[/] ({role}, key "
                      f"{key_fp}) at node {state['node']}, registry version "
                      f"{state['version']}", highlight=False)
    out = []
    for i, path in enumerate(keys):
        key = load_key(path, approver_passphrase(phrase_files[i] if phrase_files else None,
                                                 new=False, key=path))
        fp = fingerprint(public_pem(key))
        me = next((p for p in people if p["fingerprint"] == fp), None)
        if me is None:
            raise UserError(f"the --countersign key {path} ({fp}) is not a registered "
                            f"approver at node {state['node']}: `scifed node approver list` "
                            "shows who is")
        statement = change_statement(node=state["node"], action=action, name=name, role=role,
                                     key=key_fp, registry=state, signer=me["name"],
                                     signer_key=fp)
        out.append(pb.Countersignature(by=me["name"], statement=canonical(statement),
                                       signature=sign_change(key, statement)))
    return out


def _signed_by(sigs: list[pb.Countersignature]) -> str:
    return f"countersigned by {', '.join(c.by for c in sigs)}" if sigs else \
        "bootstrap: the node's first of this role, without countersignatures"


@approver_app.command("add")
@handle_errors("the node")
def approver_add(name: str = typer.Argument(..., help="The person's name (lower-case)"),
                 role: str = typer.Option(..., "--role",
                                          help="officer | liaison | security_lead"),
                 key_out: Path | None = typer.Option(
                     None, "--key-out", help="Where to write the private key (0600, in a "
                     "0700 directory); default ~/.scifed/approvers/NAME.key"),
                 public_key: Path | None = typer.Option(
                     None, "--public-key", help="Register this Ed25519 public key (PEM), "
                     "made by the person elsewhere, instead of making a key here"),
                 passphrase_file: Path | None = PassphraseFileOpt,
                 countersign: list[Path] = CountersignOpt,
                 countersign_passphrase_file: list[Path] = CountersignPassphraseOpt,
                 config: Path = ConfigOpt, as_json: bool = JsonOpt) -> None:
    """Make a person an approver: a key pair (the private key encrypted under their
    passphrase), the public key registered at the node with the role (audited). Needs
    --countersign by the node's officer and security lead, except for the node's first
    officer and its first security lead (the bootstrap)."""
    from scifed.approver_keys import (
        check_approver,
        default_key_path,
        fingerprint,
        new_key,
        public_pem,
        write_key,
    )

    check_approver(name, role)
    stub = admin_stub(config)  # the node is up before a key is made
    state = _registry_state(stub)
    countersigned = _needs_countersign(state, "add", name, role, countersign)
    key = path = phrase = None
    if public_key is not None:
        if key_out is not None:
            raise UserError("give --public-key or --key-out, not both")
        pem = _read_meta(public_key)
    else:
        path = (key_out or default_key_path(name)).expanduser()
        if path.exists():
            raise UserError(f"{path} already exists; an approver key is never overwritten")
        key = new_key()
        phrase = approver_passphrase(passphrase_file, new=True)
        pem = public_pem(key)
    sigs = _countersign(stub, state, "add", name, role, fingerprint(pem), countersign,
                        countersign_passphrase_file) if countersigned else []
    written = None
    if key is not None:
        write_key(path, key, phrase)
        written = path
    try:
        person = json.loads(stub.ApproverAdd(pb.ApproverAddRequest(
            name=name, role=role, public_key_pem=pem, countersignatures=sigs),
            timeout=30).json)
    except BaseException:
        if written is not None:  # the node refused: no key is left that nobody registered
            written.unlink(missing_ok=True)
        raise
    show({**person, "countersigned_by": [s.by for s in sigs],
          "private_key": str(written) if written else None}, as_json,
         f"approver [bold]{person['name']}[/] ({person['role']}) registered, key "
         f"{fingerprint(pem)} ({_signed_by(sigs)})"
         + (f"\nprivate key: {written} (keep it and its passphrase to yourself)"
            if written else ""))


@approver_app.command("list")
@handle_errors("the node")
def approver_list(removed: bool = typer.Option(False, "--removed",
                                               help="Also those removed"),
                  config: Path = ConfigOpt, as_json: bool = JsonOpt) -> None:
    """Who may decide approvals here, with their role and key."""
    rows = json.loads(admin_stub(config).ApproverList(pb.ApproverListRequest(
        include_removed=removed), timeout=30).json)
    if as_json:
        print_json(rows)
        return
    print_table("approvers", ["name", "role", "key", "added by", "added", "removed"],
                [(r["name"], r["role"], r["fingerprint"], r["added_by"], _ts(r["added_ms"]),
                  _ts(r["removed_ms"] or 0) or "") for r in rows])


@approver_app.command("remove")
@handle_errors("the node")
def approver_remove(name: str, countersign: list[Path] = CountersignOpt,
                    countersign_passphrase_file: list[Path] = CountersignPassphraseOpt,
                    config: Path = ConfigOpt, as_json: bool = JsonOpt) -> None:
    """From now on this person's key approves and denies nothing here (audited).
    Countersigned by the node's officer and security lead (the one removed may be one of
    them); the node's last officer or security lead is not removed."""
    stub = admin_stub(config)
    people = json.loads(stub.ApproverList(pb.ApproverListRequest(), timeout=30).json)
    target = next((p for p in people if p["name"] == name), None)
    if target is None:
        raise UserError(f"no approver '{name}' at this node (`scifed node approver list`)")
    state = _registry_state(stub)
    _needs_countersign(state, "remove", name, target["role"], countersign)
    sigs = _countersign(stub, state, "remove", name, target["role"], target["fingerprint"],
                        countersign, countersign_passphrase_file)
    person = json.loads(stub.ApproverRemove(pb.ApproverRemoveRequest(
        name=name, countersignatures=sigs), timeout=30).json)
    show({**person, "countersigned_by": [s.by for s in sigs]}, as_json,
         f"removed approver {person['name']} ({person['role']}, key "
         f"{person['fingerprint']}; {_signed_by(sigs)})")


@budget_app.command("show")
@handle_errors("the node")
def budget_show(dataset_id: str = typer.Argument("", help="Default: every dataset"),
                config: Path = ConfigOpt, as_json: bool = JsonOpt) -> None:
    """Privacy budget spent and left this year, per dataset and per researcher."""
    rows = json.loads(admin_stub(config).BudgetShow(pb.BudgetRequest(
        dataset_id=dataset_id), timeout=30).json)
    if as_json:
        print_json(rows)
        return
    print_table("privacy budget (this year)", ["dataset", "annual ε", "spent ε", "left ε",
                                               "per researcher"],
                [(r["dataset_id"], r["annual_budget"] or "-", f"{r['spent']:g}",
                  "-" if r["left"] is None else f"{r['left']:g}",
                  ", ".join(f"{k}: {v:g}" for k, v in r["by_researcher"].items()))
                 for r in rows])


@alerts_app.command("list")
@handle_errors("the node")
def alerts_list(state: str = typer.Option("open", help="open | cleared | all"),
                config: Path = ConfigOpt, as_json: bool = JsonOpt) -> None:
    """Researchers whose refused queries reached the policy's allowance or run: their
    jobs on the dataset wait for approval until the officer approves one."""
    rows = json.loads(admin_stub(config).AlertsList(pb.AlertsListRequest(
        state="" if state == "all" else state), timeout=30).json)
    if as_json:
        print_json(rows)
        return
    print_table(f"alerts ({state})", ["id", "raised", "researcher", "dataset", "reason",
                                      "state", "cleared"],
                [(a["alert_id"], _ts(a["created_ms"]), a["researcher"], a["dataset_id"],
                  a["reason"], a["state"], _ts(a["cleared_ms"] or 0) or "") for a in rows])


@audit_app.command("list")
@handle_errors("the node")
def audit_list(since: int = typer.Option(0, "--since", help="After this sequence number"),
               limit: int = typer.Option(0, "--limit"), config: Path = ConfigOpt,
               as_json: bool = JsonOpt) -> None:
    """Entries of the audit chain."""
    rows = json.loads(admin_stub(config).AuditList(pb.AuditListRequest(
        since_seq=since, limit=limit), timeout=30).json)
    if as_json:
        print_json(rows)
        return
    print_table("audit log", ["seq", "time", "actor", "action", "subject", "hash"],
                [(e["seq"], _ts(e["ts_ms"]), e["actor"], e["action"], e["subject"],
                  e["hash"][:12]) for e in rows])


@audit_app.command("verify")
@handle_errors("the node")
def audit_verify(against_coordinator: bool = typer.Option(
                     False, "--against-coordinator",
                     help="Also check the chain heads the coordinator recorded"),
                 config: Path = ConfigOpt, as_json: bool = JsonOpt) -> None:
    """Recompute the hash chain; exit 1 if any entry was changed, removed or reordered.
    With --against-coordinator, also compare the chain heads the node sent with its
    heartbeats and results: a rewritten, truncated or wiped tail shows up too."""
    v = json.loads(admin_stub(config).AuditVerify(pb.AuditVerifyRequest(
        against_coordinator=against_coordinator), timeout=60).json)
    if as_json:
        print_json(v)
        if not v["ok"]:
            raise typer.Exit(1)
        return
    if not v["ok"]:
        raise UserError(f"audit chain broken: {v['problem']}")
    extra = ""
    if against_coordinator:
        extra = f"; {v['coordinator_heads_checked']} heads recorded by the coordinator match"
        anchored = v.get("coordinator_head_seq", 0)
        if anchored:
            extra += f", the latest at entry {anchored}"
        if v["head_seq"] > anchored:
            extra += " (newer entries are anchored with the node's next heartbeat)"
    console.print(f"[green]audit chain intact[/]: {v['entries']} entries, head "
                  f"{v['head_seq']} {v['head_hash'][:16]}{extra}")


@audit_app.command("export")
@handle_errors("the node")
def audit_export(fmt: str = typer.Option("jsonl", "--format", help="jsonl | csv"),
                 out: Path | None = typer.Option(None, "--out"), config: Path = ConfigOpt) -> None:
    """The whole chain, for an auditor."""
    text = admin_stub(config).AuditExport(pb.AuditExportRequest(format=fmt), timeout=60).json
    if out:
        out.write_text(text, encoding="utf-8")
        console.print(f"wrote {out}")
    else:
        typer.echo(text, nl=False)


@dataset_app.command("quality")
@handle_errors("the node")
def dataset_quality(dataset_id: str,
                    fast: bool = typer.Option(False, "--fast",
                                              help="19 permutations instead of 99 (CI)"),
                    override: list[str] = typer.Option([], "--override",
                                                       help="Metric to override, e.g. Q5a"),
                    justification: list[str] = typer.Option(
                        [], "--justification", help="Why, one per --override"),
                    out: Path | None = typer.Option(None, "--out",
                                                    help="QualityReport JSON; default "
                                                    "DATASET.quality.json"),
                    config: Path = ConfigOpt,
                    as_json: bool = JsonOpt) -> None:
    """Score a dataset's AI-readiness (governance §3) and publish the summary."""
    if len(override) != len(justification):
        raise UserError("give one --justification for each --override (an officer override "
                        "must say why)")
    req = pb.QualityRequest(dataset_id=dataset_id, fast=fast, overrides=[
        pb.QualityOverride(metric=m, justification=j)
        for m, j in zip(override, justification, strict=True)])
    report = None
    with console.status("scoring") as status:
        for msg in admin_stub(config).DatasetQuality(req, timeout=1800):
            if msg.report_json:
                report = json.loads(msg.report_json)
            else:
                status.update(f"scoring: {msg.step}")
    target = out or Path(f"{dataset_id.rsplit(':', 1)[-1]}.quality.json")
    target.write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")
    if as_json:
        print_json(report)
        return
    print_table(f"quality of {dataset_id}: grade {report['grade']} "
                f"(score {report['score']:.1f}, {report['mode']} mode)",
                ["metric", "dimension", "value", "status", "threshold", "detail"],
                [(m, r["dimension"], _fmt(r["value"]), r["status"], r["threshold"],
                  r["detail"]) for m, r in report["metrics"].items()])
    failed = [g for g in report["gates"].values() if not g["passed"]]
    for g in failed:
        console.print(f"[red]gate {g['metric']} failed:[/] {g['reason']}", highlight=False)
    for o in report["overrides"]:
        console.print(f"override {o['metric']} by {o['by']}: {o['justification']}")
    console.print(f"report written to {target}")


def _fmt(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


catalog_app = typer.Typer(help="This node's own catalog.", no_args_is_help=True)
app.add_typer(catalog_app, name="catalog")


@catalog_app.command("export")
@handle_errors("the node")
def catalog_export(fmt: str = typer.Option("dcat", "--format",
                                           help="dcat (Turtle) | dcat-jsonld | croissant"),
                   out: Path | None = typer.Option(None, "--out",
                                                   help="File (dcat) or directory (croissant)"),
                   config: Path = ConfigOpt) -> None:
    """Every dataset of this node as one DCAT-3 catalog, or Croissant per dataset."""
    text = admin_stub(config).ExportCatalog(pb.ExportCatalogRequest(format=fmt),
                                            timeout=300).json
    if fmt == "croissant" and out:
        out.mkdir(parents=True, exist_ok=True)
        for rid, doc in json.loads(text).items():
            path = out / f"{rid.rsplit(':', 1)[-1]}.croissant.json"
            path.write_text(json.dumps(doc, indent=2, ensure_ascii=False), encoding="utf-8")
            console.print(f"wrote {path}")
    elif out:
        out.write_text(text, encoding="utf-8")
        console.print(f"wrote {out}")
    else:
        typer.echo(text)
