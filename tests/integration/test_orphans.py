"""The attack: `kill -9` a node or the coordinator and look for what it leaves running.

A node supervises its Flower SuperNode (which runs a SuperExec, and a ClientApp per
task), the coordinator its SuperLink (SuperExec, a ServerApp per run), each in process
groups and sessions of their own, so a SIGKILL of the main process reaches none of them
by itself. A SuperNode left running keeps its key "online" on the SuperLink, and the
restarted node's SuperNode then fails to activate in a loop until the stray is killed by
hand.

Every process of a tree is recorded by PID and start time (from /proc) before the kill
and checked by the same two numbers after it, so a reused PID never counts as a
survivor and nothing is looked up by process name.
"""

from __future__ import annotations

import os
import signal
import time
from datetime import datetime
from pathlib import Path

import pytest
from flwr.proto.control_pb2 import ListNodesRequest  # pylint: disable=no-name-in-module

from coordinator.flower import SuperLink
from harness.federation import LocalFederation, wait_for
from scifed.config import CoordinatorConfig, load_config

pytestmark = pytest.mark.slow

NODE = "solo"
CLEANUP_SECONDS = 10.0  # SIGTERM first (the SuperNode deactivates itself), then SIGKILL


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, start time) of a process, None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0], int(fields[1]), int(fields[19])


def _argv(pid: int) -> list[str]:
    try:
        return [a.decode(errors="replace")
                for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]
    except OSError:
        return []


def process_tree(root: int) -> dict[int, tuple[int, list[str]]]:
    """Every live descendant of ``root``: pid -> (start time, argv)."""
    parent = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (st := _stat(int(entry.name))) is not None:
            parent[int(entry.name)] = st[1]
    found, frontier = set(), {root}
    while frontier:
        frontier = {pid for pid, ppid in parent.items() if ppid in frontier} - found
        found |= frontier
    tree = {}
    for pid in found:
        st = _stat(pid)
        if st is not None and st[0] != "Z":
            tree[pid] = (st[2], _argv(pid))
    return tree


def survivors(tree: dict[int, tuple[int, list[str]]]) -> dict[int, list[str]]:
    """The recorded processes still running: same PID *and* same start time."""
    out = {}
    for pid, (started, argv) in tree.items():
        st = _stat(pid)
        if st is not None and st[2] == started and st[0] != "Z":
            out[pid] = argv
    return out


def runs(tree: dict[int, tuple[int, list[str]]], script: str) -> list[int]:
    """PIDs in the recorded tree whose command line runs the Flower script ``script``."""
    return [pid for pid, (_, argv) in tree.items()
            if any(Path(a).name == script for a in argv[:2])]


def wait_gone(tree: dict[int, tuple[int, list[str]]], timeout: float) -> float:
    """Seconds until no recorded process survives; fails naming the survivors."""
    started = time.monotonic()
    while survivors(tree):
        if time.monotonic() - started > timeout:
            alive = survivors(tree)
            for pid in alive:  # clean up after the failed attack: by PID, never by name
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            pytest.fail(f"{len(alive)} process(es) survived the SIGKILL by {timeout:.0f}s: "
                        + "; ".join(f"{pid}: {' '.join(a)[:120]}" for pid, a in alive.items()))
        time.sleep(0.05)
    return time.monotonic() - started


def superlink(fed) -> SuperLink:
    """A Control API client of the coordinator's SuperLink (the process is the
    coordinator's; this object only talks to it)."""
    cfg = load_config(fed.coord_dir / "coordinator.yaml", CoordinatorConfig)
    return SuperLink(cfg.state_dir, cfg.tls.files(), port=cfg.flower_port)


def flower_node(link: SuperLink, name: str):
    infos = [i for i in link.control().ListNodes(ListNodesRequest()).nodes_info
             if i.name == name and i.status != "unregistered"]
    assert len(infos) == 1, infos
    return infos[0]


def activated_since(link: SuperLink, name: str, since: float) -> bool:
    """The node's SuperNode is online on the SuperLink through an activation after
    ``since`` (a wall-clock time): a new SuperNode, not a stale "online" status."""
    info = flower_node(link, name)
    return (info.status == "online" and bool(info.last_activated_at)
            and datetime.fromisoformat(info.last_activated_at).timestamp() > since)


def kill_and_measure(fed, key: str) -> tuple[dict, float]:
    """SIGKILL the main process of ``key``; returns its recorded tree and the seconds
    until none of that tree was left."""
    proc = fed.procs[key]
    tree = process_tree(proc.pid)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(5)
    fed.procs.pop(key)
    return tree, wait_gone(tree, CLEANUP_SECONDS)


@pytest.fixture(scope="module")
def fed(tmp_path_factory):
    fed = LocalFederation(tmp_path_factory.mktemp("orphans"), {NODE: "Palmer"}, flower=True)
    fed.setup()
    fed.start_all()
    try:
        yield fed
    finally:
        fed.stop_all()


@pytest.fixture
def link(fed):
    link = superlink(fed)
    try:
        yield link
    finally:
        link.stop()  # closes its Control API client only


def test_a_killed_node_leaves_no_supernode_and_gets_it_back_on_restart(fed, link):
    wait_for(lambda: activated_since(link, NODE, 0), 120, "the SuperNode to be online")
    tree = process_tree(fed.procs[NODE].pid)
    assert runs(tree, "flower-supernode"), f"no SuperNode in the node's tree: {tree}"

    tree, latency = kill_and_measure(fed, NODE)
    print(f"\nnode SIGKILL: its {len(tree)} processes gone after {latency:.2f}s")

    restarted = time.time()
    fed.start_node(NODE)
    wait_for(lambda: activated_since(link, NODE, restarted), 60,
             "the restarted node's SuperNode to activate")
    new_tree = process_tree(fed.procs[NODE].pid)
    (supernode,) = runs(new_tree, "flower-supernode")
    time.sleep(4)  # a SuperNode refused activation exits at once; this one stays
    assert survivors({supernode: new_tree[supernode]}), "the new SuperNode exited"
    assert flower_node(link, NODE).status == "online"


def test_a_killed_coordinator_leaves_no_superlink_and_gets_it_back_on_restart(fed, link):
    tree = process_tree(fed.procs["coordinator"].pid)
    assert runs(tree, "flower-superlink"), f"no SuperLink in the coordinator's tree: {tree}"
    assert runs(tree, "flower-superexec"), f"no SuperExec in the coordinator's tree: {tree}"

    tree, latency = kill_and_measure(fed, "coordinator")
    print(f"\ncoordinator SIGKILL: its {len(tree)} processes gone after {latency:.2f}s")

    restarted = time.time()
    fed.start_coordinator()  # the port is free again: nothing of the old tree holds it
    wait_for(link.healthy, 60, "the new SuperLink")
    new_tree = process_tree(fed.procs["coordinator"].pid)
    assert runs(new_tree, "flower-superlink")
    # The node sees the coordinator's new Flower epoch and restarts its SuperNode, which
    # activates on the new SuperLink.
    wait_for(lambda: activated_since(link, NODE, restarted), 90,
             "the node's SuperNode to activate on the new SuperLink")
