"""Every `scifed` command that prints something takes `--json` (for scripts), and what
it prints then is JSON and nothing else. The few exceptions print no report: they serve,
or they write a document in the --format asked for."""

from __future__ import annotations

import json

import click
import typer.main
from typer.testing import CliRunner

from cli.main import app

# command path -> why it takes no --json
NO_JSON = {
    "demo": "runs a federation and logs, until Ctrl-C",
    "coordinator serve": "a server: it logs",
    "node serve": "a server: it logs",
    "catalog export": "prints the record in the --format asked for (DCAT, Croissant)",
    "node catalog export": "prints the catalog in the --format asked for",
    "node audit export": "prints the chain in the --format asked for (jsonl, csv)",
}


def commands(group: click.Group, path: tuple[str, ...] = ()):
    for name, cmd in group.commands.items():
        if isinstance(cmd, click.Group):
            yield from commands(cmd, (*path, name))
        else:
            yield " ".join((*path, name)), cmd


def test_every_command_that_prints_takes_json():
    tree = dict(commands(typer.main.get_command(app)))
    assert set(NO_JSON) <= set(tree), "an exemption names a command that no longer exists"
    missing = [path for path, cmd in tree.items() if path not in NO_JSON
               and "--json" not in {o for p in cmd.params for o in getattr(p, "opts", [])}]
    assert missing == []


def test_json_output_is_json_only(tmp_path):
    """Commands that run without a server: their --json output parses as a whole (no
    rich markup or notes mixed in)."""
    runner = CliRunner()
    ca = str(tmp_path / "ca")
    for args in (["ca", "init", "--ca-dir", ca],
                 ["coordinator", "init", "--dir", str(tmp_path / "c"), "--ca-dir", ca],
                 ["researcher", "init", "--name", "alice", "--dir", str(tmp_path / "me")],
                 ["ca", "sign", str(tmp_path / "me" / "researcher.csr"), "--role",
                  "researcher", "--ca-dir", ca],
                 ["ca", "crl", "--ca-dir", ca],
                 ["ca", "list", "--ca-dir", ca]):
        out = runner.invoke(app, [*args, "--json"])
        assert out.exit_code == 0, out.output
        assert json.loads(out.stdout) is not None, args
