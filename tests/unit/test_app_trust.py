"""Which Flower app bundles a node's ClientApp executor may run (node/apps.py): its own
scifed's, byte for byte, and hashes its officer approved; every refusal audited."""

from __future__ import annotations

import io
import shutil
import zipfile

import pytest

from jobs.train import TrainJob
from node.apps import AppTrust
from node.audit import AuditLog
from node.store import NodeStore
from scifed.flower_apps import build_fab, client_app_ref, fab_sha256

OWN = build_fab(TrainJob.flower_app.app_dir)


def actions(audit: AuditLog) -> list[tuple[str, str, dict]]:
    return [(e.action, e.subject, e.details) for e in audit.entries()]


@pytest.fixture
def audit(tmp_path) -> AuditLog:
    return AuditLog(NodeStore(tmp_path / "node.db"))


def variant(tmp_path, **replace: str) -> bytes:
    """The node's own app directory with its pyproject.toml edited, as a FAB."""
    app = tmp_path / "app"
    shutil.copytree(TrainJob.flower_app.app_dir, app)
    text = (app / "pyproject.toml").read_text()
    for old, new in replace.items():
        text = text.replace(old, new)
    (app / "pyproject.toml").write_text(text)
    return build_fab(app).content


def test_the_node_s_own_app_runs_its_installed_client_app(audit):
    trust = AppTrust("alpha", audit, approved=[])
    verdict = trust.check(OWN.content, run_id=7, job_id="job-1")
    assert verdict.trusted and verdict.client_app == "jobs.train.client_app:app"
    assert verdict.sha256 == OWN.hash_str == fab_sha256(OWN.content)
    trust.check(OWN.content, run_id=7, job_id="job-1")  # the next round of the same run
    assert [(a, s) for a, s, _ in actions(audit)] == [("app.run", "job-1")]


def test_a_changed_bundle_is_refused_and_audited(audit, tmp_path):
    foreign = variant(tmp_path, **{"jobs.train.client_app:app": "exfiltrate:app"})
    trust = AppTrust("alpha", audit, approved=[])
    verdict = trust.check(foreign, run_id=8, job_id="job-2")
    assert not verdict.trusted and not verdict.client_app
    assert "node alpha refuses to run the Flower app" in verdict.reason
    assert "run 8" in verdict.reason and fab_sha256(foreign)[:16] in verdict.reason
    [(action, subject, details)] = actions(audit)
    assert (action, subject, details["sha256"]) == ("app.refused", "job-2",
                                                    fab_sha256(foreign))


def test_an_approved_hash_runs_as_shipped_and_only_that_hash(audit, tmp_path):
    approved = variant(tmp_path, **{'version = "0.1.0"': 'version = "0.1.1"'})
    trust = AppTrust("alpha", audit, approved=[fab_sha256(approved)])
    verdict = trust.check(approved, run_id=9, job_id="job-3")
    assert verdict.trusted and verdict.client_app == ""  # the bundle's own ClientApp
    assert client_app_ref(approved) == "jobs.train.client_app:app"
    shutil.rmtree(tmp_path / "app")
    other = variant(tmp_path, **{'version = "0.1.0"': 'version = "0.1.2"'})
    assert not trust.check(other, run_id=10, job_id="job-4").trusted
    assert [a for a, _, _ in actions(audit)] == ["app.run", "app.refused"]


def test_an_approved_hash_that_names_no_client_app_is_refused(audit):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("pyproject.toml", "[project]\nname = 'x'\n")
    content = buf.getvalue()
    trust = AppTrust("alpha", audit, approved=[fab_sha256(content)])
    verdict = trust.check(content, run_id=11, job_id="")
    assert not verdict.trusted and "names no ClientApp" in verdict.reason
    [(action, subject, _)] = actions(audit)
    assert (action, subject) == ("app.refused", "flower run 11")


def test_not_a_zip_is_refused(audit):
    verdict = AppTrust("alpha", audit, approved=[]).check(b"not a zip", run_id=1, job_id="j")
    assert not verdict.trusted and "neither an app of this node's scifed" in verdict.reason
