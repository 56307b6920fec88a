"""The node's local admin API (for the officer's CLI), served on a Unix domain socket."""

from __future__ import annotations

import json

import grpc

from node.alerts import RefusalMonitor
from node.approvals import Approvals
from node.audit import AuditLog
from node.budget import BudgetLedger
from node.datasets import DatasetRegistry
from node.link import CoordinatorLink
from node.policy import PolicyBook
from node.review import OutputReviews
from node.store import DatasetRow
from node.studies import NodeStudies
from protos.scifed.v1 import federation_pb2 as fpb
from protos.scifed.v1 import node_admin_pb2 as pb
from protos.scifed.v1 import node_admin_pb2_grpc as pbg
from scifed.errors import NotFound, UserError
from scifed.grading import publication_mode
from scifed.rpc import user_errors
from scifed.sentences import structure


def summary(row: DatasetRow) -> pb.DatasetSummary:
    rec = row.record
    title = rec["title"].get("zh") or rec["title"].get("en") or ""
    return pb.DatasetSummary(
        dataset_id=row.dataset_id, title=title, grade=rec["security_grade"],
        category=rec["sharing_category"], record_count=rec["record_count"],
        publication=publication_mode(rec["security_grade"], rec["sharing_category"]),
        path=row.path)


def reply(row: DatasetRow) -> pb.DatasetReply:
    return pb.DatasetReply(summary=summary(row), record_json=json.dumps(row.record))


class NodeAdminServicer(pbg.NodeAdminServicer):
    def __init__(self, registry: DatasetRegistry, link: CoordinatorLink,
                 studies: NodeStudies, approvals: Approvals, delivery=None,
                 reviews: OutputReviews | None = None) -> None:
        """``delivery``: the node's delivery desk (node/delivery/), for the access RPCs;
        ``reviews``: its output-review queue (node/review.py)."""
        self.delivery = delivery
        self.registry = registry
        self.link = link
        self.studies = studies
        self.approvals = approvals
        self.reviews = reviews or OutputReviews(registry.store, approvals)
        self.policies = PolicyBook(registry.store)
        self.ledger = BudgetLedger(registry.store)
        self.audit = AuditLog(registry.store)
        self.alerts = RefusalMonitor(registry.store)

    @user_errors
    def Status(self, request, context):
        cfg = self.link.cfg
        return pb.StatusReply(node_name=cfg.name, platform=cfg.platform,
                              coordinator=cfg.coordinator, connected=self.link.connected,
                              last_contact_unix_ms=self.link.last_contact_ms,
                              datasets=len(self.registry.list()),
                              published=self.link.published_count)

    @user_errors
    def AddDataset(self, request, context):
        return reply(self.registry.add(request.path, request.meta_yaml,
                                       request.meta_name or "metadata", request.dataset_id,
                                       actor=actor(context),
                                       accept_violations=request.accept_violations))

    @user_errors
    def UpdateDataset(self, request, context):
        return reply(self.registry.update(request.dataset_id, request.meta_yaml,
                                          request.meta_name or "metadata", request.refresh_data,
                                          actor=actor(context),
                                          accept_violations=request.accept_violations))

    @user_errors
    def RemoveDataset(self, request, context):
        return pb.RemoveDatasetReply(dataset_id=self.registry.remove(request.dataset_id,
                                                                     actor=actor(context)))

    @user_errors
    def ListDatasets(self, request, context):
        return pb.ListDatasetsReply(datasets=[summary(r) for r in self.registry.list()])

    @user_errors
    def GetDataset(self, request, context):
        return reply(self.registry.get(request.dataset_id))

    @user_errors
    def ListStudies(self, request, context):
        return self.studies.list(self.link)

    @user_errors
    def AnswerStudy(self, request, context):
        return self.studies.answer(self.link, request.study_id, request.accept,
                                   list(request.datasets), actor=actor(context))

    # -- the officer's controls --------------------------------------------------------
    @user_errors
    def PolicyShow(self, request, context):
        rec = self.registry.get(request.dataset_id).record
        return self._policy(rec, self.policies.effective(rec))

    def _policy(self, rec: dict, pol) -> object:
        """The effective policy with the override in force (None where there is none)."""
        return _json({"dataset_id": rec["id"], **pol.as_dict(),
                      "override": self.policies.in_force(rec["id"])})

    @user_errors
    def PolicySet(self, request, context):
        rec = self.registry.get(request.dataset_id).record
        if request.reset:
            pol = self.policies.reset(rec, actor(context))
        elif not request.justification.strip():  # before anything is read or changed
            raise UserError(f"a policy override of {rec['id']} needs a justification: say "
                            "why it is tightened (--justification TEXT); nothing changed")
        else:
            pol = self.policies.set(rec, request.yaml, request.source or "override.yaml",
                                    actor(context), request.justification.strip())
        return self._policy(rec, pol)

    @user_errors
    def ApprovalsList(self, request, context):
        return _json([a.as_dict() for a in self.approvals.list(request.state or None)])

    @user_errors
    def ApprovalShow(self, request, context):
        """The request with what this node's policy decides for it now, and the ε it
        would spend (the privacy cost the approver weighs)."""
        from jobs.spec import datasets_by_node, parse_job_dict
        from node.gate import policy_decision

        appr = self.approvals.get(request.approval_id).as_dict()
        try:
            spec = parse_job_dict(appr["spec"], f"job {appr['job_id']}")
        except UserError:  # not a job: an access request (node/delivery) held for approval
            return _json({**appr, "decision": None})
        rec = self.registry.get(appr["dataset_id"]).record
        dec = policy_decision(spec, self.policies.effective(rec), rec,
                              len(datasets_by_node(spec)))
        return _json({**appr, "decision": {"outcome": dec.outcome, "rule": dec.rule,
                                           "reason": dec.reason,
                                           "reason_said": structure(dec.reason), "dp": dec.dp,
                                           "epsilon": dec.epsilon, "delta": dec.delta}})

    @user_errors
    def ApprovalDecide(self, request, context):
        """A decision counts only with the approver's signature; the name in ``by`` says
        whose registered key must verify it (the socket's caller is not asked)."""
        appr = self.approvals.decide(
            request.approval_id, approve=request.approve, by=request.by,
            reason=request.reason, expires_ms=request.expires_unix_ms or None,
            statement=request.statement, signature=request.signature)
        return _json(appr.as_dict())

    @user_errors
    def ApproverAdd(self, request, context):
        """Counts only with the registered officer's and security lead's countersignatures
        over this change (the first of each role: the bootstrap, audited as such)."""
        person = self.approvals.registry.add(
            request.name, request.role, request.public_key_pem, by=actor(context),
            countersignatures=_countersignatures(request))
        return _json(person.as_dict())

    @user_errors
    def ApproverList(self, request, context):
        return _json([p.as_dict() for p in
                      self.approvals.registry.list(include_removed=request.include_removed)])

    @user_errors
    def ApproverRemove(self, request, context):
        return _json(self.approvals.registry.remove(
            request.name, by=actor(context),
            countersignatures=_countersignatures(request)).as_dict())

    @user_errors
    def ApproverRegistryState(self, request, context):
        return _json(self.approvals.registry.state())

    @user_errors
    def BudgetShow(self, request, context):
        rows = []
        for dataset in ([self.registry.get(request.dataset_id)] if request.dataset_id
                        else self.registry.list()):
            pol = self.policies.effective(dataset.record)
            spent = self.ledger.spent(dataset.dataset_id)
            total = next((s.epsilon for s in spent if s.researcher is None), 0.0)
            rows.append({"dataset_id": dataset.dataset_id, "annual_budget": pol.annual_budget,
                         "spent": total, "left": None if pol.annual_budget is None
                         else pol.annual_budget - total,
                         "researcher_budget": pol.researcher_budget,
                         "by_researcher": {s.researcher: s.epsilon for s in spent
                                           if s.researcher is not None},
                         "charges": self.ledger.charges(dataset.dataset_id)})
        return _json(rows)

    @user_errors
    def AlertsList(self, request, context):
        return _json(self.alerts.list(request.state or None))

    @user_errors
    def AuditList(self, request, context):
        entries = self.audit.entries(since=request.since_seq, limit=request.limit or None)
        return _json([e.as_dict() for e in entries])

    @user_errors
    def AuditVerify(self, request, context):
        heads = []
        if request.against_coordinator:
            reply = self.link.call("AuditHeads", fpb.AuditHeadsRequest())
            heads = [(h.seq, h.hash, h.received_unix_ms) for h in reply.heads]
        v = self.audit.verify(heads)
        latest = max(heads, default=(0, "", 0))
        return _json({"ok": v.ok, "entries": v.entries, "head_seq": v.head_seq,
                      "head_hash": v.head_hash, "problem": v.problem,
                      "coordinator_heads_checked": len(heads),
                      "coordinator_head_seq": latest[0],
                      "coordinator_head_ms": latest[2]})

    @user_errors
    def AuditExport(self, request, context):
        return pb.JsonReply(json=self.audit.export(request.format))

    # -- quality and exports ---------------------------------------------------------------
    def DatasetQuality(self, request, context):
        """Streams progress while the scorecard runs, then the report; the summary is
        stored in the record and republished to the catalog."""
        import queue
        import threading

        steps: queue.Queue = queue.Queue()
        outcome: dict = {}

        def run() -> None:
            try:
                outcome["report"] = self.registry.assess_quality(
                    request.dataset_id, fast=request.fast,
                    overrides={o.metric: o.justification for o in request.overrides},
                    actor=actor(context), progress=steps.put)
            except Exception as exc:  # handed to the caller below
                outcome["error"] = exc
            finally:
                steps.put(None)

        threading.Thread(target=run, daemon=True).start()
        while (step := steps.get()) is not None:
            yield pb.QualityProgress(step=step)
        error = outcome.get("error")
        if isinstance(error, NotFound):
            context.abort(grpc.StatusCode.NOT_FOUND, str(error))
        if isinstance(error, UserError):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        if error is not None:
            raise error
        yield pb.QualityProgress(step="done",
                                 report_json=outcome["report"].model_dump_json())

    @user_errors
    def ExportCatalog(self, request, context):
        from scifed.exports import to_croissant, to_dcat

        records = [r.record for r in self.registry.list()]
        if request.format in ("dcat", "dcat-jsonld"):
            fmt = "turtle" if request.format == "dcat" else "json-ld"
            return pb.JsonReply(json=to_dcat(records, fmt, catalog_title=(
                f"{self.link.cfg.platform} — catalog of node {self.link.cfg.name}")))
        if request.format == "croissant":
            return _json({r["id"]: to_croissant(r) for r in records})
        raise UserError(f"--format {request.format}: choose dcat, dcat-jsonld or croissant")

    # -- delivery (node/delivery/) -------------------------------------------------------
    @user_errors
    def AccessList(self, request, context):
        if request.deliveries:
            return _json(self.delivery.deliveries())
        return _json(self.delivery.officer_list(request.state))

    @user_errors
    def AccessShow(self, request, context):
        return _json(self.delivery.officer_show(request.grant_id))

    @user_errors
    def AccessRevoke(self, request, context):
        return _json(self.delivery.revoke(request.grant_id, request.reason, actor(context)))

    @user_errors
    def AccessExpire(self, request, context):
        return _json(self.delivery.expire(request.grant_id, request.expires_unix_ms,
                                          request.reason, actor(context)))

    @user_errors
    def AccessRecordOffline(self, request, context):
        return _json(self.delivery.record_offline(
            dataset=request.dataset_id, recipient=request.recipient, what=request.what,
            sha256=request.sha256, medium=request.medium, by=request.by,
            statement=request.statement, signature=request.signature))


    # -- the officer's output review (node/review.py) -------------------------------------
    def _purposes(self) -> dict[str, str]:
        """Each study's purpose as the coordinator tells it; none while it is offline
        (the review itself is the node's own record and needs no coordinator)."""
        try:
            return {s.study_id: s.purpose for s in self.studies.list(self.link).studies}
        except Exception:  # noqa: BLE001 - offline: the review shows without purposes
            return {}

    @user_errors
    def ReviewList(self, request, context):
        """The held (or decided) results; with ``full``, each as ReviewShow gives it."""
        reviews = self.reviews.list(request.state or None)
        if not request.full:
            return _json([r.summary() for r in reviews])
        purposes = self._purposes()
        return _json([self.reviews.show(r.review_id, purposes, plots=False) for r in reviews])

    @user_errors
    def ReviewShow(self, request, context):
        return _json(self.reviews.show(request.review_id, self._purposes()))

    @user_errors
    def ReviewDecide(self, request, context):
        """Counts only with the approver's signature over this decision on this result;
        the name in ``by`` says whose registered key must verify it."""
        review = self.reviews.decide(request.review_id, release=request.release,
                                     by=request.by, reason=request.reason,
                                     statement=request.statement, signature=request.signature)
        return _json(review.summary())


def _countersignatures(request) -> list[dict]:
    return [{"by": c.by, "statement": c.statement, "signature": c.signature}
            for c in request.countersignatures]


def _json(data) -> pb.JsonReply:
    return pb.JsonReply(json=json.dumps(data, default=str))


def actor(context) -> str:
    """Who is acting, as the officer's CLI says, for the audit log (the socket's
    permissions are the check). A label, not an identity: it approves nothing."""
    return dict(context.invocation_metadata()).get("scifed-actor", "officer")
