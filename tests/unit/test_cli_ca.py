"""`scifed ca revoke --name` revokes by the name a certificate was issued to, as the
README shows; a directory name instead is refused with the names that would work."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from cli.main import app


def cli(*args: str, ok: bool = True):
    out = CliRunner().invoke(app, list(args))
    assert (out.exit_code == 0) == ok, out.output
    return out


def test_revoke_by_node_name(tmp_path):
    ca = str(tmp_path / "ca")
    cli("ca", "init", "--ca-dir", ca)
    cli("node", "init", "--name", "node-a", "--platform", "Key Lab of X",
        "--coordinator", "127.0.0.1:7443", "--dir", str(tmp_path / "nodeA"))
    signed = json.loads(cli("ca", "sign", str(tmp_path / "nodeA" / "pki" / "node.csr"),
                            "--role", "node", "--ca-dir", ca, "--json").stdout)
    wrong = cli("ca", "revoke", "--name", "nodeA", "--role", "node", "--ca-dir", ca, ok=False)
    assert "name='nodeA'" in wrong.output and "active names: coordinator, node-a" in wrong.output
    out = json.loads(cli("ca", "revoke", "--name", "node-a", "--role", "node", "--ca-dir", ca,
                         "--json").stdout)
    assert out["serial"] == signed["serial"]
    issued = json.loads(cli("ca", "list", "--ca-dir", ca, "--json").stdout)
    assert {c["name"]: c["revoked"] for c in issued} == {"coordinator": False, "node-a": True}
