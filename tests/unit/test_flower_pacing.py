"""scifed's Flower pacing: it shortens exactly the SuperNode waits it names, in the real
flwr module, refuses an flwr that moved them, and `SCIFED_FLOWER_PACING=off` leaves
Flower stock."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scifed import flower_pacing as pacing
from scifed.errors import UserError

REAL = importlib.import_module(pacing.MODULE)


PULLS = importlib.import_module(pacing.PULLS)


@pytest.fixture
def restore(monkeypatch):
    """Whatever a test patches in the real modules is put back afterwards."""
    monkeypatch.setattr(REAL, "time", REAL.time)
    monkeypatch.setattr(REAL, pacing.ACTIVITY_HOOK, getattr(REAL, pacing.ACTIVITY_HOOK))
    for name in pacing.PULL_FUNCTIONS:
        function = getattr(PULLS, name)
        monkeypatch.setattr(function, "__kwdefaults__", dict(function.__kwdefaults__))
    return REAL


class _Clock:
    def __init__(self) -> None:
        self.slept: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)


def test_the_installed_flwr_sleeps_where_the_pacing_expects():
    """The ground truth is Flower's own source: one 3 s idle wait in the loop, two 0.5 s
    waits while pushing a reply, and no other sleep in the module."""
    source = Path(REAL.__file__).read_text()
    assert pacing.sleeps_in(source) == {"start_client_internal": [3.0],
                                        "_push_messages": [0.5, 0.5]}
    assert source.count("time.sleep(") == 3
    pacing.check(REAL, importlib.metadata.version("flwr"))


def test_apply_patches_only_the_supernode_loop_module(restore):
    original_hook = getattr(REAL, pacing.ACTIVITY_HOOK)
    pacer = pacing.apply()
    assert REAL.time is pacer
    # the loop's functions look ``time`` up in that module's globals, so they see it
    assert REAL.start_client_internal.__globals__["time"] is pacer
    assert getattr(REAL, pacing.ACTIVITY_HOOK).__wrapped__ is original_hook
    assert pacer.monotonic is time.monotonic  # everything else is the real module
    for other in ("flwr.supercore.superexec.run_superexec", "flwr.superlink.grid.http_grid",
                  "flwr.serverapp.strategy.strategy_utils"):
        assert importlib.import_module(other).__dict__.get("time", time) is time


def test_pull_backoff_reaches_every_caller_of_the_shared_pull_functions(restore):
    """The SuperNode, the node's executor and the ServerApp pull objects through these
    two functions; retries start after 0.05 s instead of 1 s and are capped at 0.5 s
    instead of 10 s, with as much total patience (tries x cap) as Flower's."""
    stock = {n: dict(getattr(PULLS, n).__kwdefaults__) for n in pacing.PULL_FUNCTIONS}
    for defaults in stock.values():
        assert (defaults["initial_backoff"], defaults["backoff_cap"],
                defaults["max_tries_per_object"]) == (1, 10, 500)
    pacing.apply_pull_backoff()
    for name in pacing.PULL_FUNCTIONS:
        assert getattr(PULLS, name).__kwdefaults__ == {
            **stock[name], "initial_backoff": 0.05, "backoff_cap": 0.5,
            "max_tries_per_object": 10_000}
    assert 0.5 * 10_000 == 10 * 500  # the same patience before a pull gives up
    callers = {"flwr.supernode.start_client_internal": "pull_objects",
               "flwr.superlink.grid.http_grid": "pull_objects",
               "flwr.supernode.runtime.run_clientapp": "pull_and_inflate_object_from_tree"}
    for module, name in callers.items():
        assert getattr(importlib.import_module(module), name) is getattr(PULLS, name)
    with pytest.raises(pacing.PacingMismatch, match="no longer backs off"):
        pacing.apply_pull_backoff()  # defaults no longer Flower's: refused, not doubled


def test_the_idle_wait_is_short_after_a_message_and_grows_back_to_flowers():
    clock = _Clock()
    pacer = pacing.PacedTime(sleeper=clock.sleep)
    pacer.sleep(3)                                   # idle since start: stock
    pacer.active()                                   # a message was handled
    for _ in range(30):
        pacer.sleep(3)
    idle = clock.slept[1:]
    assert idle[0] == pacing.IDLE_PACED
    assert all(b == min(a * pacing.IDLE_GROWTH, 3) for a, b in zip(idle, idle[1:], strict=False))
    assert idle[-1] == 3 and sum(idle[:8]) < 1       # fast at first, stock when idle
    pacer.active()
    pacer.sleep(3)
    pacer.sleep(0.5)                                 # waiting for a reply: short
    pacer.sleep(1.25)                                # any other wait: untouched
    assert clock.slept[0] == 3
    assert clock.slept[-3:] == [pacing.IDLE_PACED, pacing.REPLY_PACED, 1.25]


def test_the_real_push_loop_waits_the_paced_interval_and_marks_activity(restore):
    """Drive Flower's own ``_push_messages``: no reply yet, so it sleeps (0.05 s, not
    0.5 s); the next look ends the test. The node polls fast from then on."""
    pacer = pacing.apply()
    clock = _Clock()
    pacer.sleeper = clock.sleep

    class Done(Exception):
        pass

    class State:
        calls = 0

        def get_messages_legacy(self, is_reply: bool):
            State.calls += 1
            if State.calls > 1:
                raise Done
            return []

    with pytest.raises(Done):
        REAL._push_messages(state=State(), object_store=None, send=None, push_object=None)
    assert clock.slept == [pacing.REPLY_PACED]
    pacer.sleep(3)
    assert clock.slept[-1] == pacing.IDLE_PACED


def test_an_flwr_that_moved_its_sleeps_is_refused(tmp_path, monkeypatch):
    with pytest.raises(pacing.PacingMismatch, match=r"flwr 1\.42\.0 .*SCIFED_FLOWER_PACING"):
        pacing.check(REAL, "1.42.0")
    moved = tmp_path / "moved_loop.py"
    moved.write_text(Path(REAL.__file__).read_text().replace("time.sleep(3)",
                                                             "time.sleep(2)"))
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("moved_loop")
    with pytest.raises(pacing.PacingMismatch, match="no longer sleeps"):
        pacing.apply(module, "1.41.0")
    assert module.time is time  # nothing patched


def test_off_leaves_flower_stock(restore, monkeypatch):
    seen = {}

    def entry():
        seen["time"], seen["argv"] = REAL.time, list(sys.argv)
        return 0

    monkeypatch.setitem(pacing.SCRIPTS, "flower-supernode",
                        (f"{__name__}:_entry", ("supernode-loop",)))
    monkeypatch.setattr(sys.modules[__name__], "_entry", entry, raising=False)
    monkeypatch.setattr(sys, "argv", ["launcher"])
    monkeypatch.setenv(pacing.ENV, "off")
    pacing.run("flower-supernode", ["--insecure"])
    assert seen == {"time": time, "argv": ["flower-supernode", "--insecure"]}
    monkeypatch.setenv(pacing.ENV, "on")
    pacing.run("flower-supernode", [])
    assert isinstance(seen["time"], pacing.PacedTime)


def test_bad_switch_values_and_unknown_scripts_are_named():
    assert pacing.enabled({}) and pacing.enabled({pacing.ENV: "On"})
    assert not pacing.enabled({pacing.ENV: "OFF"})
    with pytest.raises(UserError, match="SCIFED_FLOWER_PACING='fast'"):
        pacing.enabled({pacing.ENV: "fast"})
    with pytest.raises(UserError, match="flower-superlink"):
        pacing.run("flower-superlink", [])


def test_the_launcher_runs_flowers_entry_point(tmp_path):
    launcher = pacing.write_launcher(tmp_path / "bin", "flower-supernode")
    assert launcher.name == "flower-supernode" and os.access(launcher, os.X_OK)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run([str(launcher), "--version"], capture_output=True, text=True,
                         env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert importlib.metadata.version("flwr") in out.stdout + out.stderr
    out = subprocess.run([str(launcher), "--version"], capture_output=True, text=True,
                         env={**env, pacing.ENV: "fast"}, timeout=120)
    assert out.returncode != 0 and "SCIFED_FLOWER_PACING='fast'" in out.stderr


@pytest.mark.parametrize("script", sorted(pacing.SCRIPTS))
def test_a_process_the_app_spawns_does_not_run_flower_again(tmp_path, script):
    """A spawned process (the HE chunk pool of a ServerApp or ClientApp summing or
    encrypting a long vector) runs the parent's main file as ``__mp_main__``, as
    ``runpy.run_path`` does here. Before the guard it ran Flower's entry point again: in a
    ServerApp, a second process pulled the run's task and the SuperLink failed the run
    ("412 Precondition Failed" on pull-task-input, a 1M-parameter model's first round)."""
    launcher = pacing.write_launcher(tmp_path / "bin", script)
    code = (f"import runpy; runpy.run_path({str(launcher)!r}, run_name='__mp_main__'); "
            "print('imported only')")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, timeout=120)
    assert out.returncode == 0 and "imported only" in out.stdout, out.stderr[-2000:]
    assert "with Flower pacing" not in out.stderr
