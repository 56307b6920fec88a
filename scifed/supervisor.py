"""Run a Flower server process (the coordinator's SuperLink, a node's SuperNode) as a
supervised child: start it, wait until it answers, restart it whenever it dies, and stop
it together with everything it spawned.

Flower processes spawn their own children (SuperExec, then one ServerApp or ClientApp
process per task), the SuperLink's SuperExec in a session of its own: a ServerApp left
running would go on writing to its job directory and talking to the next SuperLink on the
same port, a SuperNode left running keeps its key "online" on the SuperLink so that the
next SuperNode with that key cannot activate. So every child runs under a watchdog
(:mod:`scifed.watchdog`) in a process group of its own: the watchdog adopts every orphan
of the child's tree, and ends the whole tree — SIGTERM first, so a SuperNode deactivates
itself, SIGKILL after a grace — when it is told to stop, when the child exits, and when
the supervising process dies, even by SIGKILL (the watchdog's lifeline pipe closes). What
a killed watchdog leaves, or a previous incarnation of this process, is recorded in a
pidfile beside the child's log and ended before the child starts again.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from scifed import watchdog
from scifed.errors import UserError

log = logging.getLogger("scifed.flower")

# Per-task polling of the SuperExec (default 1 s); the SuperNode's 3 s fleet poll is
# hard-coded in Flower 1.41: scifed.flower_pacing shortens it.
TASK_POLL_SECONDS = "0.1"
_MIN_BACKOFF, _MAX_BACKOFF, _STABLE_SECONDS = 1.0, 30.0, 60.0


def flower_executable(name: str) -> str:
    """A Flower console script from this interpreter's environment (then PATH)."""
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if found is None:
        raise UserError(f"{name} not found; install flwr 1.41 next to scifed")
    return found


def flower_env(home: Path) -> dict[str, str]:
    """Environment for every Flower process: state under ``home``, no telemetry, no update
    checks (platforms may be air-gapped), fast task polling, and first on PATH the paced
    launchers in ``home/bin`` (``scifed.flower_pacing``), then this environment's scripts,
    because SuperExec starts app processes by name."""
    bin_dirs = [str(Path(home) / "bin"), str(Path(sys.executable).parent)]
    return {**os.environ,
            "FLWR_HOME": str(home),
            "FLWR_TELEMETRY_ENABLED": "0",
            "FLWR_DISABLE_UPDATE_CHECK": "1",
            "FLWR_SUPEREXEC_TASK_POLL_INTERVAL": TASK_POLL_SECONDS,
            "PATH": os.pathsep.join([*bin_dirs, os.environ.get("PATH", "")])}


class Supervised:
    """One child process, restarted with backoff whenever it exits until :meth:`stop`."""

    def __init__(self, name: str, argv: Callable[[], list[str]], *, env: dict[str, str],
                 log_path: Path, ready: Callable[[], bool]) -> None:
        """``argv`` is called before every (re)start, so it may pick fresh ports."""
        self.name = name
        self._argv = argv
        self._env = env
        self.log_path = log_path
        self._ready = ready
        self.pid_path = log_path.with_suffix(".pids")  # the tree, as the watchdog saw it
        self._proc: subprocess.Popen | None = None
        self._lifeline: int | None = None  # write end; the watchdog holds the read end
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._watcher: threading.Thread | None = None

    def start(self, timeout: float = 60.0) -> None:
        """Start the child and return once ``ready()`` holds; then keep it alive."""
        self._stopping.clear()
        self._end_left_over()
        self._spawn()
        self.wait_ready(timeout)
        self._watcher = threading.Thread(target=self._watch, daemon=True,
                                         name=f"supervise-{self.name}")
        self._watcher.start()

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._stopping.is_set():
                return
            try:
                if self._ready():
                    return
            except Exception:  # not listening yet
                pass
            time.sleep(0.1)
        raise UserError(f"{self.name} did not become ready within {timeout:.0f}s; "
                        f"see {self.log_path}")

    def kill(self) -> None:
        """Kill the child abruptly (as a crash would), its watchdog with it (they share a
        process group); the supervisor ends what they left and restarts it."""
        with self._lock:
            if self._proc is not None:
                _signal_group(self._proc.pid, signal.SIGKILL)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the child and its whole tree: the watchdog sends SIGTERM once, SIGKILL after
        its grace (so a SuperNode deactivates itself first)."""
        self._stopping.set()
        with self._lock:
            proc = self._proc
        if proc is not None:
            try:  # the watchdog alone: a second SIGTERM would cut Flower's graceful stop
                os.kill(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                _signal_group(proc.pid, signal.SIGKILL)
                proc.wait()
            self._close_lifeline(proc)
            self._end_left_over(grace=0)  # what a killed watchdog left: no more waiting
        if self._watcher is not None:
            self._watcher.join(timeout)

    def _end_left_over(self, grace: float = watchdog.GRACE_SECONDS) -> None:
        """End what the pidfile records as still running: a tree whose watchdog was
        killed, or one left by a previous incarnation of this process (after a crash the
        lifeline alone normally ends it; this is for whatever survived that)."""
        try:
            ended = watchdog.end_recorded(self.pid_path, grace)
        except watchdog.OwnedElsewhere as exc:
            raise UserError(f"{self.name}: {exc}; is another instance running?") from None
        if ended:
            log.warning("%s: ended %d process(es) left running (recorded in %s)",
                        self.name, ended, self.pid_path)

    def _spawn(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        lifeline_r, lifeline_w = os.pipe()  # neither end is inherited by anything else
        try:
            with open(self.log_path, "ab") as out, self._lock:
                self._proc = subprocess.Popen(
                    [sys.executable, "-m", "scifed.watchdog", "--lifeline", str(lifeline_r),
                     "--pidfile", str(self.pid_path), "--", *self._argv()],
                    stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    env=self._env, start_new_session=True, pass_fds=(lifeline_r,))
                self._lifeline = lifeline_w
        except BaseException:
            os.close(lifeline_w)
            raise
        finally:
            os.close(lifeline_r)
        log.info("%s started (watchdog pid %d)", self.name, self._proc.pid)

    def _close_lifeline(self, proc: subprocess.Popen) -> None:
        """Once ``proc`` (a watchdog) is gone, close its lifeline's write end."""
        with self._lock:
            if self._proc is proc and self._lifeline is not None:
                os.close(self._lifeline)
                self._lifeline = None

    def _watch(self) -> None:
        backoff = _MIN_BACKOFF
        while not self._stopping.is_set():
            proc = self._proc
            assert proc is not None
            started = time.monotonic()
            code = proc.wait()
            if self._stopping.is_set():
                return
            self._close_lifeline(proc)
            try:  # the watchdog normally ended its tree; if it was killed, this does
                self._end_left_over()
            except UserError as exc:
                log.error("%s", exc)
            _signal_group(proc.pid, signal.SIGKILL)  # a child started after the last record
            if time.monotonic() - started > _STABLE_SECONDS:
                backoff = _MIN_BACKOFF
            log.warning("%s exited with code %s; restarting in %.0fs (see %s)",
                        self.name, code, backoff, self.log_path)
            if self._stopping.wait(backoff):
                return
            backoff = min(backoff * 2, _MAX_BACKOFF)
            self._spawn()


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
