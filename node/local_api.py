"""The node's local API for apps running on the node host: the Flower ClientApp of a
``train`` job asks it, before touching anything, whether it may train, and gets the rows
only through it.

Every grant re-checks what the coordinator cannot vouch for: the officer accepted the
study and attached the dataset, the columns exist with usable types, the label is sane at
this node, and the policy hook (:meth:`NodeLocalServicer.decide`) allows the job and says
whether DP-SGD is required. The socket is ``state_dir/local.sock`` with mode 0600, so only
processes of the node's own account (its SuperNode and the ClientApps it starts) reach it.

DP-SGD accounting lives here too: each round's ClientApp reports the accountant history,
and the next grant hands it back, so ε composes over all rounds of a job (and over a run
resumed from a checkpoint) even though every round runs in a fresh process.
"""

from __future__ import annotations

import io
import json
import os
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import duckdb
import grpc
import numpy as np
from pydantic import ValidationError

from node.approvals import Approvals
from node.audit import AuditLog
from node.budget import BudgetLedger
from node.datasets import DatasetRegistry
from node.policy import PolicyBook, decide
from node.profiling import read_table
from node.store import DatasetRow
from node.studies import NodeStudies
from protos.scifed.v1 import node_local_pb2 as pb
from protos.scifed.v1 import node_local_pb2_grpc as pbg
from scifed.config import format_validation_error
from scifed.errors import UserError
from scifed.filters import compile_filter, quote_identifier
from scifed.grading import min_cell_count
from scifed.rpc import user_errors
from scifed.trainspec import DPSpec, TrainSpec
from scifed.wire import now_ms

SOCKET_NAME = "local.sock"
# Training data travels in one reply; 1 GiB covers ~30M float32 cells.
MAX_MESSAGE_BYTES = 1 << 30
GRPC_OPTIONS = [("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)]
_NUMERIC = {"integer", "number"}



def socket_path(state_dir: Path) -> Path:
    return Path(state_dir) / SOCKET_NAME


@dataclass(frozen=True)
class TrainingDecision:
    """The node's answer for one grant: ``dp`` is the DP-SGD it requires (None: none)."""

    allowed: bool
    reason: str
    dp: DPSpec | None = None


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


class NodeLocalServicer(pbg.NodeLocalServicer):
    def __init__(self, studies: NodeStudies, registry: DatasetRegistry,
                 approvals: Approvals) -> None:
        self.studies = studies
        self.registry = registry
        self.approvals = approvals
        self.audit = AuditLog(registry.store)
        self.ledger = BudgetLedger(registry.store)
        self.node = studies.cfg.name

    # -- the policy decision -----------------------------------------------------------------
    def decide(self, row: DatasetRow, spec: TrainSpec,
               request: pb.TrainingGrantRequest) -> TrainingDecision:
        """The node's policy engine for a training grant: the cell's FL access tightened by
        the officer's override; held for approval where it says so; DP-SGD where policy
        requires it, at most its ε cap; and the target ε charged once per job to the
        dataset's privacy budget (the accountant keeps the spend at or under it)."""
        rec = row.record
        pol = PolicyBook(self.registry.store).effective(rec)
        dec = decide(pol, job_type="train", n_nodes=request.n_nodes or 1, record=rec)
        who = {"job_id": request.job_id, "study_id": request.study_id, "job_type": "train",
               "outcome": dec.outcome, "rule": dec.rule, "reason": dec.reason}
        if dec.outcome == "deny":
            self.audit.append("policy", "task.deny", row.dataset_id, who)
            return TrainingDecision(False, f"node {self.node} denied training: {dec.reason}")
        if dec.outcome == "approval":
            appr = self.approvals.request(
                job_id=request.job_id, dataset_id=row.dataset_id, study_id=request.study_id,
                job_type="train", researcher="", grade=rec["security_grade"],
                reason=dec.reason, spec=json.loads(request.spec_json))
            if appr.state != "approved":
                return TrainingDecision(False, f"node {self.node}: training is {appr.state} "
                                        f"at the approval queue ({appr.approval_id})")
        if pol.fl_dp_required:
            if spec.dp is None:
                return TrainingDecision(False, f"node {self.node}: {rec['security_grade']}/"
                                        f"{rec['sharing_category']} data trains only with "
                                        "DP-SGD; give the job dp.epsilon")
            if pol.fl_epsilon_max is not None and spec.dp.epsilon > pol.fl_epsilon_max:
                return TrainingDecision(False, f"node {self.node}: dp.epsilon "
                                        f"{spec.dp.epsilon} exceeds the training cap "
                                        f"ε={pol.fl_epsilon_max} ({pol.sources['fl_epsilon_max']})")
        if spec.dp is not None:
            try:
                self.ledger.charge_and_release(
                    job_id=request.job_id, dataset_id=row.dataset_id, researcher="",
                    epsilon=spec.dp.epsilon, delta=spec.dp.delta,
                    annual_budget=pol.annual_budget or float("inf"),
                    researcher_budget=None, produce=lambda con: b"")
            except UserError as exc:
                return TrainingDecision(False, f"node {self.node}: {exc}")
        if request.round <= 1:
            self.audit.append("policy", "task.allow", row.dataset_id, who)
        return TrainingDecision(True, dec.reason, spec.dp)

    # -- RPCs ---------------------------------------------------------------------------
    @user_errors
    def TrainingGrant(self, request: pb.TrainingGrantRequest, context) -> pb.TrainingGrantReply:
        spec = _parse_spec(request.spec_json)
        row = self.studies.attached(request.study_id, request.dataset)
        decision = self.decide(row, spec, request)
        if not decision.allowed:
            return pb.TrainingGrantReply(allowed=False, reason=decision.reason,
                                         node_name=self.node)
        features, labels = self.training_rows(row, spec, request.filter)
        key = self.studies.key(request.study_id, request.key_version)
        dp = decision.dp
        return pb.TrainingGrantReply(
            allowed=True, reason=decision.reason, features=npy_bytes(features),
            labels=npy_bytes(labels), study_key=key.secret_bytes(),
            key_version=request.key_version, node_name=self.node,
            dp=pb.DpSettings(enabled=True, epsilon=dp.epsilon, delta=dp.delta,
                             max_grad_norm=dp.max_grad_norm) if dp else None,
            dp_history=self._history(request.job_id, row.dataset_id, request.round))

    @user_errors
    def ReportTraining(self, request: pb.ReportTrainingRequest,
                       context) -> pb.ReportTrainingReply:
        row = self.registry.get(request.dataset)
        history = [[s.noise_multiplier, s.sample_rate, s.steps] for s in request.dp_history]
        with self.registry.store.tx() as con:
            con.execute("INSERT OR REPLACE INTO training_reports VALUES (?,?,?,?,?,?,?,?)",
                        (request.job_id, row.dataset_id, request.round, request.examples,
                         request.epsilon_spent, request.delta, json.dumps(history), now_ms()))
        return pb.ReportTrainingReply(epsilon_spent=request.epsilon_spent)

    # -- data -----------------------------------------------------------------------------
    def training_rows(self, row: DatasetRow, spec: TrainSpec,
                      filter_expr: str) -> tuple[np.ndarray, np.ndarray]:
        """Features (float32) and labels of the rows the job may use, after every check."""
        rec = row.record
        types = {f["name"]: f["type"] for f in rec.get("fields", [])}
        where = [f"{quote_identifier(c)} IS NOT NULL" for c in spec.referenced_columns()]
        params: list = []
        if filter_expr:
            sql, params = compile_filter(filter_expr, types)
            where.insert(0, f"({sql})")
        for col in spec.referenced_columns():
            if col not in types:
                raise UserError(f"node {self.node}: unknown column '{col}' in dataset "
                                f"{row.slug} (columns: {', '.join(types)})")
        wrong = [c for c in spec.features if types[c] not in _NUMERIC]
        if spec.task == "regression" and types[spec.label] not in _NUMERIC:
            wrong.append(spec.label)
        if wrong:
            raise UserError(f"node {self.node}: column(s) {', '.join(wrong)} of {row.slug} "
                            "are not numeric; features (and a regression label) must be")
        cols = ", ".join(quote_identifier(c) for c in spec.referenced_columns())
        path = self.registry.data_path(row.dataset_id)
        con = duckdb.connect()
        try:
            data = con.execute(f"SELECT {cols} FROM {read_table(path)} "
                               f"WHERE {' AND '.join(where)}", params).fetchnumpy()
        except duckdb.Error as exc:
            raise UserError(f"node {self.node}: cannot read {row.slug} "
                            f"({type(exc).__name__})") from None
        finally:
            con.close()
        features = np.column_stack([np.asarray(data[c], dtype=np.float32)
                                    for c in spec.features])
        labels = self._labels(np.asarray(data[spec.label]), spec, row)
        k = min_cell_count(rec["security_grade"], rec["sharing_category"])
        if len(labels) < max(k, 2):
            raise UserError(f"node {self.node}: only {len(labels)} usable row(s) in "
                            f"{row.slug}; training needs at least {max(k, 2)}")
        return features, labels

    def _labels(self, values: np.ndarray, spec: TrainSpec, row: DatasetRow) -> np.ndarray:
        if spec.task == "regression":
            return values.astype(np.float32)
        assert spec.classes is not None  # TrainSpec guarantees it for classification
        index = {c: i for i, c in enumerate(spec.classes)}
        mapped = np.array([index.get(str(v), -1) for v in values], dtype=np.int64)
        outside = int((mapped < 0).sum())
        if outside:
            raise UserError(f"node {self.node}: {outside} row(s) of {row.slug} have a "
                            f"'{spec.label}' value outside the job's classes; list every "
                            "class in `classes`")
        present = len(np.unique(mapped))
        if present < spec.min_node_classes:
            raise UserError(f"node {self.node}: '{spec.label}' takes only {present} of the "
                            f"job's classes in {row.slug}; the job asks every node for at "
                            f"least {spec.min_node_classes} (min_node_classes)")
        return mapped

    def _history(self, job_id: str, dataset_id: str, round_no: int) -> list[pb.AccountantStep]:
        """The accountant history after the latest earlier round of this job."""
        with self.registry.store.tx() as con:
            r = con.execute("SELECT history_json FROM training_reports WHERE job_id=? AND "
                            "dataset_id=? AND round<? ORDER BY round DESC LIMIT 1",
                            (job_id, dataset_id, round_no)).fetchone()
        steps = json.loads(r["history_json"]) if r else []
        return [pb.AccountantStep(noise_multiplier=s, sample_rate=q, steps=n)
                for s, q, n in steps]


def _parse_spec(text: str) -> TrainSpec:
    try:
        return TrainSpec.model_validate_json(text)
    except ValidationError as exc:
        raise UserError(format_validation_error("train spec", exc)) from None


class LocalApi:
    """The local API's gRPC server on its Unix socket (0600), owned by the node process."""

    def __init__(self, studies: NodeStudies, registry: DatasetRegistry, approvals: Approvals,
                 state_dir: Path) -> None:
        self.path = socket_path(state_dir)
        self.servicer = NodeLocalServicer(studies, registry, approvals)
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8),
                                  options=GRPC_OPTIONS)
        pbg.add_NodeLocalServicer_to_server(self.servicer, self.server)

    def start(self) -> None:
        self.path.unlink(missing_ok=True)
        old = os.umask(0o177)
        try:
            self.server.add_insecure_port(f"unix:{self.path}")
            self.server.start()
        finally:
            os.umask(old)

    def stop(self) -> None:
        self.server.stop(grace=2).wait()
        self.path.unlink(missing_ok=True)
