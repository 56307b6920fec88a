"""Run a Flower server process (the coordinator's SuperLink, a node's SuperNode) as a
supervised child: start it, wait until it answers, restart it whenever it dies, and stop
it together with everything it spawned.

Each child leads its own process group, because Flower processes spawn their own
children (SuperExec, then one ServerApp or ClientApp process per task). The SuperLink
starts its SuperExec in a new session, so stopping reaches every process group in the
child's process tree: a ServerApp left running would go on writing to its job directory
and talking to the next SuperLink on the same port.
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

from scifed.errors import UserError

log = logging.getLogger("scifed.flower")

# Per-task polling of the SuperExec (default 1 s); the SuperNode's 3 s fleet poll is
# hard-coded in Flower 1.41 and cannot be tuned without patching it.
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
    checks (platforms may be air-gapped), fast task polling, and this environment's
    scripts first on PATH because SuperExec starts app processes by name."""
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ,
            "FLWR_HOME": str(home),
            "FLWR_TELEMETRY_ENABLED": "0",
            "FLWR_DISABLE_UPDATE_CHECK": "1",
            "FLWR_SUPEREXEC_TASK_POLL_INTERVAL": TASK_POLL_SECONDS,
            "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}


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
        self._proc: subprocess.Popen | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._watcher: threading.Thread | None = None

    def start(self, timeout: float = 60.0) -> None:
        """Start the child and return once ``ready()`` holds; then keep it alive."""
        self._stopping.clear()
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
        """Kill the child abruptly (as a crash would); the supervisor restarts it."""
        with self._lock:
            if self._proc is not None:
                _signal_group(self._proc.pid, signal.SIGKILL)

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        with self._lock:
            proc = self._proc
        if proc is not None:
            groups = {proc.pid} | _tree_groups(proc.pid)  # before they are re-parented
            for group in groups:
                _signal_group(group, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
            for group in groups:  # whatever did not end by itself
                _signal_group(group, signal.SIGKILL)
            proc.wait()
        if self._watcher is not None:
            self._watcher.join(timeout)

    def _spawn(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as out, self._lock:
            self._proc = subprocess.Popen(self._argv(), stdout=out, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, env=self._env,
                                          start_new_session=True)
        log.info("%s started (pid %d)", self.name, self._proc.pid)

    def _watch(self) -> None:
        backoff = _MIN_BACKOFF
        while not self._stopping.is_set():
            proc = self._proc
            assert proc is not None
            started = time.monotonic()
            code = proc.wait()
            if self._stopping.is_set():
                return
            _signal_group(proc.pid, signal.SIGKILL)  # children the dead process left
            if time.monotonic() - started > _STABLE_SECONDS:
                backoff = _MIN_BACKOFF
            log.warning("%s exited with code %s; restarting in %.0fs (see %s)",
                        self.name, code, backoff, self.log_path)
            if self._stopping.wait(backoff):
                return
            backoff = min(backoff * 2, _MAX_BACKOFF)
            self._spawn()


def _tree_groups(root: int) -> set[int]:
    """Process groups of every live descendant of ``root`` (Linux /proc)."""
    parent, group = {}, {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        pid = int(stat.parent.name)
        parent[pid], group[pid] = int(fields[1]), int(fields[2])
    found, frontier = set(), {root}
    while frontier:
        frontier = {pid for pid, ppid in parent.items() if ppid in frontier} - found
        found |= frontier
    return {group[pid] for pid in found}


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
