"""The node's side of a `train` job: the checks it makes before it lets a model see its
rows, and the release of the final model.

:class:`TrainingGate` is one set of checks used twice. The coordinator asks every node
named by a job (`train.check`) before it starts a Flower run, so a refusal — a policy
that forbids training, an approval still pending, a missing column, a single-class label,
an ε the budget cannot pay — fails the job with that node's reason, with nothing charged
and no Flower run left behind. Each round's ClientApp then asks again through the local
API (:mod:`node.local_api`): the coordinator cannot vouch for the node, and the grant is
where ε is charged (once per job) and the rows are handed over.

The release node must itself be a member that attached its dataset, as for statistics;
the coordinator, which relays the ciphertexts, can read none of it.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable
from dataclasses import dataclass

import duckdb
import numpy as np
from pydantic import ValidationError

from node.approvals import Approvals, Waiting
from node.audit import AuditLog
from node.budget import BudgetLedger
from node.datasets import DatasetRegistry
from node.policy import PolicyBook, decide
from node.profiling import read_table
from node.store import DatasetRow
from node.studies import NodeStudies
from node.tasks import json_task
from scifed.config import format_validation_error
from scifed.errors import UserError
from scifed.filters import compile_filter, quote_identifier
from scifed.fl.protocol import average, metrics_history
from scifed.grading import Access, aggregate_access, min_cell_count
from scifed.sealing import (
    SealKeyClaim,
    progress_context,
    result_context,
    seal,
    verify_claim,
)
from scifed.trainspec import DPSpec, TrainSpec
from scifed.wire import b64d, b64e

_NUMERIC = {"integer", "number"}


@dataclass(frozen=True)
class TrainingAsk:
    """Who asks to train on which dataset: the same fields from `train.check` and from a
    ClientApp's grant request."""

    job_id: str
    study_id: str
    dataset: str
    spec_json: str
    filter: str
    researcher: str
    n_nodes: int
    round: int  # 0 for the coordinator's check before the run


@dataclass(frozen=True)
class TrainingDecision:
    """The node's answer: ``dp`` is the DP-SGD it requires (None: none)."""

    allowed: bool
    reason: str
    dp: DPSpec | None = None


def parse_spec(text: str) -> TrainSpec:
    try:
        return TrainSpec.model_validate_json(text)
    except ValidationError as exc:
        raise UserError(format_validation_error("train spec", exc)) from None


class TrainingGate:
    def __init__(self, studies: NodeStudies, registry: DatasetRegistry,
                 approvals: Approvals) -> None:
        self.studies = studies
        self.registry = registry
        self.approvals = approvals
        self.audit = AuditLog(registry.store)
        self.ledger = BudgetLedger(registry.store)
        self.node = studies.cfg.name

    # -- the coordinator's check before the run ----------------------------------------------
    def check(self, req: dict) -> dict:
        """`train.check`: everything a grant would check, charging nothing and reading no
        rows out. A pending approval answers "waiting" (the coordinator asks again)."""
        ask = TrainingAsk(job_id=req["job_id"], study_id=req["study_id"],
                          dataset=req["dataset"], spec_json=json.dumps(req["train"]),
                          filter=req.get("filter") or "", researcher=req.get("researcher", ""),
                          n_nodes=int(req["n_nodes"]), round=0)
        spec = parse_spec(ask.spec_json)
        row = self.studies.attached(ask.study_id, ask.dataset)
        decision = self.decide(row, spec, ask, charge=False)
        if not decision.allowed:
            raise UserError(decision.reason)
        _, labels = self.rows(row, spec, ask.filter)
        return {"rows": int(len(labels)), "dp": decision.dp is not None}

    # -- the policy decision -----------------------------------------------------------------
    def decide(self, row: DatasetRow, spec: TrainSpec, ask: TrainingAsk, *,
               charge: bool) -> TrainingDecision:
        """The node's policy engine for training: the cell's FL access tightened by the
        officer's override; held for approval where it says so; DP-SGD where policy
        requires it, at most its ε cap; and the target ε charged once per job to the
        dataset's and the researcher's budgets (the accountant keeps the spend at or under
        it). The budget is checked before the officer is asked, so a job it cannot pay is
        refused at once. With ``charge`` false, a pending approval raises :class:`Waiting`
        and nothing is charged."""
        rec = row.record
        pol = PolicyBook(self.registry.store).effective(rec)
        dec = decide(pol, job_type="train", n_nodes=ask.n_nodes or 1, record=rec)
        who = {"job_id": ask.job_id, "study_id": ask.study_id, "researcher": ask.researcher,
               "job_type": "train", "outcome": dec.outcome, "rule": dec.rule,
               "reason": dec.reason}
        if dec.outcome == "deny":
            self.audit.append("policy", "task.deny", row.dataset_id, who)
            return TrainingDecision(False, f"node {self.node} denied training: {dec.reason}")
        if pol.fl_dp_required and spec.dp is None:
            return TrainingDecision(False, f"node {self.node}: {rec['security_grade']}/"
                                    f"{rec['sharing_category']} data trains only with "
                                    "DP-SGD; give the job dp.epsilon")
        if (spec.dp is not None and pol.fl_epsilon_max is not None
                and spec.dp.epsilon > pol.fl_epsilon_max):  # the cap holds whenever DP is used
            return TrainingDecision(False, f"node {self.node}: dp.epsilon "
                                    f"{spec.dp.epsilon} exceeds the training cap "
                                    f"ε={pol.fl_epsilon_max} ({pol.sources['fl_epsilon_max']})")
        budget = None
        if spec.dp is not None:  # a job the budget cannot pay is not put to the officer
            budget = {"job_id": ask.job_id, "dataset_id": row.dataset_id,
                      "researcher": ask.researcher, "epsilon": spec.dp.epsilon,
                      "annual_budget": pol.annual_budget or float("inf"),
                      "researcher_budget": pol.researcher_budget}
            try:
                if not charge:  # a grant's charge below makes the same check, atomically
                    self.ledger.check(**budget)
            except UserError as exc:
                return TrainingDecision(False, f"node {self.node}: {exc}")
        if dec.outcome == "approval":
            try:
                self.approvals.require(  # only the check before the run asks the officer
                    self.node, create=not charge, job_id=ask.job_id, dataset_id=row.dataset_id,
                    study_id=ask.study_id, job_type="train", researcher=ask.researcher,
                    grade=rec["security_grade"], reason=dec.reason,
                    spec=json.loads(ask.spec_json))
            except Waiting as wait:
                if not charge:
                    raise
                return TrainingDecision(False, str(wait))
            except UserError as exc:
                return TrainingDecision(False, str(exc))
        if budget is not None and charge:
            try:
                self.ledger.charge_and_release(**budget, delta=spec.dp.delta,
                                               produce=lambda con: b"")
            except UserError as exc:  # spent by another job since the check
                return TrainingDecision(False, f"node {self.node}: {exc}")
        if ask.round <= 1:
            self.audit.append("policy", "task.allow", row.dataset_id,
                              {**who, "stage": "grant" if charge else "check"})
        return TrainingDecision(True, dec.reason, spec.dp)

    # -- data -----------------------------------------------------------------------------
    def rows(self, row: DatasetRow, spec: TrainSpec,
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


def handlers(gate: TrainingGate) -> dict[str, Callable[[bytes], bytes]]:
    """Task kinds for the node's handler table."""
    return {"train.check": json_task(gate.check),
            "train.progress": json_task(lambda req: progress(gate.studies, req)),
            "train.release": json_task(lambda req: release(gate.studies, req))}


def _releasable(studies: NodeStudies, req: dict):
    """The study key to decrypt with, once the release node's own dataset in the study
    shows that pooled results may leave without the officer."""
    row = studies.attached(req["study_id"], req["dataset"])
    grade, category = row.record["security_grade"], row.record["sharing_category"]
    if aggregate_access(grade, category) is not Access.AUTO:
        raise UserError(f"node {studies.cfg.name}: releasing results computed on {grade} "
                        f"{category} data needs the data officer's approval")
    return studies.key(req["study_id"], int(req["key_version"]))


def _sealed_to_researcher(studies: NodeStudies, req: dict, plain: dict,
                          context: bytes) -> str:
    claim = SealKeyClaim.from_dict(req["researcher_claim"])
    public = verify_claim(claim, studies.cfg.tls.ca.read_bytes(), expect_role="researcher")
    return b64e(seal(public, json.dumps(plain).encode(), context=context))


def progress(studies: NodeStudies, req: dict) -> dict:
    """{"sealed": ...}: the pooled metrics one round's replies carry — round r's training
    loss and the validation of the model after round r-1 — sealed to the researcher, so
    `scifed job watch` shows them while the job runs. The same numbers are in the final
    result; they are only released earlier."""
    key = _releasable(studies, req)
    spec = TrainSpec.model_validate(req["spec"])
    r = int(req["round"])
    sums = {r: key.decrypt(b64d(req["metrics"]))}
    entries = [h for h in metrics_history(spec.task, sums, None, r) if len(h) > 1]
    return {"sealed": _sealed_to_researcher(studies, req, {"round": r, "metrics": entries},
                                            progress_context(req["job_id"], r))}


def release(studies: NodeStudies, req: dict) -> dict:
    """{"sealed": ...}: the model (torch state_dict bytes), metrics per round and ε per
    node, sealed to the researcher whose claim the federation CA vouches for."""
    import torch

    from scifed.models import build_model, vector_to_model

    key = _releasable(studies, req)
    spec = TrainSpec.model_validate(req["spec"])
    theta = average(key.decrypt(b64d(req["model"])))
    model = build_model(spec.model, len(spec.features), spec.n_outputs, scaling=spec.scaling(),
                        target_scaling=spec.target_scaling())
    vector_to_model(model, theta)
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    sums = {int(r): key.decrypt(b64d(b)) for r, b in req["metrics"].items()}
    final = key.decrypt(b64d(req["final_metrics"]))
    job_id = req["job_id"]
    result = {
        "type": "train",
        "model": {"kind": spec.model.kind, "hidden": spec.model.hidden,
                  "features": spec.features, "label": spec.label, "task": spec.task,
                  "classes": spec.classes, "standardize": spec.standardize,
                  "state_dict": b64e(buf.getvalue())},
        "metrics": metrics_history(spec.task, sums, final, int(req["rounds_done"])),
        "epsilon": req["epsilon"],
        "dp": spec.dp.model_dump() if spec.dp else None,
        "meta": {"job_id": job_id, "study_id": req["study_id"],
                 "contributors": req["contributors"], "dropped": req["dropped"],
                 "contributors_by_round": req["contributors_by_round"],
                 "released_by": studies.cfg.name,
                 "released_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}}
    return {"sealed": _sealed_to_researcher(studies, req, result, result_context(job_id))}
