"""Delivery in the researcher console: downloads of granted datasets, run here.

A download is :func:`coordinator.access_client.download` — the same resumable,
hash-verified transfer as `scifed access download` — on a thread of this process, so the
page can follow it (htmx polls :meth:`Downloads.get`). The file goes to the console's
downloads folder on this machine (``--downloads``, default ``downloads/`` in the
identity directory), named by the dataset and the grant; an interrupted download of the
same grant resumes from its verified chunks when it is started again."""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from pathlib import Path

from coordinator import access_client as ac
from scifed import sentences
from scifed.delivery import GrantView
from scifed.errors import UserError


def safe_name(part: str) -> str:
    """A piece of a file name from what the coordinator relayed (a record id, a grant id,
    a format): letters, digits, ``.``, ``_`` and ``-`` only, never a path."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", part).lstrip(".")
    return cleaned[:80] or "_"


@dataclass
class Download:
    grant_id: str
    path: Path
    done: int = 0
    total: int = 0
    sha256: str = ""   # set once the whole file matched the node's signed sha256
    error: str = ""    # in the node's words: a sentence where it came with its key
    running: bool = True

    @property
    def percent(self) -> int:
        return int(100 * self.done / self.total) if self.total else 0


class Downloads:
    def __init__(self, client, folder: Path) -> None:
        self.client, self.folder = client, Path(folder)
        self._lock = threading.Lock()
        self._by_grant: dict[str, Download] = {}

    def get(self, grant_id: str) -> Download | None:
        with self._lock:
            return self._by_grant.get(grant_id)

    def start(self, grant_id: str) -> Download:
        """Start (or resume) the download of a granted file; one at a time per grant."""
        with self._lock:
            running = self._by_grant.get(grant_id)
            if running is not None and running.running:
                return running
        grant = ac.find_grant(self.client, grant_id)
        if grant.state != "granted" or grant.method != "download":
            raise UserError(f"grant {grant_id} is {grant.state} for {grant.method}: only a "
                            "granted download can be downloaded")
        m = ac.manifest(self.client, grant)  # its format names the file; checked again
        name = (f"{safe_name(grant.record_id.rsplit(':', 1)[-1])}-{safe_name(grant_id)}."
                f"{safe_name(str(m['format']))}")
        d = Download(grant_id, self.folder / name, total=m["size"])
        with self._lock:
            self._by_grant[grant_id] = d
        threading.Thread(target=self._run, args=(grant, d), daemon=True,
                         name=f"download-{grant_id}").start()
        return d

    def _run(self, grant: GrantView, d: Download) -> None:
        def progress(done: int, total: int) -> None:
            d.done, d.total = done, total

        try:
            d.sha256 = ac.download(self.client, grant, d.path, progress=progress)
        except UserError as exc:
            d.error = sentences.of_error(exc)
        except Exception as exc:  # a failed call: said on the page, resumable
            from scifed.rpc import rpc_error_message

            d.error = (rpc_error_message(exc, "the coordinator") if hasattr(exc, "code")
                       else f"the download stopped: {type(exc).__name__}")
        finally:
            d.running = False


@dataclass
class Answer:
    """A service query's answer as the page shows it: opened here, the columns and rows,
    whether it is rows or aggregates, and how many groups the node withheld below k."""

    columns: list[str]
    rows: list[list[str]]
    mode: str      # as the node says it: "rows", "aggregates, groups of at least 5"
    withheld: int
    k: int | None = None  # the least group the node answered, where it answers aggregates


def service_query(client, grant_id: str, sql: str) -> Answer:
    """Ask one query inside the node under ``grant_id``, as this researcher (the client's
    identity): the node answers sealed to them and it is opened on this machine. Every
    console query goes through here, so how the call is signed and sealed stays in
    :func:`coordinator.access_client.query`. The node's refusal is its UserError."""
    frame, said = ac.query(client, grant_id, sql)
    rows = [["" if v is None else str(v) for v in r] for r in frame.astype(object)
            .where(frame.notna(), None).values.tolist()]
    return Answer([str(c) for c in frame.columns], rows, str(said["mode"]),
                  int(said["withheld"]), said.get("k"))
