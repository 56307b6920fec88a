"""An officer's policy override says why: the node refuses one without a justification
(one message naming it, nothing changed, nothing audited), whatever client sends it —
the CLI, the console, or anyone on the admin socket — and keeps the one it is given."""

from __future__ import annotations

import pytest
from staff import NODES, federation

from harness.approvers import AdminShell, Refused
from node.audit import AuditLog
from protos.scifed.v1 import node_admin_pb2 as pb


@pytest.fixture
def fed(tmp_path):
    fed, _ = federation(tmp_path)
    yield fed
    fed.__exit__(None, None, None)


@pytest.mark.parametrize("justification", ["", "   "])
def test_an_override_without_a_justification_is_refused_and_changes_nothing(
        fed, justification):
    node = NODES[0]
    core = fed.nodes[node]
    (row,) = core.registry.list()
    shell = AdminShell(fed, node)
    before = len(list(AuditLog(core.store).entries()))
    with pytest.raises(Refused) as exc:
        shell("PolicySet", pb.PolicySetRequest(dataset_id=row.dataset_id,
                                               yaml="min_cell_count: 20\n",
                                               source="tight.yaml",
                                               justification=justification))
    assert "needs a justification" in str(exc.value)
    assert "nothing changed" in str(exc.value)
    assert core.gate.policies.in_force(row.record["id"]) is None
    assert core.gate.policies.effective(row.record).min_cell_count != 20
    assert len(list(AuditLog(core.store).entries())) == before
    shell("PolicySet", pb.PolicySetRequest(dataset_id=row.dataset_id,
                                           yaml="min_cell_count: 20\n", source="tight.yaml",
                                           justification="departments under 20 people"))
    assert core.gate.policies.effective(row.record).min_cell_count == 20
    assert core.gate.policies.in_force(row.record["id"])["justification"] == \
        "departments under 20 people"


def test_a_reset_needs_no_justification(fed):
    node = NODES[0]
    core = fed.nodes[node]
    (row,) = core.registry.list()
    AdminShell(fed, node)("PolicySet", pb.PolicySetRequest(dataset_id=row.dataset_id,
                                                           reset=True))
    assert core.gate.policies.in_force(row.record["id"]) is None
