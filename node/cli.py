"""`scifed node ...`: the data officer's commands."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path

import grpc
import typer

from protos.scifed.v1 import node_admin_pb2 as pb
from protos.scifed.v1 import node_admin_pb2_grpc as pbg
from scifed.config import NodeConfig, TlsConfig, load_config, write_config
from scifed.console import console, handle_errors, print_json, print_table
from scifed.errors import UserError

app = typer.Typer(help="Run a platform node and manage its datasets (data officer).",
                  no_args_is_help=True)
dataset_app = typer.Typer(help="Register and describe datasets.", no_args_is_help=True)
app.add_typer(dataset_app, name="dataset")

ConfigOpt = typer.Option(Path("node.yaml"), "--config", "-c", envvar="SCIFED_NODE_CONFIG",
                         help="The node's config file.")


def admin_stub(config: Path) -> pbg.NodeAdminStub:
    cfg = load_config(config, NodeConfig)
    sock = cfg.socket_path
    if not sock.exists():
        raise UserError(f"node {cfg.name} is not running (no admin socket at {sock}); "
                        f"start it with `scifed node serve --config {config}`")
    return pbg.NodeAdminStub(grpc.insecure_channel(f"unix:{sock}"))


@app.command()
@handle_errors("the CA")
def init(name: str = typer.Option(..., help="Node name (lower-case, a-z0-9-)"),
         platform: str = typer.Option(..., help="The platform this node serves"),
         coordinator: str = typer.Option(..., help="Coordinator address host:port"),
         dir: Path = typer.Option(Path("."), "--dir", help="Deployment directory")) -> None:
    """Make the node's key pair and CSR (the key never leaves this directory) and node.yaml."""
    from scifed.pki import make_key_and_csr

    dir.mkdir(parents=True, exist_ok=True)
    cfg = NodeConfig(name=name, platform=platform, coordinator=coordinator,
                     data_dir=dir / "data", state_dir=dir / "state",
                     tls=TlsConfig(ca=dir / "pki" / "ca.crt", cert=dir / "pki" / f"{name}.crt",
                                   key=dir / "pki" / "node.key"))
    if (dir / "node.yaml").exists():
        raise UserError(f"{dir / 'node.yaml'} already exists")
    csr = make_key_and_csr(dir / "pki", name=name, role="node")
    cfg.data_dir.mkdir(exist_ok=True)
    write_config(dir / "node.yaml", cfg)
    console.print(f"node [bold]{name}[/] initialised in {dir}\n"
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


@app.command()
@handle_errors("the node")
def status(config: Path = ConfigOpt, as_json: bool = typer.Option(False, "--json")) -> None:
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


def _print_summary(d: pb.DatasetSummary) -> None:
    print_table("dataset registered", ["id", "title", "grade", "category", "rows", "published as"],
                [(d.dataset_id, d.title, d.grade, d.category, d.record_count, d.publication)])


@dataset_app.command("add")
@handle_errors("the node")
def dataset_add(file: str = typer.Argument(..., help="Data file (CSV or Parquet) inside the "
                                           "node's data directory"),
                meta: Path = typer.Option(..., "--meta", help="Metadata YAML"),
                dataset_id: str = typer.Option("", "--id", help="Short id; default: file name"),
                config: Path = ConfigOpt, as_json: bool = typer.Option(False, "--json")) -> None:
    """Register a data file with its metadata."""
    path = Path(file)
    # Paths typed by the officer are relative to where they stand, not to the node.
    sent = str(path.resolve()) if not path.is_absolute() and path.exists() else file
    r = admin_stub(config).AddDataset(pb.AddDatasetRequest(
        path=sent, meta_yaml=_read_meta(meta), meta_name=str(meta), dataset_id=dataset_id),
        timeout=120)
    print_json(json.loads(r.record_json)) if as_json else _print_summary(r.summary)


@dataset_app.command("update")
@handle_errors("the node")
def dataset_update(dataset_id: str, meta: Path | None = typer.Option(None, "--meta"),
                   refresh_data: bool = typer.Option(False, "--refresh-data",
                                                     help="Re-read the data file"),
                   config: Path = ConfigOpt) -> None:
    """Replace a dataset's metadata and/or re-read its file."""
    r = admin_stub(config).UpdateDataset(pb.UpdateDatasetRequest(
        dataset_id=dataset_id, meta_yaml=_read_meta(meta) if meta else "",
        meta_name=str(meta or ""), refresh_data=refresh_data), timeout=120)
    _print_summary(r.summary)


@dataset_app.command("remove")
@handle_errors("the node")
def dataset_remove(dataset_id: str, config: Path = ConfigOpt) -> None:
    """Unregister a dataset (its file is left in place) and withdraw it from the catalog."""
    r = admin_stub(config).RemoveDataset(pb.DatasetRef(dataset_id=dataset_id), timeout=30)
    console.print(f"removed {r.dataset_id}")


@dataset_app.command("list")
@handle_errors("the node")
def dataset_list(config: Path = ConfigOpt, as_json: bool = typer.Option(False, "--json")) -> None:
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
                 as_json: bool = typer.Option(False, "--json")) -> None:
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
def studies_list(config: Path = ConfigOpt, as_json: bool = typer.Option(False, "--json")) -> None:
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
                   config: Path = ConfigOpt) -> None:
    """Join a study, contributing the given datasets (they never leave the node)."""
    from protos.scifed.v1 import federation_pb2 as fpb

    names = [d.strip() for d in datasets.split(",") if d.strip()]
    st = admin_stub(config).AnswerStudy(fpb.AnswerInvitationRequest(
        study_id=study_id, accept=True, datasets=names), timeout=60)
    console.print(f"accepted study [bold]{st.name}[/] with {', '.join(names)}; "
                  f"study status: {st.status}")


@studies_app.command("decline")
@handle_errors("the node")
def studies_decline(study_id: str, config: Path = ConfigOpt) -> None:
    """Decline (or leave) a study."""
    from protos.scifed.v1 import federation_pb2 as fpb

    st = admin_stub(config).AnswerStudy(fpb.AnswerInvitationRequest(
        study_id=study_id, accept=False), timeout=60)
    console.print(f"declined study [bold]{st.name}[/]; study status: {st.status}")
