"""Researcher and operator API of the coordinator (roles are enforced by the server's
interceptor; this module only answers)."""

from __future__ import annotations

import json
from collections.abc import Callable

import grpc

from coordinator import catalog, registry, revocations, studies
from coordinator.access import AccessRelay
from coordinator.db import Database
from coordinator.driver import JobDriver
from coordinator.revocations import SeenCertificates
from protos.scifed.v1 import coordinator_pb2 as pb
from protos.scifed.v1 import coordinator_pb2_grpc as pbg
from protos.scifed.v1 import federation_pb2 as fpb
from scifed.delivery import AccessKind
from scifed.pki import Crl
from scifed.rpc import user_errors
from scifed.tls import peer_identity
from scifed.wire import now_ms


class CoordinatorApiServicer(pbg.CoordinatorApiServicer):
    def __init__(self, db: Database, jobs: JobDriver, offline_after_seconds: float,
                 access: AccessRelay | None = None, *,
                 crl: Callable[[], Crl | None] = lambda: None,
                 seen: SeenCertificates | None = None) -> None:
        self.db = db
        self.access = access
        self.jobs = jobs
        self.offline_after_ms = int(offline_after_seconds * 1000)
        self.crl = crl  # the CA's newest CRL the coordinator holds (and forwards)
        self.seen = seen or SeenCertificates()

    def WhoAmI(self, request, context):
        ident = peer_identity(context)
        return pb.WhoAmIReply(name=ident.name, role=ident.role)

    @user_errors
    def SearchCatalog(self, request, context):
        hits = catalog.search(
            self.db, query=request.query, subjects=list(request.subjects),
            platforms=list(request.platforms), grades=list(request.grades),
            categories=list(request.categories), keywords=list(request.keywords),
            columns=list(request.columns), limit=request.limit or 50,
            min_quality=request.min_quality or None)
        return pb.SearchReply(hits=[
            pb.SearchHit(record_id=h.record_id, title=h.title, node=h.node,
                         platform=h.platform, grade=h.grade, category=h.category,
                         subjects=list(h.subjects), stub=h.stub,
                         record_count=h.record_count or 0, quality=h.quality or "")
            for h in hits])

    def GetRecord(self, request, context):
        found = catalog.get_record(self.db, request.record_id)
        if found is None:
            context.abort(grpc.StatusCode.NOT_FOUND,
                          f"no catalog record '{request.record_id}'")
        record, node = found
        return pb.RecordReply(record_json=json.dumps(record), node=node)

    def ListNodes(self, request, context):
        nodes = registry.list_nodes(self.db, now_ms=now_ms(),
                                    offline_after_ms=self.offline_after_ms)
        return pb.ListNodesReply(nodes=[
            pb.NodeInfo(name=n.name, platform=n.platform, online=n.online,
                        last_seen_unix_ms=n.last_seen_ms or 0, datasets=n.datasets,
                        software_version=n.software_version or "",
                        **_audit_fields(n.audit_head))
            for n in nodes])

    def ListRevocations(self, request, context):
        crl = self.crl()
        if crl is None:
            return pb.ListRevocationsReply(has_crl=False)
        return pb.ListRevocationsReply(
            has_crl=True, crl_number=crl.number,
            this_update_unix_ms=int(crl.this_update.timestamp() * 1000),
            next_update_unix_ms=int(crl.next_update.timestamp() * 1000)
            if crl.next_update else 0,
            revoked=[pb.RevokedCertificate(serial=f"{r.serial:x}", name=r.name, role=r.role,
                                           revoked_unix_ms=r.revoked_ms)
                     for r in revocations.revoked(crl, self.db, self.seen)])

    # -- studies (operator) -----------------------------------------------------------
    @user_errors
    def CreateStudy(self, request, context):
        view = studies.create_study(self.db, name=request.name, purpose=request.purpose,
                                    nodes=list(request.nodes), min_nodes=request.min_nodes,
                                    created_by=peer_identity(context).name)
        return studies.to_proto(view)

    @user_errors
    def AddResearcher(self, request, context):
        return studies.to_proto(studies.add_researcher(self.db, request.study,
                                                       request.researcher))

    @user_errors
    def ListStudies(self, request, context):
        ident = peer_identity(context)
        views = studies.list_studies(
            self.db, researcher=ident.name if ident.role == "researcher" else None)
        return fpb.ListInvitationsReply(studies=[studies.to_proto(v) for v in views])

    # -- jobs (researcher) --------------------------------------------------------------
    @user_errors
    def SubmitJob(self, request, context):
        ident = peer_identity(context)
        job_id = self.jobs.submit(ident.name, request.spec_yaml, request.spec_name,
                                  request.seal_claim_json)
        return self._job(job_id, ident.name)

    @user_errors
    def GetJob(self, request, context):
        return self._info(self.jobs.watch(request.job_id, peer_identity(context).name,
                                          request.wait_ms / 1000))

    @user_errors
    def ListJobs(self, request, context):
        views = self.jobs.list_jobs(peer_identity(context).name, study=request.study,
                                    status=request.status, limit=request.limit)
        return pb.ListJobsReply(jobs=[self._info(v) for v in views])

    @user_errors
    def ListAllJobs(self, request, context):
        """The operator's view: every job's state, never what a job released. Summaries
        carry no tasks (where a node's sealed reason travels), no progress and no
        result, whatever the request asks."""
        views = self.jobs.list_jobs(None, study=request.study, status=request.status,
                                    limit=request.limit)
        return pb.ListJobsReply(jobs=[self._info(v) for v in views])

    @user_errors
    def GetResult(self, request, context):
        name = peer_identity(context).name
        return pb.ResultReply(job_id=request.job_id,
                              sealed=self.jobs.sealed_result(request.job_id, name))

    @user_errors
    def ResumeJob(self, request, context):
        name = peer_identity(context).name
        self.jobs.resume(request.job_id, name)
        return self._job(request.job_id, name)

    @user_errors
    def CancelJob(self, request, context):
        name = peer_identity(context).name
        self.jobs.cancel(request.job_id, name)
        return self._job(request.job_id, name)

    # -- delivery (researcher): relayed to the dataset's node -------------------------------
    @user_errors
    def RequestAccess(self, request, context):
        name = peer_identity(context).name
        return pb.AccessAnswer(payload=self.access.request(name, request.record_id,
                                                           request.payload))

    @user_errors
    def ListAccess(self, request, context):
        payload, unreached = self.access.list(peer_identity(context).name, request.record_id)
        return pb.AccessAnswer(payload=payload, unreached=unreached)

    @user_errors
    def AccessManifest(self, request, context):
        return self._relay(AccessKind.MANIFEST, request, context)

    @user_errors
    def AccessChunk(self, request, context):
        return self._relay(AccessKind.CHUNK, request, context)

    @user_errors
    def AccessQuery(self, request, context):
        return self._relay(AccessKind.QUERY, request, context)

    def _relay(self, kind: AccessKind, request, context) -> pb.AccessAnswer:
        return pb.AccessAnswer(payload=self.access.relay(
            kind, peer_identity(context).name, request.record_id, request.payload))

    def _job(self, job_id: str, researcher: str) -> pb.JobInfo:
        return self._info(self.jobs.get(job_id, researcher))

    @staticmethod
    def _info(v) -> pb.JobInfo:
        return pb.JobInfo(
            job_id=v.job_id, study=v.study, researcher=v.researcher, type=v.job_type,
            status=v.status, phase=str(v.phase), error=v.error,
            phase_info=pb.Phase(name=v.phase.name, round=v.phase.round, rounds=v.phase.rounds),
            created_unix_ms=v.created_ms, updated_unix_ms=v.updated_ms,
            contributors=v.contributors,
            progress=[pb.RoundProgress(round=r, sealed=b) for r, b in v.progress],
            tasks=[pb.NodeTask(node=t.node, phase=t.phase, state=t.state, detail=t.detail,
                               updated_unix_ms=t.updated_ms, sealed_reason=t.sealed_reason)
                   for t in v.tasks])


def _audit_fields(head: tuple[int, str, int] | None) -> dict:
    if head is None:
        return {}
    seq, digest, received_ms = head
    return {"audit_seq": seq, "audit_hash": digest, "audit_received_unix_ms": received_ms}
