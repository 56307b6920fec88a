"""Delivery through real processes: a coordinator and a node on loopback with mTLS gRPC,
the researcher's and officer's `scifed` commands. What arrives is checked against the
node's own file (or DuckDB's column subset of it) computed here independently."""

from __future__ import annotations

import hashlib
import json

import duckdb
import pandas as pd
import pytest

from coordinator import access_client as ac
from harness.federation import LocalFederation
from node.audit import AuditLog
from node.store import NodeStore
from scifed.delivery import CHUNK_BYTES

NODE = "biscoe"
GRADES = {"open": ("G1", "OPEN"), "cond": ("G2", "CONDITIONAL"),
          "closed": ("G1", "CLOSED")}


def rid(name: str) -> str:
    return f"urn:sdn:{NODE}:ds:{name}"


@pytest.fixture(scope="module")
def fed(tmp_path_factory, penguins, penguins_meta):
    fed = LocalFederation(tmp_path_factory.mktemp("delivery"), {NODE: "Palmer Biscoe"},
                          task_timeout_seconds=20)
    fed.setup()
    fed.start_all()
    try:
        # the open shard is large enough for a download of several chunks
        big = pd.concat([penguins] * 170, ignore_index=True)
        for name, (grade, category) in GRADES.items():
            meta = {**penguins_meta, "security_grade": grade, "sharing_category": category,
                    "conditions_of_use": [{"code": "cite", "text": "Cite Gorman et al."}]}
            if category == "CLOSED":
                meta["delivery_methods"] = ["metadata_only", "in_node_service"]
            fed.add_dataset(NODE, big if name == "open" else penguins, meta, name)
        fed.create_study("delivery", {NODE: "cond"})
        yield fed
    finally:
        fed.stop_all()


def researcher(fed, *args: str, check: bool = True):
    out = fed.cli(*args, "--identity", str(fed.researcher_dir), "--json", check=check)
    return json.loads(out.stdout) if check else out


def node_file(fed, name: str):
    return fed.node_dir(NODE) / "data" / f"{name}.csv"


def audit(fed, action: str) -> list[dict]:
    store = NodeStore(fed.node_dir(NODE) / "state" / "node.db")
    return [e.details for e in AuditLog(store).entries() if e.action == action]


def test_open_g1_download_equals_the_node_file(fed):
    grant = researcher(fed, "access", "request", rid("open"), "--purpose", "teaching",
                       "--accept-all")
    assert grant["state"] == "granted"
    out = fed.root / "open.csv"
    got = researcher(fed, "access", "download", grant["grant_id"], "--out", str(out))
    truth = hashlib.sha256(node_file(fed, "open").read_bytes()).hexdigest()
    assert got["sha256"] == truth == hashlib.sha256(out.read_bytes()).hexdigest()
    assert got["bytes"] > 2 * CHUNK_BYTES
    listed = researcher(fed, "access", "list")["grants"]
    assert any(g["grant_id"] == grant["grant_id"] for g in listed)
    deliveries = json.loads(fed.node_cli(NODE, "access", "list", "--deliveries",
                                         "--json").stdout)
    assert any(d["grant_id"] == grant["grant_id"] and d["sha256"] == truth
               and d["recipient"] == "alice" for d in deliveries)
    assert any(d["sha256"] == truth and d["recipient"] == "alice"
               for d in audit(fed, "access.download"))


def test_column_subset_equals_duckdb_on_the_node_file(fed):
    with fed.researcher() as c:
        grant = ac.request_access(c, rid("open"), method="download", purpose="bills",
                                  accept=["cite", "license:CC0-1.0"],
                                  columns=["species", "bill_length_mm"])
        out = fed.root / "bills.parquet"
        digest = ac.download(c, grant, out)
    assert digest == hashlib.sha256(out.read_bytes()).hexdigest()
    truth = duckdb.sql(f"SELECT species, bill_length_mm FROM read_csv('{node_file(fed, 'open')}')"
                       ).df()
    pd.testing.assert_frame_equal(pd.read_parquet(out), truth, check_dtype=False)


def test_interrupted_download_resumes_from_the_next_chunk(fed):
    out = fed.root / "resumed.csv"
    seen: list[int] = []

    def cut(done: int, total: int) -> None:
        seen.append(done)
        if done >= CHUNK_BYTES:
            raise KeyboardInterrupt  # the link drops after the first chunk

    with fed.researcher() as c:
        grant = ac.request_access(c, rid("open"), method="download", purpose="resume",
                                  accept=["cite", "license:CC0-1.0"])
        with pytest.raises(KeyboardInterrupt):
            ac.download(c, grant, out, progress=cut)
        assert not out.exists() and out.with_name(out.name + ".part").stat().st_size == \
            CHUNK_BYTES
        resumed: list[int] = []
        digest = ac.download(c, grant, out, progress=lambda d, t: resumed.append(d))
    assert resumed[0] == CHUNK_BYTES  # the first chunk was kept, not fetched again
    assert digest == hashlib.sha256(node_file(fed, "open").read_bytes()).hexdigest()
    assert out.read_bytes() == node_file(fed, "open").read_bytes()


def test_conditional_g2_download_after_the_officers_approval(fed):
    grant = researcher(fed, "access", "request", rid("cond"), "--purpose", "morphometrics",
                       "--accept", "cite", "--accept", "license:CC0-1.0",
                       "--study", "delivery", "--columns", "species,body_mass_g",
                       "--format", "csv")
    assert grant["state"] == "pending"
    early = researcher(fed, "access", "download", grant["grant_id"], "--out",
                       str(fed.root / "early.csv"), check=False)
    assert early.returncode == 1 and "pending" in early.stderr
    fed.node_cli(NODE, "access", "approve", grant["grant_id"], "--conditions",
                 "no onward transfer", "--expires", "7d", "--key",
                 str(fed.approver(NODE)), "--passphrase-file", str(fed.passphrase_file))
    shown = json.loads(fed.node_cli(NODE, "access", "show", grant["grant_id"]).stdout)
    assert shown["state"] == "granted" and shown["conditions"] == "no onward transfer"
    out = fed.root / "cond.csv"
    got = researcher(fed, "access", "download", grant["grant_id"], "--out", str(out))
    truth = pd.read_csv(node_file(fed, "cond"))[["species", "body_mass_g"]]
    pd.testing.assert_frame_equal(pd.read_csv(out), truth)
    assert got["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()


def test_service_query_on_open_data_equals_pandas(fed, penguins):
    grant = researcher(fed, "access", "request", rid("open"), "--method", "in_node_service",
                       "--purpose", "island sizes", "--accept-all")
    got = researcher(fed, "access", "query", grant["grant_id"],
                     "SELECT island, count(*) AS n FROM data GROUP BY island ORDER BY island")
    truth = (pd.concat([penguins] * 170).groupby("island").size())
    assert {r[0]: r[1] for r in got["rows"]} == truth.to_dict()


def test_closed_data_only_by_a_recorded_offline_transfer(fed):
    refused = researcher(fed, "access", "request", rid("closed"), "--purpose", "x",
                         "--accept-all", check=False)
    assert refused.returncode == 1 and "not delivered over the network" in refused.stderr
    disk = fed.root / "handed-over.csv"
    disk.write_bytes(node_file(fed, "closed").read_bytes())
    out = json.loads(fed.node_cli(
        NODE, "access", "record-offline", "closed", "--recipient", "alice (Zhejiang Univ.)",
        "--what", "closed.csv, all columns", "--medium", "encrypted USB disk, by hand",
        "--file", str(disk), "--key", str(fed.approver(NODE)), "--passphrase-file",
        str(fed.passphrase_file), "--json").stdout)
    truth = hashlib.sha256(disk.read_bytes()).hexdigest()
    assert out["sha256"] == truth and out["by"] == "officer"
    assert any(d["sha256"] == truth and d["recipient"].startswith("alice")
               for d in audit(fed, "access.offline"))
    verified = json.loads(fed.node_cli(NODE, "audit", "verify", "--json").stdout)
    assert verified["ok"]


def test_the_officer_denies_and_revokes_from_the_command_line(fed):
    held = researcher(fed, "access", "request", rid("cond"), "--purpose", "everything",
                      "--accept-all", "--study", "delivery")
    fed.node_cli(NODE, "access", "deny", held["grant_id"], "--reason", "purpose too broad",
                 "--key", str(fed.approver(NODE)), "--passphrase-file",
                 str(fed.passphrase_file))
    mine = {g["grant_id"]: g for g in researcher(fed, "access", "list")["grants"]}
    assert mine[held["grant_id"]]["state"] == "denied"
    assert mine[held["grant_id"]]["conditions"] == "purpose too broad"
    open_grant = researcher(fed, "access", "request", rid("open"), "--purpose", "x",
                            "--accept-all", "--columns", "island")
    fed.node_cli(NODE, "access", "revoke", open_grant["grant_id"], "--reason", "ended")
    late = researcher(fed, "access", "download", open_grant["grant_id"], "--out",
                      str(fed.root / "late.parquet"), check=False)
    assert late.returncode == 1 and "revoked" in late.stderr
    listed = json.loads(fed.node_cli(NODE, "access", "list", "--state", "revoked",
                                     "--json").stdout)
    assert [g["grant_id"] for g in listed] == [open_grant["grant_id"]]
