"""The node's local admin API (for the officer's CLI), served on a Unix domain socket."""

from __future__ import annotations

import json

from node.datasets import DatasetRegistry
from node.link import CoordinatorLink
from node.store import DatasetRow
from node.studies import NodeStudies
from protos.scifed.v1 import node_admin_pb2 as pb
from protos.scifed.v1 import node_admin_pb2_grpc as pbg
from scifed.grading import publication_mode
from scifed.rpc import user_errors


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
                 studies: NodeStudies) -> None:
        self.registry = registry
        self.link = link
        self.studies = studies

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
                                       request.meta_name or "metadata", request.dataset_id))

    @user_errors
    def UpdateDataset(self, request, context):
        return reply(self.registry.update(request.dataset_id, request.meta_yaml,
                                          request.meta_name or "metadata", request.refresh_data))

    @user_errors
    def RemoveDataset(self, request, context):
        return pb.RemoveDatasetReply(dataset_id=self.registry.remove(request.dataset_id))

    @user_errors
    def ListDatasets(self, request, context):
        return pb.ListDatasetsReply(datasets=[summary(r) for r in self.registry.list()])

    @user_errors
    def GetDataset(self, request, context):
        return reply(self.registry.get(request.dataset_id))

    @user_errors
    def ListStudies(self, request, context):
        return self.studies.list()

    @user_errors
    def AnswerStudy(self, request, context):
        return self.studies.answer(request.study_id, request.accept, list(request.datasets))
