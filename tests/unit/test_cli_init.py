"""`coordinator init` and `node init` write configs a quick start trains with: the
coordinator runs a Flower SuperLink on `--flower-port` (9093 by default) and each node
points its SuperNode at the coordinator's host on that port unless told otherwise."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from cli.main import app
from scifed.config import CoordinatorConfig, NodeConfig, load_config


def run(*args: str) -> str:
    out = CliRunner().invoke(app, list(args))
    assert out.exit_code == 0, out.output
    return out.output


def test_coordinator_init_runs_a_superlink_by_default(tmp_path):
    run("coordinator", "init", "--dir", str(tmp_path / "c"), "--ca-dir", str(tmp_path / "ca"))
    cfg = load_config(tmp_path / "c" / "coordinator.yaml", CoordinatorConfig)
    assert cfg.flower_port == 9093


@pytest.mark.parametrize(("given", "expected"), [("7000", 7000), ("0", None)])
def test_coordinator_init_flower_port(tmp_path, given, expected):
    out = run("coordinator", "init", "--dir", str(tmp_path), "--flower-port", given, "--json")
    cfg = load_config(tmp_path / "coordinator.yaml", CoordinatorConfig)
    assert cfg.flower_port == expected
    assert json.loads(out)["flower_port"] == expected


@pytest.mark.parametrize(("given", "expected"), [
    ([], "coord.example.org:9093"),             # the coordinator's host, the default port
    (["--flower-superlink", "proxy.example.org:443"], "proxy.example.org:443"),
    (["--flower-superlink", "none"], None),     # this node does not train
])
def test_node_init_flower_superlink(tmp_path, given, expected):
    run("node", "init", "--name", "node-a", "--platform", "Key Lab of X", "--coordinator",
        "coord.example.org:7443", "--dir", str(tmp_path / "nodeA"), *given)
    cfg = load_config(tmp_path / "nodeA" / "node.yaml", NodeConfig)
    assert cfg.flower_superlink == expected
