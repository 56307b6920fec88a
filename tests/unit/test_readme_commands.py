"""The README's commands exist as written: every `scifed` line of its shell blocks names
a real command path, only options that command has, and no more positional arguments
than it takes. `a | b` lists sibling subcommands (`dataset list | show ID`), `[...]`
an optional part. So the quick start cannot drift from the CLI."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest
import typer.main

from cli.main import app

README = Path(__file__).resolve().parents[2] / "README.md"
ROOT = typer.main.get_command(app)


def shell_lines(text: str) -> list[str]:
    """The `scifed ...` commands of the ```bash blocks, continuation lines joined."""
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            if line.strip().startswith("scifed "):
                lines.append(line.strip())
    return lines


def check(line: str) -> None:
    """Raise AssertionError naming what in ``line`` the CLI does not have."""
    commands: list[list[str]] = [[]]
    for t in shlex.split(line, comments=True):  # `a && b`: each command on its own
        commands.append([]) if t in ("&&", ";") else commands[-1].append(t)
    for tokens in commands:
        if tokens and tokens[0] == "scifed":
            _check(line, [t.strip("[]") for t in tokens[1:] if t.strip("[]")])


def _check(line: str, tokens: list[str]) -> None:
    parts: list[list[str]] = [[]]
    for t in tokens:
        parts.append([]) if t == "|" else parts[-1].append(t)
    group: click.Group = ROOT
    for i, part in enumerate(parts):
        cmd, rest = (ROOT, part) if i == 0 else (group, part)
        while isinstance(cmd, click.Group) and rest:
            assert rest[0] in cmd.commands, f"{line!r}: no command {rest[0]!r} in {cmd.name!r}"
            group, cmd, rest = cmd, cmd.commands[rest[0]], rest[1:]
        assert not isinstance(cmd, click.Group), f"{line!r}: {cmd.name!r} needs a subcommand"
        options = {o: p for p in cmd.params if isinstance(p, click.Option) for o in p.opts}
        arguments = [p for p in cmd.params if isinstance(p, click.Argument)]
        positional, j = 0, 0
        while j < len(rest):
            token = rest[j]
            if token.startswith("--"):
                name = token.split("=", 1)[0]
                assert name in options, f"{line!r}: {cmd.name!r} has no option {name}"
                opt = options[name]
                j += 1 if opt.is_flag or "=" in token else 2
                continue
            positional += 1
            j += 1
        most = float("inf") if any(a.nargs == -1 for a in arguments) else len(arguments)
        assert positional <= most, (f"{line!r}: {cmd.name!r} takes {most} positional "
                                    f"argument(s), the README gives {positional}")


LINES = shell_lines(README.read_text(encoding="utf-8"))


def test_the_readme_has_commands_to_check():
    assert len(LINES) > 30
    assert any(line.startswith("scifed ca revoke") for line in LINES)


@pytest.mark.parametrize("line", LINES)
def test_a_readme_command_exists_as_written(line):
    check(line)


@pytest.mark.parametrize("line", [
    "scifed ca revoke nodeA --role node --ca-dir ca",    # the name is an option now
    "scifed job lst",                                      # no such command
    "scifed coordinator init --flower-prot 9093",          # no such option
    "scifed node dataset list | shw ID",                   # no such sibling
])
def test_a_drifted_command_is_caught(line):
    with pytest.raises(AssertionError):
        check(line)
