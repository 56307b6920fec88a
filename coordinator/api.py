"""Researcher and operator API of the coordinator (roles are enforced by the server's
interceptor; this module only answers)."""

from __future__ import annotations

import json

import grpc

from coordinator import catalog, registry
from coordinator.db import Database
from coordinator.link import now_ms
from protos.scifed.v1 import coordinator_pb2 as pb
from protos.scifed.v1 import coordinator_pb2_grpc as pbg
from scifed.tls import peer_identity


class CoordinatorApiServicer(pbg.CoordinatorApiServicer):
    def __init__(self, db: Database, offline_after_seconds: float) -> None:
        self.db = db
        self.offline_after_ms = int(offline_after_seconds * 1000)

    def WhoAmI(self, request, context):
        ident = peer_identity(context)
        return pb.WhoAmIReply(name=ident.name, role=ident.role)

    def SearchCatalog(self, request, context):
        hits = catalog.search(
            self.db, query=request.query, subjects=list(request.subjects),
            platforms=list(request.platforms), grades=list(request.grades),
            categories=list(request.categories), keywords=list(request.keywords),
            columns=list(request.columns), limit=request.limit or 50)
        return pb.SearchReply(hits=[
            pb.SearchHit(record_id=h.record_id, title=h.title, node=h.node,
                         platform=h.platform, grade=h.grade, category=h.category,
                         subjects=list(h.subjects), stub=h.stub,
                         record_count=h.record_count or 0)
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
                        software_version=n.software_version or "")
            for n in nodes])
