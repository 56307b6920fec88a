"""What a node does for each task kind the coordinator sends.

Before touching data every handler asks the node's own policy, whatever the coordinator
says: the officer accepted the study and attached this dataset; the dataset's policy
cell, tightened by the officer's override, admits the job (else deny, or hold it in the
approval queue until a person decides); differential privacy where policy demands it,
charged to the budget ledger atomically with the output; the differencing guard. Every
decision and release goes into the audit chain. Contributions leave only encrypted
under the study key; state a release node keeps between rounds travels sealed under a
key only study members can derive.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from node.approvals import Approvals, Waiting
from node.audit import AuditLog
from node.budget import BudgetLedger
from node.datasets import DatasetRegistry
from node.dp import add_noise, clipping_bounds
from node.guard import check_and_record, row_mask
from node.jobs import quality, stats
from node.jobs.quantiles import QuantileSearch, count_le
from node.policy import Decision, EffectivePolicy, PolicyBook, decide
from node.store import DatasetRow
from node.studies import NodeStudies
from scifed.errors import UserError
from scifed.filters import compile_filter
from scifed.he import StudyKey, open_box, seal_box
from scifed.jobspec import JobSpec
from scifed.record import CatalogRecord
from scifed.sealing import SealKeyClaim, result_context, seal, verify_claim
from scifed.wire import b64d, b64e


@dataclass(frozen=True)
class Gate:
    row: DatasetRow
    spec: JobSpec
    filter_sql: tuple | None
    policy: EffectivePolicy
    decision: Decision

    @property
    def k(self) -> int:
        return self.policy.min_cell_count


def json_task(fn: Callable[[dict], dict]) -> Callable[[bytes], bytes]:
    """A handler on JSON payloads; a task held for approval answers {"waiting": why}."""
    def run(payload: bytes) -> bytes:
        try:
            return json.dumps(fn(json.loads(payload))).encode()
        except Waiting as wait:
            return json.dumps({"waiting": str(wait)}).encode()
    return run


class JobTasks:
    def __init__(self, studies: NodeStudies, registry: DatasetRegistry,
                 approvals: Approvals) -> None:
        self.studies = studies
        self.registry = registry
        self.store = registry.store
        self.audit = AuditLog(self.store)
        self.policies = PolicyBook(self.store)
        self.approvals = approvals
        self.ledger = BudgetLedger(self.store)
        self.node = studies.cfg.name

    def handlers(self) -> dict[str, Callable[[bytes], bytes]]:
        return {"study.keygen": self.studies.generate_key,
                "job.cancelled": json_task(lambda req: {"withdrawn": self.approvals.withdraw(
                    req["job_id"], req.get("researcher", ""))}),
                "stats.vocab": json_task(self.vocab),
                "stats.compute": json_task(self.compute),
                "stats.count": json_task(self.count),
                "stats.release": json_task(self.release),
                "quality.vocab": json_task(self.vocab),
                "quality.compute": json_task(self.quality_compute),
                "quality.release": json_task(self.quality_release)}

    # -- the node's own checks --------------------------------------------------------------
    def _gate(self, req: dict, *, audit: bool = True) -> Gate:
        row = self.studies.attached(req["study_id"], req["dataset"])
        rec = row.record
        spec = JobSpec.model_validate(req["spec"])
        pol = self.policies.effective(rec)
        requested = spec.stats.dp.epsilon if spec.stats and spec.stats.dp else None
        # `dp` without an ε supplies clipping bounds for the nodes whose policy requires
        # DP (at their per-query ε); a node whose policy does not answers exactly, and the
        # result's privacy report lists only the nodes that added noise.
        if spec.stats and spec.stats.dp and requested is None and pol.epsilon_per_query:
            requested = pol.epsilon_per_query
        dec = decide(pol, job_type=spec.type, n_nodes=int(req.get("n_nodes", 1)), record=rec,
                     requested_epsilon=requested)
        who = {"job_id": req["job_id"], "study_id": req["study_id"],
               "researcher": req.get("researcher", ""), "job_type": spec.type,
               "outcome": dec.outcome, "rule": dec.rule, "reason": dec.reason}
        if dec.outcome == "deny":
            self.audit.append("policy", "task.deny", row.dataset_id, who)
            raise UserError(f"node {self.node} denied the task: {dec.reason}")
        if dec.outcome == "approval":
            self.approvals.require(
                self.node, job_id=req["job_id"], dataset_id=row.dataset_id,
                study_id=req["study_id"], job_type=spec.type,
                researcher=req.get("researcher", ""), grade=rec["security_grade"],
                reason=dec.reason, spec=req["spec"])
        elif audit:
            self.audit.append("policy", "task.allow", row.dataset_id, who)
        types = {f["name"]: f["type"] for f in rec.get("fields", [])}
        flt = compile_filter(spec.filter, types) if spec.filter else None
        return Gate(row, spec, flt, pol, dec)

    def _key(self, req: dict) -> StudyKey:
        return self.studies.key(req["study_id"], int(req["key_version"]))

    # -- phases -------------------------------------------------------------------------------
    def vocab(self, req: dict) -> dict:
        """Categories this node holds (group values, labels, ...), sealed for members."""
        g = self._gate(req)
        path = self.registry.data_path(g.row.dataset_id)
        if g.spec.type == "quality":
            values = quality.vocabulary(path, CatalogRecord.model_validate(g.row.record),
                                        g.spec.quality)
        else:
            values = stats.vocabulary(path, g.spec.stats, g.filter_sql)
        box = self._key(req).aead_key("stats-vocabulary")
        return {"vocabulary": b64e(seal_box(box, json.dumps(values).encode(),
                                            req["job_id"].encode()))}

    def _vocabulary(self, req: dict) -> dict[str, list[str]]:
        """The union of every contributing node's categories, opened here."""
        box = self._key(req).aead_key("stats-vocabulary")
        union: dict[str, set[str]] = {}
        for blob in req.get("vocabularies", []):
            part = json.loads(open_box(box, b64d(blob), req["job_id"].encode()))
            for col, values in part.items():
                union.setdefault(col, set()).update(values)
        return {col: sorted(values) for col, values in union.items()}

    def compute(self, req: dict) -> dict:
        """This node's encrypted contribution, released once: guard, DP and the budget
        charge are settled in the same transaction that records the release."""
        g = self._gate(req, audit="vocabularies" not in req)
        key = self._key(req)
        path = self.registry.data_path(g.row.dataset_id)
        spec, vocab, job_id = g.spec.stats, self._vocabulary(req), req["job_id"]
        sha = g.row.record["distributions"][0]["sha256"]
        mask = row_mask(path, g.filter_sql) if g.policy.query_auditing else None
        report: dict = {}
        release = {"job_id": job_id, "researcher": req.get("researcher", ""),
                   "rows_guarded": mask is not None}
        if g.decision.dp:
            release |= {"epsilon": g.decision.epsilon, "delta": 0.0}

        def produce(con) -> bytes:
            if mask is not None:
                check_and_record(con, job_id=job_id, dataset_id=g.row.dataset_id,
                                 sha256=sha, mask=mask, k=g.k)
            if g.decision.dp:
                bounds = clipping_bounds(spec, g.row.record)
                vec = stats.compute(path, spec, vocab, k=g.k, filter_sql=g.filter_sql,
                                    clip=bounds)
                report.update(add_noise(vec, stats.Layout.build(spec, vocab), spec, bounds,
                                        g.decision.epsilon))
            else:
                vec = stats.compute(path, spec, vocab, k=g.k, filter_sql=g.filter_sql)
            AuditLog.append_in(con, "policy", "task.release", g.row.dataset_id, release)
            return key.encrypt(vec)

        if g.decision.dp:
            blob = self.ledger.charge_and_release(
                job_id=job_id, dataset_id=g.row.dataset_id,
                researcher=req.get("researcher", ""), epsilon=g.decision.epsilon,
                delta=0.0, annual_budget=g.policy.annual_budget or float("inf"),
                researcher_budget=g.policy.researcher_budget, produce=produce)
        else:
            with self.store.tx() as con:
                blob = produce(con)
        dp = ({"epsilon": g.decision.epsilon, "delta": 0.0, **report}
              if g.decision.dp else None)
        return {"ciphertext": b64e(blob), "k": g.k, "dp": dp}

    def quality_compute(self, req: dict) -> dict:
        """Sufficient statistics of the quality scorecard (governance §3.4), encrypted."""
        g = self._gate(req, audit=False)
        if g.decision.dp:
            raise UserError(f"node {self.node}: federated quality reports are not available "
                            "where policy requires differential privacy")
        record = CatalogRecord.model_validate(g.row.record)
        vec = quality.compute(self.registry.data_path(g.row.dataset_id), record,
                              g.spec.quality, self._vocabulary(req), k=g.k)
        with self.store.tx() as con:
            AuditLog.append_in(con, "policy", "task.release", g.row.dataset_id,
                               {"job_id": req["job_id"], "researcher": req.get("researcher", ""),
                                "job_type": "quality"})
        return {"ciphertext": b64e(self._key(req).encrypt(vec)), "k": g.k, "dp": None}

    def quality_release(self, req: dict) -> dict:
        g = self._gate(req, audit=False)
        total = self._key(req).decrypt(b64d(req["aggregate"]))
        result = quality.decode(total, g.spec.quality, self._vocabulary(req), k=int(req["k"]))
        return self._seal(req, g, {"type": "quality", **result})

    def count(self, req: dict) -> dict:
        g = self._gate(req, audit=False)
        key = self._key(req)
        query = json.loads(open_box(key.aead_key("stats-query"), b64d(req["query"]),
                                    req["job_id"].encode()))
        path = self.registry.data_path(g.row.dataset_id)
        parts = [count_le(path, col, query[col], g.filter_sql) for col in sorted(query)]
        return {"ciphertext": b64e(key.encrypt(np.concatenate(parts)))}

    def release(self, req: dict) -> dict:
        """Decrypt the pooled vector, apply the aggregate-level rules, and either ask for
        another round (exact quantiles) or seal the result to the researcher."""
        g = self._gate(req, audit=False)  # the release node must itself be a member
        spec = g.spec
        key = self._key(req)
        job_id, k = req["job_id"], int(req["k"])
        total = key.decrypt(b64d(req["aggregate"]))
        state_key, aad = key.aead_key("stats-state"), job_id.encode()
        dp_used = req.get("dp") or {}
        if "state" not in req:
            vocab = self._vocabulary(req)
            result = stats.decode(total, spec.stats, vocab, k=k, noisy=bool(dp_used))
            search = None
            if spec.stats.quantiles:
                pooled_n = stats.pooled_quantile_n(total, spec.stats, vocab)
                search = QuantileSearch.start(spec.stats, pooled_n, k=k)
        else:
            state = json.loads(open_box(state_key, b64d(req["state"]), aad))
            result = state["result"]
            search = QuantileSearch.from_json(state["search"])
            counts, offset = {}, 0
            for col, thresholds in sorted(search.thresholds().items()):
                counts[col] = [stats.pooled_count(v, f"count of {col} below a threshold")
                               for v in total[offset:offset + len(thresholds)]]
                offset += len(thresholds)
            search.update(counts)
        if search is not None and not search.done:
            state = {"result": result, "search": search.to_json()}
            return {"state": b64e(seal_box(state_key, json.dumps(state).encode(), aad)),
                    "query": b64e(seal_box(key.aead_key("stats-query"),
                                           json.dumps(search.thresholds()).encode(), aad))}
        if search is not None:
            result["quantiles"] = search.result()
            result["quantile_rounds"] = search.rounds
            if search.refused:
                notes = result.setdefault("suppression", {}).setdefault("notes", [])
                notes += [f"quantiles of {c}: {why}" for c, why in search.refused.items()]
        if dp_used:
            result["privacy"] = dp_used
        return self._seal(req, g, {"type": "stats", **result})

    def _seal(self, req: dict, g: Gate, result: dict) -> dict:
        """Seal a released result to the researcher whose certified key the job carries."""
        job_id = req["job_id"]
        result["meta"] = {"job_id": job_id, "study_id": req["study_id"],
                          "contributors": req["contributors"], "k": int(req["k"]),
                          "released_by": self.node,
                          "released_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        claim = SealKeyClaim.from_dict(req["researcher_claim"])
        public = verify_claim(claim, self.studies.cfg.tls.ca.read_bytes(),
                              expect_role="researcher")
        sealed = seal(public, json.dumps(result).encode(), context=result_context(job_id))
        self.audit.append("policy", "result.seal", g.row.dataset_id,
                          {"job_id": job_id, "researcher": claim.name,
                           "contributors": req["contributors"]})
        return {"sealed": b64e(sealed)}
