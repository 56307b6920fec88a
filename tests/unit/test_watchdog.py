"""The watchdog every supervised child runs under (scifed/watchdog.py), with plain Python
children standing in for Flower: one SIGTERM on the lifeline's EOF (a second would cut a
Flower process's graceful stop), orphans in other sessions adopted and killed, the
pidfile private, and recorded processes signalled only while they are still the
recorded ones."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from scifed import watchdog

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="Linux /proc")

# Like a Flower server: the first SIGTERM starts a graceful stop (0.5 s) and restores the
# default action, so a second SIGTERM would kill it before it writes "done". It also
# leaves an orphan in a session of its own (as the SuperLink's SuperExec lives).
CHILD = textwrap.dedent("""
    import os, signal, sys, time
    out = sys.argv[1]
    def on_term(*_):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        with open(out, "a") as f: f.write("term\\n")
        time.sleep(0.5)
        with open(out, "a") as f: f.write("done\\n")
        sys.exit(0)
    signal.signal(signal.SIGTERM, on_term)
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            with open(out + ".orphan", "w") as f: f.write(str(os.getpid()))
            time.sleep(60)
        os._exit(0)
    while True:
        time.sleep(0.1)
""")


def wait_for(predicate, timeout: float = 10.0) -> float:
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise AssertionError("timed out")
        time.sleep(0.02)
    return time.monotonic() - started


def start(tmp_path: Path, grace: float = 3.0, lifeline_at: int | None = None):
    lifeline_r, lifeline_w = os.pipe()
    if lifeline_at is not None:  # as a supervisor with many files open hands it over
        os.dup2(lifeline_r, lifeline_at)
        os.close(lifeline_r)
        lifeline_r = lifeline_at
    pidfile, out = tmp_path / "child.pids", tmp_path / "child.out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "scifed.watchdog", "--lifeline", str(lifeline_r),
         "--pidfile", str(pidfile), "--grace", str(grace), "--",
         sys.executable, "-c", CHILD, str(out)],
        pass_fds=(lifeline_r,), start_new_session=True)
    os.close(lifeline_r)
    orphan_file = Path(str(out) + ".orphan")
    wait_for(lambda: orphan_file.exists() and orphan_file.read_text())
    orphan = int(orphan_file.read_text())
    return proc, lifeline_w, pidfile, out, orphan


def running(pid: int, started: int) -> bool:
    return watchdog.is_running(pid, started)


# 1500: select() refuses a descriptor above 1024, and a supervisor with many sockets open
# (a test worker, a coordinator with many nodes) hands the watchdog exactly such a lifeline.
@pytest.mark.parametrize("lifeline_at", [None, 1500], ids=["low-fd", "fd-above-1024"])
def test_the_lifeline_closing_ends_the_whole_tree_with_one_sigterm(tmp_path, lifeline_at):
    proc, lifeline, pidfile, out, orphan = start(tmp_path, lifeline_at=lifeline_at)
    try:
        # The orphan (its own session, its parent gone) is the watchdog's now, and recorded.
        wait_for(lambda: watchdog._stat(orphan)[1] == proc.pid)
        wait_for(lambda: pidfile.exists() and orphan in dict(
            map(tuple, watchdog.read_record(pidfile)["procs"])))
        assert stat.S_IMODE(pidfile.stat().st_mode) == 0o600
        record = watchdog.read_record(pidfile)
        assert record["owner"] == [os.getpid(), watchdog.start_time(os.getpid())]
        orphan_start = watchdog.start_time(orphan)
        os.close(lifeline)  # as if the supervisor were SIGKILLed
        took = wait_for(lambda: proc.poll() is not None)
        assert took < 3.0, took
        assert out.read_text() == "term\ndone\n"  # one SIGTERM, its graceful stop finished
        assert proc.returncode == 0
        assert not running(orphan, orphan_start)
        assert not pidfile.exists()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def test_a_sigterm_to_the_whole_group_is_not_doubled(tmp_path):
    proc, lifeline, pidfile, out, orphan = start(tmp_path)
    try:
        time.sleep(1.2)  # a tick: the watchdog has seen the child handle SIGTERM
        os.killpg(proc.pid, signal.SIGTERM)  # watchdog and child both get it
        wait_for(lambda: proc.poll() is not None)
        assert out.read_text() == "term\ndone\n"
        assert proc.returncode == 0
    finally:
        os.close(lifeline)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def test_a_child_that_exits_takes_its_orphans_with_it(tmp_path):
    proc, lifeline, pidfile, out, orphan = start(tmp_path)
    try:
        orphan_start = watchdog.start_time(orphan)
        child = watchdog.read_record(pidfile)["child"]
        os.kill(child[0], signal.SIGKILL)  # a crash
        wait_for(lambda: proc.poll() is not None)
        assert proc.returncode == 128 + signal.SIGKILL
        assert not running(orphan, orphan_start) and not pidfile.exists()
    finally:
        os.close(lifeline)


def test_end_recorded_ends_what_a_killed_watchdog_left(tmp_path):
    proc, lifeline, pidfile, out, orphan = start(tmp_path)
    try:
        wait_for(lambda: orphan in dict(map(tuple, watchdog.read_record(pidfile)["procs"])))
        orphan_start = watchdog.start_time(orphan)
        os.kill(proc.pid, signal.SIGKILL)  # the watchdog alone: the child gets PDEATHSIG
        proc.wait()
        # the child is handling that SIGTERM (as a Flower server deactivating) when the
        # stray is ended: it is waited for, not signalled again
        wait_for(lambda: out.exists())
        assert watchdog.end_recorded(pidfile, grace=3.0) >= 1
        assert out.read_text() == "term\ndone\n"  # PDEATHSIG's SIGTERM, not doubled
        assert not running(orphan, orphan_start) and not pidfile.exists()
    finally:
        os.close(lifeline)


def test_end_recorded_spares_a_reused_pid_and_another_live_owner(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        started = watchdog.start_time(sleeper.pid)
        pidfile = tmp_path / "old.pids"
        # The recorded process started at another time: the pid is someone else's now.
        watchdog.write_record(pidfile, {"owner": [1, -1], "watchdog": [1, -1],
                                        "procs": [[sleeper.pid, started + 1]]})
        assert watchdog.end_recorded(pidfile, grace=0.2) == 0
        assert sleeper.poll() is None and not pidfile.exists()
        # Recorded by a supervisor that still runs: not a stray, left alone.
        watchdog.write_record(pidfile, {"owner": [sleeper.pid, started],
                                        "procs": [[sleeper.pid, started]]})
        with pytest.raises(watchdog.OwnedElsewhere):
            watchdog.end_recorded(pidfile, grace=0.2)
        assert sleeper.poll() is None
        # A stray of a dead owner, truly the recorded process: ended.
        watchdog.write_record(pidfile, {"owner": [1, -1], "procs": [[sleeper.pid, started]]})
        assert watchdog.end_recorded(pidfile, grace=0.2) == 1
        assert sleeper.wait(5) == -signal.SIGKILL  # it handles no SIGTERM: killed after
    finally:                                       # the grace
        if sleeper.poll() is None:
            sleeper.kill()
