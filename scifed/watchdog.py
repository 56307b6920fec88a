"""Start one supervised process so that nothing it spawned outlives its supervisor.

Why: the node's SuperNode and the coordinator's SuperLink run in process groups of their
own (the SuperLink's SuperExec even in a session of its own), so a SIGKILL of the node or
the coordinator, which no handler ever sees, reached none of them. A SuperNode left
running kept its key "online" on the SuperLink, and the restarted node's SuperNode then
failed to activate in a loop until someone killed the stray by hand.

So :class:`scifed.supervisor.Supervised` starts every child as
``python -m scifed.watchdog --lifeline FD --pidfile PATH -- ARGV...``:

* The watchdog holds the read end of a *lifeline* pipe whose write end only the
  supervising process holds: EOF on it means the supervisor is gone, however it died.
  (``PR_SET_PDEATHSIG`` on the watchdog would not do: it fires when the *thread* that
  started the process ends, and supervisors start their children from worker threads.)
* It makes itself a child subreaper (``PR_SET_CHILD_SUBREAPER``), so whatever its tree
  orphans — the SuperLink's SuperExec in its own session, a ServerApp — is re-parented to
  it, stays its descendant and is found and reaped by it.
* To stop (SIGTERM, SIGINT or SIGHUP to the watchdog, or EOF on the lifeline) it sends
  SIGTERM *once* to every process of its tree, gives the child :data:`GRACE_SECONDS` to
  end, then SIGKILLs whatever is left, waits for its tree to be empty and exits with the
  child's code. SIGTERM first matters: a SuperNode stopping on SIGTERM deactivates its key
  on the SuperLink (Flower 1.41, ``supernode/fleet_http_connection.py``: DeactivateNode in
  the connection's ``finally``), while a SIGKILLed one stays "online" there until its last
  heartbeat expires (``HEARTBEAT_PATIENCE`` 2 x the 30 s heartbeat: up to 60 s), and no new
  SuperNode with the same key can activate meanwhile. *Once*, because Flower's handler
  restores the default action at the first signal: a second SIGTERM kills the process in
  the middle of that deactivation.
* When the child exits by itself, the rest of its tree is SIGKILLed and the watchdog exits
  with the child's code, for the supervisor to restart it.
* The child gets ``PR_SET_PDEATHSIG`` SIGTERM (reliable here: the watchdog is single
  threaded), in case the watchdog alone is killed.
* It records its tree — its owner (the supervising process), itself, the child and every
  descendant, each as pid *and* start time (``/proc/PID/stat``) — in a pidfile (0600,
  under umask 077, replaced atomically). :func:`end_recorded` ends what a killed watchdog
  left, and what a previous incarnation of the node or coordinator left: it verifies each
  pid still is the recorded process before signalling it (pids are reused) and never
  looks for processes by name.

Linux only (``/proc``, ``prctl``); elsewhere the watchdog still stops its child on the
lifeline's EOF, but cannot adopt orphans.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

# Flower force-exits 5 s after the first SIGTERM (FORCE_EXIT_TIMEOUT_SECONDS); one more
# second before SIGKILL.
GRACE_SECONDS = 6.0
KILL_SECONDS = 5.0  # after SIGKILL, how long to wait for the tree to be gone
TICK_SECONDS = 1.0  # how often the pidfile is brought up to date (and on every SIGCHLD)

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36

_libc = None


def _prctl(option: int, value: int) -> bool:
    global _libc
    try:
        if _libc is None:
            import ctypes

            _libc = ctypes.CDLL(None, use_errno=True)
        return _libc.prctl(option, value, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


# -- processes, by pid and start time --------------------------------------------------------
def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, start time in clock ticks since boot) of a process; None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return fields[0].decode(), int(fields[1]), int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def start_time(pid: int) -> int | None:
    st = _stat(pid)
    return None if st is None else st[2]


def is_running(pid: int, started: int) -> bool:
    """``pid`` is still the process that started at ``started`` (and not a zombie)."""
    st = _stat(pid)
    return st is not None and st[2] == started and st[0] not in ("Z", "X")


def catches_sigterm(pid: int) -> bool:
    """The process has a handler for SIGTERM (SigCgt in /proc/PID/status)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("SigCgt:"):
                    return bool(int(line.split()[1], 16) >> (signal.SIGTERM - 1) & 1)
    except (OSError, ValueError):
        pass
    return False


def send(pid: int, started: int | None, sig: int) -> bool:
    """Signal ``pid`` only if it still is the process that started at ``started``. Through
    a pidfd where there is one, so a pid reused between the check and the signal is never
    hit."""
    if started is None:
        return False
    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        fd = None
    try:
        if not is_running(pid, started):
            return False
        if fd is not None:
            signal.pidfd_send_signal(fd, sig)
        else:
            os.kill(pid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False
    finally:
        if fd is not None:
            os.close(fd)


def _children(pid: int) -> set[int]:
    found = set()
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                found.update(int(c) for c in f.read().split())
        except OSError:  # the thread ended meanwhile
            continue
    return found


def _scan_children() -> dict[int, set[int]]:
    """ppid -> pids, from every /proc/PID/stat (when /proc/.../children is missing)."""
    tree: dict[int, set[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (st := _stat(int(entry))) is not None:
            tree.setdefault(st[1], set()).add(int(entry))
    return tree


def descendants(root: int) -> dict[int, int]:
    """Every live descendant of ``root``: pid -> start time."""
    me = os.getpid()
    if os.path.exists(f"/proc/{me}/task/{me}/children"):
        children = _children
    else:
        table = _scan_children()
        children = lambda pid: table.get(pid, set())  # noqa: E731
    found: dict[int, int] = {}
    frontier = [root]
    while frontier:
        pid = frontier.pop()
        for child in children(pid):
            if child in found:
                continue
            st = _stat(child)
            if st is not None and st[0] not in ("Z", "X"):
                found[child] = st[2]
            frontier.append(child)  # a zombie's children are re-parented: still look
    return found


# -- the pidfile -----------------------------------------------------------------------------
def write_record(path: Path, record: dict) -> None:
    """Replace the pidfile atomically; 0600 under umask 077."""
    old = os.umask(0o077)
    try:
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(record, f)
        os.replace(tmp, path)
    finally:
        os.umask(old)


def read_record(path: Path) -> dict | None:
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


class OwnedElsewhere(RuntimeError):
    """The recorded tree belongs to a supervisor that still runs (not this process)."""


def _entries(record: dict) -> dict[int, int]:
    out = {}
    for key in ("watchdog", "child"):
        if isinstance(record.get(key), list) and len(record[key]) == 2:
            out[int(record[key][0])] = int(record[key][1])
    for pid, started in record.get("procs", []):
        out[int(pid)] = int(started)
    return out


def end_recorded(path: Path, grace: float = GRACE_SECONDS) -> int:
    """End every process the pidfile at ``path`` records that still runs; return how many
    did. If its watchdog still runs, only the watchdog is asked to stop (it stops its
    tree in order). Otherwise each process that still handles SIGTERM gets it once; the
    child, if it no longer handles it (a Flower server that already had its SIGTERM, from
    PR_SET_PDEATHSIG say, and is deactivating), is only waited for; any other process is
    SIGKILLed at once. After ``grace`` seconds what is left is SIGKILLed. The pidfile is
    removed once nothing it records runs.

    Raises :class:`OwnedElsewhere` when the recorded owner is another process that still
    runs: that tree is no stray, it is someone else's.
    """
    path = Path(path)
    record = read_record(path)
    if record is None:
        path.unlink(missing_ok=True)
        return 0
    owner = record.get("owner")
    if (isinstance(owner, list) and len(owner) == 2 and int(owner[0]) != os.getpid()
            and is_running(int(owner[0]), int(owner[1]))):
        raise OwnedElsewhere(f"the processes recorded in {path} belong to process "
                             f"{owner[0]}, which still runs")
    live = {pid: t for pid, t in _entries(record).items() if is_running(pid, t)}
    if live:
        watchdog = record.get("watchdog") or [0, 0]
        if int(watchdog[0]) in live and grace > 0:
            send(int(watchdog[0]), int(watchdog[1]), signal.SIGTERM)
            grace += KILL_SECONDS  # its own SIGKILL phase comes after its grace
        elif grace > 0:
            child = int((record.get("child") or [0, 0])[0])
            for pid, started in live.items():
                if catches_sigterm(pid):
                    send(pid, started, signal.SIGTERM)
                elif pid != child:  # SIGTERM would end it all the same: no need to wait
                    send(pid, started, signal.SIGKILL)
        deadline = time.monotonic() + grace
        while (time.monotonic() < deadline
               and any(is_running(p, t) for p, t in live.items())):
            time.sleep(0.05)
        for pid, started in live.items():
            send(pid, started, signal.SIGKILL)
        deadline = time.monotonic() + KILL_SECONDS
        while (time.monotonic() < deadline
               and any(is_running(p, t) for p, t in live.items())):
            time.sleep(0.05)
    if not any(is_running(p, t) for p, t in live.items()):
        # only our record: a new watchdog may have replaced it meanwhile
        if read_record(path) == record:
            path.unlink(missing_ok=True)
    return len(live)


# -- the watchdog process --------------------------------------------------------------------
def readable(fds: list[int], timeout: float) -> list[int]:
    """The descriptors of `fds` ready to read within `timeout` seconds.

    poll(), not select(): a supervisor with many files open hands the watchdog a
    lifeline numbered above 1024, which select() refuses ("filedescriptor out of range").
    A signal does not raise here: poll() is retried on EINTR (PEP 475), and the signal's
    byte on the self-pipe ends the wait at once.
    """
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
    return [fd for fd, _ in poller.poll(timeout * 1000)]


class Watchdog:
    def __init__(self, command: list[str], lifeline: int, pidfile: Path,
                 grace: float = GRACE_SECONDS) -> None:
        self.command = command
        self.lifeline = lifeline
        self.pidfile = pidfile
        self.grace = grace
        self.pid = os.getpid()
        owner = os.getppid()
        self.record: dict = {"owner": [owner, start_time(owner)],
                             "watchdog": [self.pid, start_time(self.pid)], "procs": []}
        self.child: subprocess.Popen | None = None
        self.status: int | None = None  # the child's wait status once reaped
        self.stop_reason: str | None = None
        self._child_caught_term = False

    # signals arrive on a self-pipe, so the wait wakes at once
    def _on_stop(self, signum, _frame) -> None:
        self.stop_reason = self.stop_reason or signal.Signals(signum).name

    def _in_child(self) -> None:
        _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != self.pid:  # the watchdog died before the prctl
            os._exit(1)

    def _reap(self) -> None:
        """Reap every exited child (orphans of the tree are ours to reap)."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if self.child is not None and pid == self.child.pid:
                self.status = status
                self.child.returncode = os.waitstatus_to_exitcode(status)

    def _save(self) -> None:
        procs = sorted([p, t] for p, t in descendants(self.pid).items())
        if procs != self.record["procs"]:
            self.record["procs"] = procs
            with contextlib.suppress(OSError):
                write_record(self.pidfile, self.record)

    def run(self) -> int:
        _prctl(PR_SET_CHILD_SUBREAPER, 1)
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._on_stop)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        write_record(self.pidfile, self.record)
        try:
            self.child = subprocess.Popen(self.command, stdin=subprocess.DEVNULL,
                                          preexec_fn=self._in_child)
        except OSError as exc:
            print(f"scifed.watchdog: cannot start {self.command[0]}: {exc}", file=sys.stderr)
            self.pidfile.unlink(missing_ok=True)
            return 127
        self.record["child"] = [self.child.pid, start_time(self.child.pid)]
        while True:
            self._reap()
            if self.status is not None or self.stop_reason:
                break
            self._child_caught_term |= catches_sigterm(self.child.pid)
            self._save()
            ready = readable([self.lifeline, wake_r], TICK_SECONDS)
            if wake_r in ready:
                with contextlib.suppress(BlockingIOError):
                    os.read(wake_r, 4096)
            if self.lifeline in ready:
                try:
                    data = os.read(self.lifeline, 4096)
                except OSError:
                    data = b""
                if not data:
                    self.stop_reason = "the supervisor is gone"
        if self.status is None:
            self._stop_child(wake_r)
        self._kill_rest(wake_r)
        code = os.waitstatus_to_exitcode(self.status) if self.status is not None else 1
        return 128 - code if code < 0 else code

    def _stop_child(self, wake_r: int) -> None:
        """SIGTERM once to the child and its tree; wait up to the grace for the child."""
        assert self.child is not None
        started = self.record["child"][1]
        # A child that handled SIGTERM and no longer does already had its one SIGTERM
        # (sent to its whole group, say) and is stopping: a second one would kill it.
        if catches_sigterm(self.child.pid) or not self._child_caught_term:
            send(self.child.pid, started, signal.SIGTERM)
        for pid, t in descendants(self.pid).items():
            if pid != self.child.pid:
                send(pid, t, signal.SIGTERM)
        deadline = time.monotonic() + self.grace
        while self.status is None and time.monotonic() < deadline:
            readable([wake_r], 0.1)
            with contextlib.suppress(BlockingIOError):
                os.read(wake_r, 4096)
            self._reap()

    def _kill_rest(self, wake_r: int) -> None:
        """SIGKILL whatever of the tree is left, until it is gone (then drop the pidfile)."""
        deadline = time.monotonic() + KILL_SECONDS
        while True:
            self._reap()
            tree = descendants(self.pid)
            if not tree:
                break
            if time.monotonic() > deadline:
                return  # the pidfile stays, for the supervisor to try again
            for pid, t in tree.items():
                send(pid, t, signal.SIGKILL)
            readable([wake_r], 0.05)
            with contextlib.suppress(BlockingIOError):
                os.read(wake_r, 4096)
        if read_record(self.pidfile) == self.record:
            self.pidfile.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scifed.watchdog",
                                     description="run a command; end its whole process "
                                     "tree when told to or when the lifeline closes")
    parser.add_argument("--lifeline", type=int, required=True,
                        help="read end of a pipe the supervisor holds open")
    parser.add_argument("--pidfile", type=Path, required=True)
    parser.add_argument("--grace", type=float, default=GRACE_SECONDS)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command")
    return Watchdog(command, args.lifeline, args.pidfile, args.grace).run()


if __name__ == "__main__":
    sys.exit(main())
