"""Training rounds in this process, for the attacks on training updates: the real
ServerApp strategy (``jobs.train.server_app.HEFedAvg``) drives the real ClientApp
(``jobs.train.client_app.app``) of every island node, which reaches its node's real local
API on its Unix socket (grant, masks, encryption, reveal). Only Flower's transport
(SuperLink, SuperNodes) is left out: :class:`Grid` hands each message to the node's
ClientApp and keeps every reply — what a coordinator sees — and a deviating coordinator
may declare a reply lost while keeping it (``lose``)."""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import yaml
from flwr.app import Context, Message, RecordDict
from islands import ISLANDS

from coordinator import studies
from jobs.spec import load_job
from jobs.train.client_app import app as client_app
from jobs.train.coordinate import release_request
from jobs.train.protocol import PUBLIC_CONTEXT_FILE, RUN_FILE, write_json
from jobs.train.server_app import HEFedAvg
from node.local_api import LocalApi
from node.round_updates import unpack
from scifed.tasks import ReleaseRequest, TaskHeader

FEATURES = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"]


@dataclass
class Seen:
    """One message the coordinator sent and the reply it got."""

    node: str
    message: Message
    reply: Message

    @property
    def kind(self) -> str:
        return self.message.metadata.message_type

    @property
    def round(self) -> int:
        return int(self.message.content.config_records["config"]["round"])

    @property
    def attempt(self) -> int:
        return int(self.message.content.config_records["config"].get("attempt", 1))


@dataclass
class Grid:
    """The part of Flower's Grid the ServerApp uses, delivering in this process."""

    sockets: dict[str, Path]
    seen: list[Seen] = field(default_factory=list)
    lose: Callable[[Seen], bool] = lambda seen: False
    # a deviating coordinator's change to what it sends a node: (node, message) -> message
    rewrite: Callable[[str, Message], Message] = lambda name, msg: msg
    _replies: dict[str, Message] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.ids = {name: i + 1 for i, name in enumerate(sorted(self.sockets))}
        self.names = {i: name for name, i in self.ids.items()}

    def get_nodes(self) -> list[SimpleNamespace]:
        return [SimpleNamespace(name=n, node_id=i, status="online")
                for n, i in self.ids.items()]

    def push_messages(self, messages) -> list[str]:
        ids = []
        for msg in messages:
            mid = uuid.uuid4().hex
            msg.metadata.__dict__["_message_id"] = mid  # the SuperLink's part
            name = self.names[msg.metadata.dst_node_id]
            context = Context(run_id=1, node_id=msg.metadata.dst_node_id,
                              node_config={"local-api": f"unix:{self.sockets[name]}"},
                              state=RecordDict(), run_config={})
            msg = self.rewrite(name, msg)
            seen = Seen(name, msg, client_app(msg, context))
            self.seen.append(seen)
            if not self.lose(seen):
                self._replies[mid] = seen.reply
            ids.append(mid)
        return ids

    def pull_messages(self, ids) -> list[Message]:
        return [self._replies.pop(i) for i in list(ids) if i in self._replies]

    def updates(self, node: str, round_no: int, attempt: int = 1,
                kind: str = "train") -> Seen:
        return next(s for s in self.seen if s.node == node and s.kind == kind
                    and s.round == round_no and s.attempt == attempt)


def train_job(fed, nodes=tuple(ISLANDS), **train) -> dict:
    """A `train` job over ``nodes`` (the three islands), as the coordinator writes it for
    the ServerApp (job spec as submitted)."""
    pooled = fed.pooled
    spec = {"features": FEATURES, "label": "species", "task": "classification",
            "classes": ["Adelie", "Chinstrap", "Gentoo"],
            "model": {"kind": "logistic_regression"}, "rounds": 2, "local_epochs": 5,
            "batch_size": 16, "lr": 0.5, "validation_split": 0.1, "min_node_classes": 1,
            "round_timeout": 5,
            "standardize": {f: [float(pooled[f].mean()), float(pooled[f].std())]
                            for f in FEATURES}, **train}
    doc = {"study": "penguins", "type": "train",
           "datasets": {n: "penguins" for n in nodes}, "train": spec}
    return load_job(yaml.safe_dump(doc), "job.yaml").to_dict()


class Rounds:
    """Every node's local API on its socket (the islands', or ``nodes``), and runs of the
    ServerApp over them."""

    def __init__(self, fed, tmp_path: Path, nodes=tuple(ISLANDS)) -> None:
        from scifed.pki import refresh_crl

        self.fed, self.tmp, self.nodes = fed, tmp_path, sorted(nodes)
        refresh_crl(fed.ca_dir)  # the CA's fresh CRL, as the coordinator forwards it
        crl = (fed.ca_dir / "crl.pem").read_bytes()
        ca = (fed.ca_dir / "ca.crt").read_bytes()
        self.apis = {}
        for name in self.nodes:
            core = fed.nodes[name]
            core.studies.trust.offer(crl, via="task")
            self.apis[name] = LocalApi(core.gate, core.cfg.state_dir, apps=None, ca_pem=ca)
            self.apis[name].start()

    def close(self) -> None:
        for api in self.apis.values():
            api.stop()

    def run(self, job_id: str, *, min_nodes: int = 2,
            lose: Callable[[Seen], bool] = lambda seen: False,
            rewrite: Callable[[str, Message], Message] | None = None,
            **train) -> tuple[Grid, Path]:
        """Train ``job_id`` to the end; the grid (what the coordinator saw) and the job
        directory (its checkpoint and summed ciphertexts)."""
        job_dir = self.prepare(job_id, min_nodes=min_nodes, **train)
        grid = self.grid(lose=lose)
        if rewrite is not None:
            grid.rewrite = rewrite
        self.serve(job_dir, grid)
        return grid, job_dir

    def prepare(self, job_id: str, *, min_nodes: int = 2, **train) -> Path:
        """The job directory the coordinator writes for the ServerApp."""
        fed = self.fed
        job_dir = self.tmp / job_id
        job_dir.mkdir(parents=True)
        spec = train_job(fed, self.nodes, **train)
        claims = fed.coordinator.jobs.seal_claims(self.nodes)
        write_json(job_dir / RUN_FILE, {
            "job_id": job_id, "study_id": fed.study_id, "key_version": 1,
            "spec": spec["train"], "job_spec": spec,
            "datasets": {n: "penguins" for n in self.nodes}, "filter": "",
            "min_nodes": min_nodes, "researcher": fed.researcher,
            "researcher_claim": json.loads(fed.claim_json()), "seal_claims": claims})
        (job_dir / PUBLIC_CONTEXT_FILE).write_bytes(
            studies.get_study_public_context(fed.coordinator.db, fed.study_id))
        return job_dir

    def grid(self, lose: Callable[[Seen], bool] = lambda seen: False,
             nodes: list[str] | None = None) -> Grid:
        """A grid over ``nodes`` (default: all; a node left out is offline)."""
        return Grid({n: api.path for n, api in self.apis.items()
                     if nodes is None or n in nodes}, lose=lose)

    def serve(self, job_dir: Path, grid: Grid, run_id: int = 1) -> None:
        """One run of the ServerApp on ``job_dir`` (it resumes from a checkpoint)."""
        from flwr.supercore.task_identity import TaskIdentity

        before = (TaskIdentity._task_id, TaskIdentity._run_id,  # noqa: SLF001
                  TaskIdentity._node_id)  # noqa: SLF001
        # the ServerApp process's part
        TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, run_id, 0
        try:
            HEFedAvg(job_dir, run_id=run_id).run(grid)
        finally:
            (TaskIdentity._task_id, TaskIdentity._run_id,  # noqa: SLF001
             TaskIdentity._node_id) = before  # noqa: SLF001


def kept_updates(fed, node: str, job_id: str, round_no: int) -> dict:
    """The plain update ``node`` recorded for the round (what it contributed), by vector
    name, read from its node.db as the node keeps it."""
    db = fed.nodes[node].cfg.state_dir / "node.db"
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        (output,) = con.execute("SELECT output FROM job_answers WHERE job_id=? AND stage=?",
                                (job_id, f"plain.train#{round_no}")).fetchone()
    finally:
        con.close()
    return {v.name: v for v in unpack(output)}


def task_header(fed, job_dir: Path, node: str, n_nodes: int) -> TaskHeader:
    """The task header the coordinator gives ``node`` for the training job in ``job_dir``."""
    run = json.loads((job_dir / "run.json").read_text())
    return TaskHeader(
        job_id=run["job_id"], study_id=fed.study_id, key_version=1, job_type="train",
        researcher=fed.researcher, n_nodes=n_nodes, dataset="penguins",
        spec=run["job_spec"],
        key_share=studies.sealed_share(fed.coordinator.db, fed.study_id, 1, node),
        researcher_claim=json.loads(fed.claim_json()))


def coordinator_request(fed, job_dir: Path, checkpoint: dict, node: str,
                        nodes: list[str]) -> ReleaseRequest:
    """The release request the coordinator's own code makes for ``node``, every member of
    ``nodes`` a possible reviewer."""
    driver = SimpleNamespace(header=lambda run, n: task_header(fed, job_dir, n, len(nodes)))
    request = release_request(driver, None, job_dir, checkpoint, node)
    return request.model_copy(update={
        "reviewer_claims": fed.coordinator.jobs.seal_claims(sorted(nodes))})
