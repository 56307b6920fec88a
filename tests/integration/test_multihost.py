"""The federation across hosts: the coordinator and three nodes each in a network namespace
of its own (harness/netns.py), every connection over a veth link through a bridge. A
stats job and a short train job run across them; then one node's link is cut while a job
waits on it, and restored.

One federation serves the module, in order: the partition test runs last and spends ε
on the DP dataset only. Skips, saying why, where namespaces cannot be made (not root, no
iproute2, no CAP_SYS_ADMIN).
"""

from __future__ import annotations

import ipaddress
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from harness.federation import wait_for
from harness.netns import COORDINATOR, NO_NGINX, NetnsFederation, Network, nginx_path, unavailable
from jobs.train.models import load_model_file

pytestmark = pytest.mark.slow

ISLANDS = {"biscoe": "Biscoe", "dream": "Dream", "torgersen": "Torgersen"}
CUT = "torgersen"  # the node whose link is cut
COLS = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"]
CLASSES = ["Adelie", "Chinstrap", "Gentoo"]
TASK_TIMEOUT = 20.0  # seconds a job waits for a node's answer before counting it out
EPSILON = 1.0
DP_POLICY = {"dp": {"required": True, "epsilon_per_query": EPSILON, "annual_budget": 10.0}}
BOUNDS = {"body_mass_g": [2000, 7000]}


@pytest.fixture(scope="module")
def network():
    reason = unavailable()
    if reason:
        pytest.skip(f"multi-host test needs network namespaces: {reason}")
    if nginx_path() is None:
        pytest.skip(NO_NGINX)
    net = Network([COORDINATOR, *ISLANDS])
    try:
        net.create()
        yield net
    finally:
        net.destroy()


@pytest.fixture(scope="module")
def fed(network, tmp_path_factory, penguins, penguins_meta):
    fed = NetnsFederation(tmp_path_factory.mktemp("multihost"),
                          {n: f"Palmer {i}" for n, i in ISLANDS.items()}, network,
                          flower=True, task_timeout_seconds=TASK_TIMEOUT)
    try:
        fed.setup()
        fed.start_all()
        for node, island in ISLANDS.items():
            shard = penguins[penguins.island == island]
            fed.add_dataset(node, shard, penguins_meta, "penguins")
            # the same rows under DP; at the cut node also held for its officer's approval
            fed.add_dataset(node, shard, penguins_meta, "survey")
            policy = {**DP_POLICY, **({"approval_required": True} if node == CUT else {})}
            path = fed.node_dir(node) / "survey.policy.yaml"
            path.write_text(yaml.safe_dump(policy))
            fed.node_cli(node, "policy", "set", "survey", "--file", str(path),
                     "--justification", "tighter for this test")
        fed.create_study("pooled", {n: "penguins" for n in ISLANDS})
        fed.create_study("partition", {n: "survey" for n in ISLANDS}, min_nodes=2)
        fed.pooled = penguins
        yield fed
    finally:
        fed.stop_all()


def net_namespace(pid: int) -> str:
    return os.readlink(f"/proc/{pid}/ns/net")


def listening(pid: int) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket listening in ``pid``'s network namespace
    (/proc/PID/net/tcp and tcp6: gRPC binds IPv4 addresses as IPv4-mapped IPv6)."""
    found = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            if state != "0A":  # LISTEN
                continue
            hexaddr, port = local.split(":")
            # the kernel prints each 32-bit word in host (little-endian) order
            raw = b"".join(bytes.fromhex(hexaddr[i:i + 8])[::-1]
                           for i in range(0, len(hexaddr), 8))
            addr = ipaddress.ip_address(raw)
            if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
                addr = addr.ipv4_mapped
            found.add((str(addr), int(port, 16)))
    return found


def test_stats_across_hosts_equal_pooled_pandas(fed):
    # every host is its own network namespace, and none is this process's
    spaces = {key: net_namespace(p.pid) for key, p in fed.procs.items() if key != "proxy"}
    assert len(set(spaces.values())) == 1 + len(ISLANDS)
    assert net_namespace(os.getpid()) not in spaces.values()
    # the coordinator's servers listen on its namespace's address or loopback only
    coordinator_ip = fed.network.address(COORDINATOR)
    sockets = listening(fed.procs[COORDINATOR].pid)
    assert (coordinator_ip, fed.port) in sockets
    assert {a for a, _ in sockets} <= {coordinator_ip, "127.0.0.1"}, sockets
    df = fed.pooled
    with fed.researcher() as r:
        job = r.submit(yaml.safe_dump({
            "study": "pooled", "type": "stats", "datasets": {n: "penguins" for n in ISLANDS},
            "stats": {"columns": COLS, "group_counts": ["species"]}}))
        info = r.wait(job, timeout=180)
        assert info.status == "done", info.error
        res = r.result(job)
    assert sorted(info.contributors) == sorted(ISLANDS)
    assert res.rows == len(df)
    for col in COLS:
        row = res.summary.loc[col]
        assert row["count"] == df[col].count()
        assert row["mean"] == pytest.approx(df[col].mean(), rel=1e-6)
        assert row["variance"] == pytest.approx(df[col].var(), rel=1e-6)
    assert res.groups["species"].set_index("value")["count"].to_dict() == \
        df.species.value_counts().to_dict()


def test_a_short_train_job_across_hosts(fed, tmp_path):
    """The SuperNodes reach the SuperLink's Fleet API through the proxy on the
    coordinator's address; one round of HE FedAvg over the three namespaces."""
    pooled = fed.pooled.dropna(subset=[*COLS, "species"])
    spec = {"study": "pooled", "type": "train", "datasets": {n: "penguins" for n in ISLANDS},
            "train": {"features": COLS, "label": "species", "task": "classification",
                      "classes": CLASSES, "model": {"kind": "logistic_regression"},
                      "rounds": 1, "local_epochs": 20, "batch_size": 16, "lr": 0.5,
                      "validation_split": 0.1, "min_node_classes": 1,
                      "standardize": {f: [float(pooled[f].mean()), float(pooled[f].std())]
                                      for f in COLS}}}
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(spec))
    ident = ["--identity", str(fed.researcher_dir)]
    job = fed.cli("job", "submit", str(path), "--wait", *ident, timeout=900).stdout.strip()
    status = json.loads(fed.cli("job", "status", job, "--json", *ident).stdout)
    assert status["status"] == "done", status
    assert sorted(status["contributors"]) == sorted(ISLANDS)
    out = tmp_path / "result"
    fed.cli("job", "result", job, "--out", str(out), *ident)
    model, _ = load_model_file(out / "model.pt")
    with torch.no_grad():
        pred = model(torch.tensor(pooled[COLS].to_numpy(np.float32))).argmax(1).numpy()
    accuracy = float((np.array(CLASSES)[pred] == pooled.species.to_numpy()).mean())
    print(f"\none round across namespaces: accuracy {accuracy:.4f} on the pooled rows")
    assert accuracy >= 0.8  # a majority class alone scores 0.44


def spent(fed, node: str) -> float:
    """ε the node's ledger has charged on its DP dataset (`scifed node budget show`)."""
    rows = json.loads(fed.node_cli(node, "budget", "show", "--json").stdout)
    return sum(r["spent"] for r in rows if r["dataset_id"].endswith(":survey"))


def pending(fed, node: str, job: str) -> list[dict]:
    listed = json.loads(fed.node_cli(node, "approvals", "list", "--json").stdout)
    return [a for a in listed if a["job_id"] == job]


def online(fed, node: str) -> bool:
    with fed.operator() as op:
        nodes = op.nodes().set_index("name")
    return bool(nodes.loc[node, "online"])


def dp_job(fed) -> str:
    return yaml.safe_dump({"study": "partition", "type": "stats",
                           "datasets": {n: "survey" for n in ISLANDS},
                           "stats": {"columns": ["body_mass_g"], "dp": {"bounds": BOUNDS}}})


def test_a_cut_link_ends_the_job_on_quorum_and_the_node_rejoins(fed):
    """A DP job waits on the cut node's officer; its link goes down. The job ends on the
    study's quorum (2 of 3) within the task timeout, the cut node named in its task;
    restored, the node reconnects by itself, withdraws the request the job no longer
    needs, and the next job includes it. Each ledger charged ε once per job it
    contributed to, never twice."""
    others = sorted(set(ISLANDS) - {CUT})
    before = {n: spent(fed, n) for n in ISLANDS}
    with fed.researcher() as r:
        job = r.submit(dp_job(fed))
        wait_for(lambda: pending(fed, CUT, job), 60, f"the approval request at {CUT}")
        fed.cut(CUT)
        cut_at = time.monotonic()
        try:
            info = r.wait(job, timeout=3 * TASK_TIMEOUT + 30)
            took = time.monotonic() - cut_at
            assert not online(fed, CUT)  # the coordinator lost it: the cut was real
        finally:
            fed.restore(CUT)
        restored_at = time.monotonic()
        assert info.status == "done", info.error
        assert sorted(info.contributors) == others
        detail = " ".join(t.detail for t in info.tasks if t.node == CUT)
        # named, with why: the stream dropped, or no answer within the task timeout
        assert f"node {CUT}" in detail, info.tasks
        assert any(why in detail for why in ("disconnected before answering",
                                             f"did not answer within {TASK_TIMEOUT:.0f}s",
                                             f"offline past the {TASK_TIMEOUT:.0f}s")), detail
        print(f"\njob ended {took:.1f}s after the cut (task timeout {TASK_TIMEOUT:.0f}s): "
              f"{detail}")
        wait_for(lambda: online(fed, CUT), 120, f"{CUT} back online")
        print(f"{CUT} online {time.monotonic() - restored_at:.1f}s after the link came back")
        # told that the job ended without it, the node withdraws the request its officer
        # never decided: it cannot be approved (and charged) for a job that is over
        wait_for(lambda: not pending(fed, CUT, job), 30, "the stale request to be withdrawn")
        withdrawn = json.loads(fed.node_cli(CUT, "approvals", "list", "--state", "withdrawn",
                                            "--json").stdout)
        (stale,) = [a for a in withdrawn if a["job_id"] == job]
        out = fed.decide(CUT, "approve", stale["approval_id"], check=False)
        assert out.returncode != 0 and "already withdrawn" in out.stderr + out.stdout
        after = {n: spent(fed, n) for n in ISLANDS}
        assert after == {**{n: before[n] + EPSILON for n in others}, CUT: before[CUT]}
        # the next job includes it again (its officer approves this one)
        job2 = r.submit(dp_job(fed))
        wait_for(lambda: pending(fed, CUT, job2), 60, f"the next approval request at {CUT}")
        (req,) = pending(fed, CUT, job2)
        fed.decide(CUT, "approve", req["approval_id"])
        info2 = r.wait(job2, timeout=3 * TASK_TIMEOUT + 30)
    assert info2.status == "done", info2.error
    assert sorted(info2.contributors) == sorted(ISLANDS)
    final = {n: spent(fed, n) for n in ISLANDS}
    assert final == {**{n: before[n] + 2 * EPSILON for n in others},
                     CUT: before[CUT] + EPSILON}
