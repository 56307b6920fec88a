"""The data officer's controls on real nodes: approvals that hold a job, a denial the
researcher sees, DP with a budget that runs out, the differencing guard, and an audit
chain checked against the heads the coordinator recorded."""

from __future__ import annotations

import json
import sqlite3
import time

import pytest
import yaml

from harness.federation import LocalFederation, wait_for
from node.audit import AuditLog
from node.store import NodeStore

NODES = {"biscoe": "Palmer Biscoe", "dream": "Palmer Dream", "torgersen": "Palmer Torgersen"}
# Two-node studies: an exact result of two contributors is released only where every
# cell allows two (k <= 3), so dream's cell is G1/CLOSED (approval, k = 3).
GRADES = {"biscoe": ("G2", "OPEN"), "dream": ("G1", "CLOSED"), "torgersen": ("G1", "OPEN")}
DP_OVERRIDE = "dp:\n  required: true\n  epsilon_per_query: 1.0\n  annual_budget: 1.5\n"
BOUNDS = {"body_mass_g": [2000, 7000]}


def spec(study: str, nodes, **stats) -> str:
    return yaml.safe_dump({"study": study, "type": "stats",
                           "datasets": {n: "penguins" for n in nodes},
                           "stats": {"columns": ["body_mass_g"], **stats}})


@pytest.fixture(scope="module")
def fed(tmp_path_factory, penguins, penguins_meta):
    fed = LocalFederation(tmp_path_factory.mktemp("officer"), NODES, task_timeout_seconds=10)
    fed.setup()
    fed.start_all()
    try:
        for node, island in zip(NODES, ("Biscoe", "Dream", "Torgersen"), strict=True):
            grade, category = GRADES[node]
            meta = {**penguins_meta, "security_grade": grade, "sharing_category": category}
            if category == "CLOSED":
                meta["delivery_methods"] = ["metadata_only", "in_node_service"]
            fed.add_dataset(node, shard(penguins, island, grade), meta, "penguins")
        override = fed.node_dir("torgersen") / "policy.yaml"
        override.write_text(DP_OVERRIDE)
        fed.node_cli("torgersen", "policy", "set", "penguins", "--file", str(override),
                     "--justification", "tighter for this test")
        fed.create_study("approvals", {"biscoe": "penguins", "dream": "penguins"})
        fed.create_study("dp", {"biscoe": "penguins", "torgersen": "penguins"}, min_nodes=1)
        yield fed
    finally:
        fed.stop_all()


def shard(penguins, island: str, grade: str):
    """A node's rows. At G2 the node audits queries: a selection that leaves 1 to k-1
    rows apart (here, the one penguin of an island without measurements) is refused, so
    the G2 shards hold the measured penguins only."""
    rows = penguins[penguins.island == island]
    return rows.dropna(subset=["body_mass_g"]) if grade == "G2" else rows


def pending(fed, node: str) -> list[dict]:
    return json.loads(fed.node_cli(node, "approvals", "list", "--json").stdout)


def test_policy_show_names_sources_and_loosening_is_refused(fed):
    shown = json.loads(fed.node_cli("torgersen", "policy", "show", "penguins",
                                    "--json").stdout)
    rows = {r["setting"]: r for r in shown["settings"]}
    assert rows["agg_dp_required"]["value"] == "True"
    assert "policy.yaml" in rows["annual_budget"]["source"]
    assert rows["min_nodes"]["source"].startswith("default G1/OPEN")
    loose = fed.node_dir("biscoe") / "loose.yaml"
    loose.write_text("min_cell_count: 1\n")
    out = fed.node_cli("biscoe", "policy", "set", "penguins", "--file", str(loose),
                     "--justification", "tighter for this test",
                       check=False)
    assert out.returncode == 1 and "min_cell_count" in out.stderr and "tighten" in out.stderr
    after = json.loads(fed.node_cli("biscoe", "policy", "show", "penguins", "--json").stdout)
    assert {r["setting"]: r["value"] for r in after["settings"]}["min_cell_count"] == "3"


def test_approval_holds_the_job_until_the_officer_approves(fed):
    with fed.researcher() as r:
        job = r.submit(spec("approvals", ["biscoe", "dream"], measures=["count", "mean"]))
        wait_for(lambda: pending(fed, "dream"), 30, "the approval request at dream")
        status = fed.cli("job", "status", job, "--identity", str(fed.researcher_dir)).stdout
        assert "waiting for approval at node dream" in " ".join(status.split())
        assert r.job(job).status == "running"
        (req,) = pending(fed, "dream")
        assert req["job_id"] == job and req["researcher"] == "alice"
        fed.decide("dream", "approve", req["approval_id"], "--expires", "1d")
        info = r.wait(job, timeout=60)
        assert info.status == "done", info.error
        res = r.result(job)
    pooled = fed_penguins(fed)
    assert res.summary.loc["body_mass_g", "count"] == pooled.body_mass_g.count()


def fed_penguins(fed):
    import palmerpenguins

    df = palmerpenguins.load_penguins()
    return df[df.island.isin(["Biscoe", "Dream"])].dropna(subset=["body_mass_g"])


def test_a_denial_reaches_the_researcher_and_fails_the_job_without_quorum(fed):
    with fed.researcher() as r:
        job = r.submit(spec("approvals", ["biscoe", "dream"]))
        wait_for(lambda: pending(fed, "dream"), 30, "the approval request")
        (req,) = pending(fed, "dream")
        fed.decide("dream", "deny", req["approval_id"], "--reason", "purpose outside the DUA")
        info = r.wait(job, timeout=60)
    assert info.status == "failed"
    assert "purpose outside the DUA" in info.error and "dream" in info.error


def test_approvers_are_people_with_keys(fed, tmp_path):
    """`approver add|list|remove`, and a decision only with a registered key and its
    passphrase: a name alone, a wrong passphrase, a key nobody registered and a removed
    approver's key each get one message and leave the request pending. After the first
    officer and security lead, `approver add|remove` needs both their countersignatures
    (`--countersign KEY --countersign-passphrase-file FILE`, twice)."""
    officer = fed.approver("dream")
    fed.approver("dream", "li", "liaison")  # countersigned (the security lead first)
    listed = json.loads(fed.node_cli("dream", "approver", "list", "--json").stdout)
    assert [(p["name"], p["role"]) for p in listed] == [
        ("officer", "officer"), ("security", "security_lead"), ("li", "liaison")]
    assert all(p["fingerprint"].startswith("SHA256:") for p in listed)
    assert oct(officer.stat().st_mode & 0o777) == "0o600"
    assert oct(officer.parent.stat().st_mode & 0o777) == "0o700"
    phrase = ("--passphrase-file", str(fed.passphrase_file))
    alone = fed.node_cli("dream", "approver", "add", "mallory", "--role", "security_lead",
                         "--key-out", str(tmp_path / "mallory.key"), *phrase, check=False)
    assert alone.returncode == 1 and "needs the countersignatures" in alone.stderr
    one = fed.node_cli("dream", "approver", "add", "mallory", "--role", "security_lead",
                       "--key-out", str(tmp_path / "mallory.key"), *phrase,
                       *fed.countersign("dream")[:4], check=False)
    assert one.returncode == 1 and "countersigned by officer (officer)" in one.stderr
    assert not (tmp_path / "mallory.key").exists()
    again = fed.node_cli("dream", "approver", "add", "li", "--role", "liaison", "--key-out",
                         str(tmp_path / "li2.key"), *phrase, *fed.countersign("dream"),
                         check=False)
    assert again.returncode == 1 and "li is already an approver" in again.stderr
    assert not (tmp_path / "li2.key").exists()  # a refused registration leaves no key
    out = fed.node_cli("dream", "approver", "remove", "li", check=False)
    assert out.returncode == 1 and "needs the countersignatures" in out.stderr
    with fed.researcher() as r:
        job = r.submit(spec("approvals", ["biscoe", "dream"]))
        wait_for(lambda: pending(fed, "dream"), 30, "the approval request")
        (req,) = pending(fed, "dream")
        aid = req["approval_id"]
        by_name = fed.node_cli("dream", "approvals", "approve", aid, "--as", "officer",
                               check=False)
        assert by_name.returncode == 2 and "--as" in by_name.stderr
        wrong = tmp_path / "wrong"
        wrong.write_text("not the passphrase\n")
        out = fed.node_cli("dream", "approvals", "approve", aid, "--key", str(officer),
                           "--passphrase-file", str(wrong), check=False)
        assert out.returncode == 1 and "wrong passphrase" in out.stderr
        from scifed.approver_keys import new_key, write_key

        stranger = tmp_path / "keys" / "stranger.key"
        write_key(stranger, new_key(), b"a passphrase for the test approvers")
        out = fed.node_cli("dream", "approvals", "approve", aid, "--key", str(stranger),
                           "--passphrase-file", str(fed.passphrase_file), check=False)
        assert out.returncode == 1 and "is not a registered approver at node dream" in \
            out.stderr
        assert "countersigned by officer, security" in fed.remove_approver("dream",
                                                                           "li").stdout
        out = fed.decide("dream", "approve", aid, name="li", check=False)
        assert out.returncode == 1 and "not a registered approver" in out.stderr
        assert [a["approval_id"] for a in pending(fed, "dream")] == [aid]
        fed.decide("dream", "deny", aid, "--reason", "not this time")
        info = r.wait(job, timeout=60)
    assert info.status == "failed" and "not this time" in info.error
    audit = json.loads(fed.node_cli("dream", "audit", "list", "--json").stdout)
    deny = [e for e in audit if e["action"] == "approval.deny"
            and e["details"]["approval_id"] == aid]
    assert [(e["actor"], e["details"]["role"]) for e in deny] == [("officer", "officer")]
    assert deny[0]["details"]["key"] == listed[0]["fingerprint"]
    assert {"approver.add", "approver.remove"} <= {e["action"] for e in audit}
    adds = {e["details"]["name"]: e["details"] for e in audit if e["action"] == "approver.add"}
    assert adds["officer"]["bootstrap"] and adds["security"]["bootstrap"]
    assert [c["by"] for c in adds["li"]["countersigned_by"]] == ["officer", "security"]


def test_a_job_waiting_for_approval_can_be_cancelled(fed):
    with fed.researcher() as r:
        job = r.submit(spec("approvals", ["biscoe", "dream"]))
        wait_for(lambda: any(t.state == "waiting" for t in r.job(job).tasks), 30,
                 "the approval hold")
        assert r.cancel(job).job_id == job
        info = r.wait(job, timeout=30)
    assert info.status == "cancelled" and info.error == "cancelled by alice"
    # The request leaves the officer's queue, audited; it can no longer be decided.
    wait_for(lambda: not pending(fed, "dream"), 30, "the request to be withdrawn")
    (req,) = [a for a in json.loads(fed.node_cli("dream", "approvals", "list", "--state",
                                                 "withdrawn", "--json").stdout)
              if a["job_id"] == job]
    out = fed.decide("dream", "approve", req["approval_id"], check=False)
    assert out.returncode != 0 and "already withdrawn" in out.stderr + out.stdout
    audit = fed.node_cli("dream", "audit", "list", "--json").stdout
    assert "approval.withdrawn" in audit and job in audit


def test_dp_charges_the_budget_then_refuses_with_what_is_left(fed):
    with fed.researcher() as r:
        job = r.submit(spec("dp", ["biscoe", "torgersen"], dp={"bounds": BOUNDS},
                            histograms={"body_mass_g": [2500, 3500, 4500, 5500, 6500]}))
        info = r.wait(job, timeout=60)
        assert info.status == "done", info.error
        res = r.result_json(job)
        privacy = res["privacy"]["torgersen"]
        assert privacy["epsilon"] == 1.0 and privacy["delta"] == 0.0
        assert privacy["clipping_bounds"] == {"body_mass_g": [2000.0, 7000.0]}
        assert "Laplace" in privacy["mechanism"]
        budget = json.loads(fed.node_cli("torgersen", "budget", "show", "--json").stdout)
        assert budget[0]["spent"] == 1.0 and budget[0]["left"] == 0.5
        assert budget[0]["by_researcher"] == {"alice": 1.0}
        # The next query needs ε=1 with 0.5 left: torgersen refuses, the quorum (1) holds.
        job2 = r.submit(spec("dp", ["biscoe", "torgersen"], dp={"bounds": BOUNDS}))
        info2 = r.wait(job2, timeout=60)
    assert info2.status == "done" and list(info2.contributors) == ["biscoe"], info2.error
    detail = " ".join(t.detail for t in info2.tasks if t.node == "torgersen")
    assert "0.5 of the annual 1.5 is left" in detail
    budget = json.loads(fed.node_cli("torgersen", "budget", "show", "--json").stdout)
    assert budget[0]["spent"] == 1.0  # a refused job is not charged


def test_differencing_query_is_refused(fed, penguins):
    biscoe = shard(penguins, "Biscoe", "G2")
    top = biscoe.body_mass_g.max()
    assert (biscoe.body_mass_g == top).sum() == 1
    # G2 data needs 2 nodes in the job; torgersen's budget is spent, so biscoe answers
    # alone (the study's quorum is 1) and its query auditor holds the jobs above.
    with fed.researcher() as r:
        job = r.submit(yaml.safe_dump({
            "study": "dp", "type": "stats",
            "datasets": {"biscoe": "penguins", "torgersen": "penguins"},
            "filter": f"body_mass_g < {top} or body_mass_g is None",
            "stats": {"columns": ["body_mass_g"], "measures": ["count", "sum"]}}))
        info = r.wait(job, timeout=60)
    assert info.status == "failed"
    assert "query auditing" in info.error and "fewer than k" in info.error
    assert "differ" not in info.error  # no count of the rows it would describe


def test_audit_chain_verifies_and_a_rewrite_is_caught_by_the_coordinator(fed):
    out = fed.node_cli("biscoe", "audit", "verify", "--against-coordinator")
    assert "intact" in out.stdout and "heads recorded by the coordinator match" in out.stdout
    entries = json.loads(fed.node_cli("biscoe", "audit", "list", "--json").stdout)
    actions = {e["action"] for e in entries}
    assert {"dataset.add", "study.accept", "task.allow", "task.release",
            "result.seal"} <= actions
    export = fed.node_cli("biscoe", "audit", "export", "--format", "csv").stdout
    assert export.startswith("seq,ts_ms,actor")
    # Rewrite history after the fact: drop the tail and re-append a consistent chain.
    db = fed.node_dir("biscoe") / "state" / "node.db"
    with sqlite3.connect(db) as con:
        con.execute("DELETE FROM audit WHERE seq > 3")
    log = AuditLog(NodeStore(db))
    for i in range(len(entries)):
        log.append("officer", "dataset.add", f"forged-{i}", {"t": time.time()})
    local = fed.node_cli("biscoe", "audit", "verify", check=False)
    assert local.returncode == 0  # internally consistent...
    remote = fed.node_cli("biscoe", "audit", "verify", "--against-coordinator", check=False)
    assert remote.returncode == 1 and "rewritten" in remote.stderr  # ...but caught


def test_bad_officer_input_gives_one_message(fed):
    key = ("--key", str(fed.approver("biscoe")), "--passphrase-file", str(fed.passphrase_file))
    for args, needle in ((("budget", "show", "nope"), "no dataset 'nope'"),
                         (("approvals", "approve", "ap-nope", *key),
                          "no approval request 'ap-nope'"),
                         (("policy", "show", "nope"), "no dataset 'nope'"),
                         (("audit", "export", "--format", "xml"), "jsonl or csv")):
        out = fed.node_cli("biscoe", *args, check=False)
        assert out.returncode == 1 and needle in out.stderr, (args, out.stderr)
        assert "Traceback" not in out.stderr


def test_registration_checks_the_column_dictionary_against_the_data(fed, penguins_meta):
    """Through `scifed node dataset add`: an Origin enumeration every car breaks is
    refused with its count and nothing registered; --accept-violations registers it with
    the count in the record; a metadata problem comes in the same message."""
    from vega_datasets import data as vega

    cars = vega.cars()
    cars.to_csv(fed.node_dir("torgersen") / "data" / "cars.csv", index=False)
    meta = {k: v for k, v in penguins_meta.items()
            if k not in ("fields", "targets", "splits", "annotation")}
    meta |= {"title": {"en": "Cars"}, "description": {"en": "Cars (vega_datasets)."},
             "fields": {"Origin": {"description": "Region of manufacture.",
                                   "constraints": {"enum": ["EU", "JP", "US"]}}}}
    path = fed.node_dir("torgersen") / "cars.meta.yaml"

    def add(meta: dict, *flags: str):
        path.write_text(yaml.safe_dump(meta, allow_unicode=True))
        return fed.node_cli("torgersen", "dataset", "add", "cars.csv", "--meta", str(path),
                            *flags, check=False)

    def registered() -> list[str]:
        listed = json.loads(fed.node_cli("torgersen", "dataset", "list", "--json").stdout)
        return [d["id"] for d in listed]

    out = add({**meta, "version": "one"})
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "version: 'one' is not a MAJOR.MINOR.PATCH version" in out.stderr
    assert f"column Origin: {len(cars)} of {len(cars)} rows break constraints.enum" in out.stderr
    assert "USA" not in out.stderr and "--accept-violations" in out.stderr
    assert "cars" not in registered()

    out = add(meta, "--accept-violations")
    assert out.returncode == 0, out.stderr
    record = json.loads(fed.node_cli("torgersen", "dataset", "show", "cars", "--json").stdout)
    assert record["constraint_violations"] == [
        {"column": "Origin", "constraint": "enum", "rows": len(cars), "of": len(cars)}]
    fed.node_cli("torgersen", "dataset", "remove", "cars")
