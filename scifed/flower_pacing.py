"""Shorter polling waits for the Flower processes scifed launches.

Why: Flower 1.41 waits on fixed intervals that cannot be configured, and in a round of a
small model they are most of the round (measured on this machine: a no-op round took
4.7 s stock, 1.7 s with the first patch below alone):

* the SuperNode loop (``flwr.supernode.start_client_internal``) sleeps 3 s whenever a
  pull from the SuperLink finds no message, and 0.5 s between looks for the ClientApp's
  reply. A node's reply is pushed, the next pull finds nothing (the other nodes are still
  training), and the next round's message then waits up to 3 s;
* pulling a message's objects (``flwr.supercore.inflatable.inflatable_utils``) backs
  off 1 s, then 2, 4, 8, 10 s, when an object is not there yet — the usual case, since a
  sender pushes a message before its objects: the SuperNode pulling from the SuperLink,
  the node's executor from the SuperNode and the ServerApp pulling replies each lost
  one to three seconds per message that way.

What it changes, and nothing else. ``supernode-loop``: the ``time`` that module sees is
replaced by a proxy whose ``sleep`` shortens exactly those two waits. The idle wait
starts at :data:`IDLE_PACED` after the node handled a message (tracked by wrapping
``_push_messages``, which Flower calls once per message received) and grows by
:data:`IDLE_GROWTH` per empty pull back to Flower's 3 s: the next round's message is seen
at most 25% of its wait late, a round costs the SuperLink a dozen pulls per node rather
than one every 0.05 s, and an idle federation polls its SuperLink no more often than
stock Flower. ``pull-backoff``: the back-off of the two pull functions' keyword defaults,
:data:`PULL_STOCK` → :data:`PULL_PACED` (the same total wait before a pull gives up).
Before patching, the installed flwr's version and the source are checked: the version
must be :data:`FLWR_SERIES`, the loop must sleep exactly where and how long this file
expects, the defaults must be Flower's; otherwise the launch fails with a message saying
what moved (``SCIFED_FLOWER_PACING=off`` runs stock Flower).

How it is applied: :func:`write_launcher` writes a small script named like Flower's
console script (``flower-supernode``, ``flwr-serverapp``) into a ``bin`` directory of the
process's Flower home, first on its PATH (the SuperLink's SuperExec starts
``flwr-serverapp`` by name); it applies the pacing unless ``SCIFED_FLOWER_PACING=off`` and
then runs Flower's own entry point with the same arguments. The node's own executor calls
:func:`apply_for` itself. Only processes scifed launches are affected; the installed flwr
is never modified.
"""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import inspect
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scifed.errors import UserError

ENV = "SCIFED_FLOWER_PACING"
FLWR_SERIES = "1.41."
MODULE = "flwr.supernode.start_client_internal"
IDLE_STOCK, IDLE_PACED = 3.0, 0.05   # s between pulls that found no message
IDLE_GROWTH = 1.25  # each empty pull after a message waits this much longer, up to stock
REPLY_STOCK, REPLY_PACED = 0.5, 0.05  # s between looks for the ClientApp's reply
ACTIVITY_HOOK = "_push_messages"  # called by the loop once per message received
PULLS = "flwr.supercore.inflatable.inflatable_utils"
PULL_FUNCTIONS = ("pull_objects", "pull_and_inflate_object_from_tree")
# A pull of an object not there yet retries after a back-off that doubles up to a cap, a
# bounded number of times. Stock: 1 s, cap 10 s, 500 tries (~5,000 s before giving up).
# Paced: 0.05 s, cap 0.5 s, 10,000 tries (the same ~5,000 s): an object that comes a
# moment after its message (the usual case) is seen within 0.5 s, not up to 10 s, later.
PULL_STOCK = {"initial_backoff": 1, "backoff_cap": 10, "max_tries_per_object": 500}
PULL_PACED = {"initial_backoff": 0.05, "backoff_cap": 0.5, "max_tries_per_object": 10_000}

# Every ``time.sleep(<seconds>)`` call in MODULE, by the top-level function holding it:
# what this file was written against (flwr 1.41.0). Anything else means Flower moved.
EXPECTED_SLEEPS = {"start_client_internal": [IDLE_STOCK],
                   ACTIVITY_HOOK: [REPLY_STOCK, REPLY_STOCK]}
# Flower console scripts scifed launches paced: their entry point, and what is patched.
SCRIPTS = {"flower-supernode": ("flwr.supernode.cli:flower_supernode",
                                ("supernode-loop", "pull-backoff")),
           "flwr-serverapp": ("flwr.superlink.cli:flwr_serverapp", ("pull-backoff",))}


class PacingMismatch(RuntimeError):
    """The installed flwr is not the one this pacing was written against."""


def enabled(environ: dict[str, str] | os._Environ = os.environ) -> bool:
    """Pacing is on unless ``SCIFED_FLOWER_PACING=off``."""
    value = environ.get(ENV, "on").strip().lower()
    if value not in ("on", "off"):
        raise UserError(f"{ENV}={environ[ENV]!r}: expected 'on' or 'off'")
    return value == "on"


@dataclass
class PacedTime:
    """Stands in for the ``time`` module inside MODULE: ``sleep`` shortens the two stock
    waits, everything else is the real ``time``."""

    idle: float = IDLE_PACED
    growth: float = IDLE_GROWTH
    reply: float = REPLY_PACED
    sleeper: Callable[[float], None] = time.sleep
    next_idle: float = IDLE_STOCK  # the next idle wait: stock until a message is handled

    def sleep(self, seconds: float) -> None:
        if seconds == IDLE_STOCK:
            seconds = self.next_idle
            self.next_idle = min(self.next_idle * self.growth, IDLE_STOCK)
        elif seconds == REPLY_STOCK:
            seconds = self.reply
        self.sleeper(seconds)

    def active(self) -> None:
        """A message was handled: the next round's may come soon."""
        self.next_idle = self.idle

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


def sleeps_in(source: str) -> dict[str, list[float]]:
    """``time.sleep(<constant>)`` calls in a module's source, by top-level function (a
    call that is not a constant is recorded as NaN, so it never matches)."""
    found: dict[str, list[float]] = {}
    for node in ast.parse(source).body:
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for call in ast.walk(node):
            if (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)
                    and call.func.attr == "sleep" and isinstance(call.func.value, ast.Name)
                    and call.func.value.id == "time"):
                arg = call.args[0] if call.args else None
                value = arg.value if isinstance(arg, ast.Constant) else float("nan")
                found.setdefault(node.name, []).append(float(value))
    return found


def check(module: Any, version: str) -> None:
    """Raise :class:`PacingMismatch` unless ``module`` is what this file patches."""
    check_version(version)
    found = sleeps_in(inspect.getsource(module))
    if found != EXPECTED_SLEEPS or not callable(getattr(module, ACTIVITY_HOOK, None)) \
            or getattr(module, "time", None) is not time:
        raise PacingMismatch(f"{module.__name__} of flwr {version} no longer sleeps as "
                             f"scifed's Flower pacing expects: found {found}, expected "
                             f"{EXPECTED_SLEEPS} (set {ENV}=off to run without it)")


def check_version(version: str) -> None:
    if not version.startswith(FLWR_SERIES):
        raise PacingMismatch(f"flwr {version} is installed; scifed's Flower pacing was "
                             f"written for flwr {FLWR_SERIES}x (set {ENV}=off to run "
                             "without it)")


def apply(module: Any | None = None, version: str | None = None) -> PacedTime:
    """Check, then patch the SuperNode loop's module; returns the pacer now in place."""
    module = module or importlib.import_module(MODULE)
    check(module, version or importlib.metadata.version("flwr"))
    pacer = PacedTime()
    hook = getattr(module, ACTIVITY_HOOK)

    def paced_hook(*args: Any, **kwargs: Any) -> Any:
        pacer.active()
        try:
            return hook(*args, **kwargs)
        finally:
            pacer.active()

    paced_hook.__wrapped__ = hook  # type: ignore[attr-defined]
    module.time = pacer
    setattr(module, ACTIVITY_HOOK, paced_hook)
    return pacer


def apply_pull_backoff(module: Any | None = None, version: str | None = None) -> None:
    """Check, then shorten the first back-off of Flower's object pulls (the functions
    are shared objects, so every module that imported them sees the new default)."""
    module = module or importlib.import_module(PULLS)
    check_version(version or importlib.metadata.version("flwr"))
    for name in PULL_FUNCTIONS:
        defaults = getattr(getattr(module, name, None), "__kwdefaults__", None) or {}
        if {k: defaults.get(k) for k in PULL_STOCK} != PULL_STOCK:
            raise PacingMismatch(f"{module.__name__}.{name} of flwr no longer backs off as "
                                 f"scifed's Flower pacing expects ({PULL_STOCK}; its keyword "
                                 f"defaults: {defaults}); set {ENV}=off to run without it")
    for name in PULL_FUNCTIONS:
        getattr(module, name).__kwdefaults__.update(PULL_PACED)


PATCHES: dict[str, Callable[[], Any]] = {"supernode-loop": apply,
                                         "pull-backoff": apply_pull_backoff}


def apply_for(patches: tuple[str, ...]) -> bool:
    """Apply the named patches unless pacing is off; whether they were applied."""
    if not enabled():
        return False
    for name in patches:
        PATCHES[name]()
    return True


def run(script: str, argv: list[str] | None = None) -> Any:
    """Run Flower's console script ``script`` in this process, paced unless turned off."""
    if script not in SCRIPTS:
        raise UserError(f"no Flower pacing for {script!r}; known: {', '.join(SCRIPTS)}")
    entry, patches = SCRIPTS[script]
    if apply_for(patches):  # one line in the process's log says it is paced
        print(f"scifed: {script} with Flower pacing ({', '.join(patches)}; {ENV}=off to "
              "run it stock)", file=sys.stderr, flush=True)
    module, _, attr = entry.partition(":")
    sys.argv = [script, *(sys.argv[1:] if argv is None else argv)]
    return getattr(importlib.import_module(module), attr)()


def write_launcher(bin_dir: Path, script: str) -> Path:
    """Write ``bin_dir/script``: Flower's ``script`` run through :func:`run` by this
    interpreter. Its name stays Flower's, so process listings read as usual. The call is
    under ``__main__``: a process the app spawns (the HE chunk pool) runs this file again
    as ``__mp_main__``, and without the guard became a second ServerApp pulling the same
    task, which the SuperLink refused (412), failing the run."""
    if script not in SCRIPTS:
        raise UserError(f"no Flower pacing for {script!r}; known: {', '.join(SCRIPTS)}")
    bin_dir.mkdir(parents=True, exist_ok=True)
    path = bin_dir / script
    text = (f"#!{sys.executable}\n"
            "# Written by scifed: Flower's console script with scifed's pacing\n"
            "# (scifed/flower_pacing.py; SCIFED_FLOWER_PACING=off runs it stock).\n"
            "import sys\n\n"
            "from scifed.flower_pacing import run\n\n"
            "if __name__ == \"__main__\":\n"
            f"    sys.exit(run({script!r}))\n")
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.chmod(0o755)
    tmp.replace(path)
    return path
