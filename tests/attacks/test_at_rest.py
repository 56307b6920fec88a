"""Attacks on secrets at rest (issue 12): another account on the node's host reads the
state files, or someone is handed a copy of ``node.db`` (a leaked backup).

The federation is built the way the node and the coordinator build their state (real
NodeCore, CoordinatorCore, PKI and BFV study keys), under a root opened to everyone
(0755, outside pytest's private temporary tree) with the usual umask 022, so only the
project's own file modes stand between user ``nobody`` and the secrets.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sqlite3
import subprocess
import tempfile
from pathlib import Path

import pytest
from staff import NODES, federation, stats

from node.server import NodeCore
from scifed.errors import UserError
from scifed.he import StudyKey

NOBODY = 65534
# The venv's interpreter lives under /root (0700); the probe needs only the stdlib.
PROBE_PYTHON = shutil.which("python3", path="/usr/bin:/bin")

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or PROBE_PYTHON is None,
    reason="needs root (to run the probe as user nobody) and /usr/bin/python3")

PROBE = r"""
import json, os, sys
out = {}
for p in json.loads(sys.stdin.read()):
    try:
        if os.path.isdir(p):
            os.listdir(p)
        else:
            with open(p, "rb") as f:
                f.read(16)
        out[p] = "read"
    except OSError as exc:
        out[p] = exc.strerror
print(json.dumps(out))
"""


def as_nobody(paths: list[Path]) -> dict[str, str]:
    """Try to list each directory and read each file as user nobody (no groups):
    path -> "read", or the error the attempt met."""
    done = subprocess.run(
        [PROBE_PYTHON, "-I", "-S", "-c", PROBE], input=json.dumps([str(p) for p in paths]),
        capture_output=True, text=True, timeout=60, cwd="/",
        user=NOBODY, group=NOBODY, extra_groups=[])
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def tree(path: Path) -> list[Path]:
    """A directory and everything under it."""
    found = [path]
    for here, dirs, files in os.walk(path):
        found += [Path(here) / n for n in dirs + files]
    return found


def study_rows(db: Path) -> list[tuple[str, int, bytes]]:
    con = sqlite3.connect(db)
    try:
        return con.execute("SELECT study_id, version, secret FROM study_keys").fetchall()
    finally:
        con.close()


@pytest.fixture(scope="module")
def deployment():
    root = Path(tempfile.mkdtemp(prefix="scifed-at-rest-"))
    os.chmod(root, 0o755)
    fed = None
    try:
        old = os.umask(0o022)
        try:
            fed, _ = federation(root)
            fed.run(stats(group_counts=["department"]))  # every node opens and keeps its key
        finally:
            os.umask(old)
        fed.study_id, fed.key_version, _ = study_rows(
            fed.nodes[NODES[0]].cfg.state_dir / "node.db")[0]
        yield fed
    finally:
        if fed is not None:
            fed.__exit__(None, None, None)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def open_tmp():
    """A scratch directory user nobody can reach (pytest's tmp_path sits in a 0700
    tree shared with other runs, which must stay closed)."""
    path = Path(tempfile.mkdtemp(prefix="scifed-at-rest-"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_another_local_user_reads_no_state_or_key_file(deployment):
    fed = deployment
    targets: list[Path] = []
    for core in fed.nodes.values():
        targets += tree(core.cfg.state_dir)
        targets += [core.cfg.tls.key, core.cfg.tls.key.parent / "seal.key"]
    coordinator_state = fed.root / "coordinator"
    targets += tree(coordinator_state)
    targets += [fed.ca_dir / "ca.key", fed.ca_dir / "coordinator.key"]
    targets += [fed.researcher_dir / "researcher.key", fed.researcher_dir / "seal.key"]
    names = {p.name for p in targets}
    assert {"node.db", "coordinator.db", "coordinator.db-wal", "node.key"} <= names
    missing = [str(p) for p in targets if not p.exists()]
    assert not missing, missing

    public = [fed.root, fed.ca_dir / "ca.crt"]  # the probe can reach the deployment
    seen = as_nobody(public + targets)
    assert [seen[str(p)] for p in public] == ["read", "read"], seen
    readable = sorted(p for p in map(str, targets) if seen[p] == "read")
    assert readable == [], f"user nobody read {len(readable)} secret files: {readable}"


def test_leaked_node_db_yields_no_study_key(deployment, tmp_path):
    """A consistent copy of node.db (what a backup holds), without the node's key."""
    fed = deployment
    for name in NODES:
        core = fed.nodes[name]
        leak = tmp_path / f"{name}.db"
        src = sqlite3.connect(core.cfg.state_dir / "node.db")
        dst = sqlite3.connect(leak)
        try:
            src.backup(dst)
        finally:
            src.close()
            dst.close()
        rows = study_rows(leak)
        assert rows, f"node {name} stores no study key"
        for study_id, version, blob in rows:
            with pytest.raises(UserError):
                StudyKey.from_secret_bytes(blob)
            # nor does the secret lie anywhere in the file (free pages, other tables)
            secret = core.studies.key(study_id, version).secret_bytes()
            probe = secret[len(secret) // 2: len(secret) // 2 + 64]
            assert probe not in leak.read_bytes()


def test_node_key_of_another_node_opens_nothing(deployment, tmp_path):
    """Node beta's state with node alpha's private key (both are members of the study):
    the wrapping is bound to the node's own key."""
    fed = deployment
    beta = fed.nodes["beta"].cfg
    state = tmp_path / "state"
    shutil.copytree(beta.state_dir, state)
    cfg = beta.model_copy(update={"state_dir": state, "tls": fed.nodes["alpha"].cfg.tls})
    core = NodeCore(cfg)
    with pytest.raises(UserError, match="cannot decrypt"):
        core.studies.key(fed.study_id, fed.key_version)


def test_node_uses_its_encrypted_keys_after_restart(deployment):
    """The defence must not cost the node its keys: a restarted core (empty cache)
    opens them from its store, and a job through the real pipeline still runs."""
    fed = deployment
    for name in NODES:
        core = NodeCore(fed.nodes[name].cfg)
        assert core.studies.key(fed.study_id, fed.key_version).secret_bytes()
    _, result = fed.run(stats(group_counts=["department"]))
    assert result


def test_loose_state_left_by_an_older_version_is_fixed_at_start(deployment, open_tmp,
                                                                   caplog):
    fed = deployment
    alpha = fed.nodes["alpha"].cfg
    state = open_tmp / "state"
    shutil.copytree(alpha.state_dir, state)
    os.chmod(state, 0o755)
    os.chmod(state / "node.db", 0o644)
    cfg = alpha.model_copy(update={"state_dir": state})
    with caplog.at_level(logging.WARNING):
        NodeCore(cfg)
    fixed = [r.getMessage() for r in caplog.records if r.name == "scifed.at_rest"]
    assert len(fixed) == 2, fixed  # one warning per path narrowed
    assert "was open to group and others (mode 0755); set to 0700" in fixed[0]
    assert os.stat(state).st_mode & 0o777 == 0o700
    assert os.stat(state / "node.db").st_mode & 0o777 == 0o600
    seen = as_nobody([open_tmp, state, state / "node.db"])
    assert seen[str(open_tmp)] == "read"
    assert seen[str(state)] != "read" and seen[str(state / "node.db")] != "read"


def test_plaintext_study_key_from_an_older_version_is_encrypted_at_start(deployment,
                                                                         tmp_path):
    fed = deployment
    alpha = fed.nodes["alpha"].cfg
    version = fed.key_version
    secret = fed.nodes["alpha"].studies.key(fed.study_id, version).secret_bytes()
    state = tmp_path / "state"
    shutil.copytree(alpha.state_dir, state)
    con = sqlite3.connect(state / "node.db")
    with con:
        con.execute("UPDATE study_keys SET secret=? WHERE study_id=? AND version=?",
                    (secret, fed.study_id, version))
    con.close()
    cfg = alpha.model_copy(update={"state_dir": state})
    core = NodeCore(cfg)
    (_, _, blob), = [r for r in study_rows(state / "node.db") if r[1] == version]
    with pytest.raises(UserError):
        StudyKey.from_secret_bytes(blob)
    probe = secret[len(secret) // 2: len(secret) // 2 + 64]
    for part in state.iterdir():
        assert probe not in part.read_bytes(), f"plaintext key left in {part.name}"
    assert core.studies.key(fed.study_id, version).secret_bytes() == secret
    con = sqlite3.connect(state / "node.db")
    audited = con.execute("SELECT subject FROM audit WHERE action='study.key.encrypt'"
                          ).fetchall()
    con.close()
    assert audited == [(fed.study_id,)]
