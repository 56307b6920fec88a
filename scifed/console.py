"""What every CLI command shares: one clear line for a user error, tables, JSON output."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import grpc
import typer
from rich.console import Console
from rich.table import Table

from scifed.errors import UserError

console = Console()
err_console = Console(stderr=True)


def fail(message: str, code: int = 1) -> None:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def handle_errors(target: str = "the service") -> Callable:
    """Decorator: user errors and failed calls become one message and exit code 1."""

    def deco(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def run(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except UserError as exc:
                fail(str(exc))
            except grpc.RpcError as exc:
                from scifed.rpc import rpc_error_message

                fail(rpc_error_message(exc, target))

        return run

    return deco


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def print_table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    table = Table(title=title, title_justify="left")
    for c in columns:
        table.add_column(c, overflow="fold")
    for r in rows:
        table.add_row(*["" if v is None else str(v) for v in r])
    console.print(table)
