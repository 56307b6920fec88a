"""Released results, opened here with the researcher's seal key and verified as `scifed
job result` does (:meth:`coordinator.client.Client.open_result`), and what the result
page shows of them: the job type's own view (``jobs/*/view.py``: tables, PNG plots,
files) — the console draws nothing itself.

Opened results are kept in this process's memory only (a few, newest last), so that the
page and its downloads do not unseal the same result again; nothing is written to disk
but the zip a download asks for, built in a temporary directory and removed at once."""

from __future__ import annotations

import io
import json
import tempfile
import threading
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobs.views import display_rows, headline, load_result
from scifed.errors import NotFound
from scifed.sealing import VerifiedResult

KEEP = 16


@dataclass
class Opened:
    job_id: str
    raw: dict
    view: Any
    verified: VerifiedResult

    def headline(self) -> str:
        return headline(self.view)

    def tables(self) -> list[tuple[str, list[str], list[list]]]:
        return [(name, [str(c) for c in df.columns], display_rows(df))
                for name, df in self.view.tables().items()]

    def plots(self) -> dict[str, bytes]:
        return self.view.plots()

    def files(self) -> dict[str, tuple[str, bytes]]:
        """Single downloads by file name: a CSV per table, a PNG per plot, result.json."""
        out = {f"{name}.csv": ("text/csv", df.to_csv(index=False).encode())
               for name, df in self.view.tables().items()}
        out |= {name: ("image/png", data) for name, data in self.plots().items()}
        out["result.json"] = ("application/json",
                              json.dumps(self.raw, indent=2, ensure_ascii=False).encode())
        return out

    def zip(self) -> bytes:
        """Everything `scifed job result --out` writes (a model file too), zipped."""
        buf = io.BytesIO()
        with tempfile.TemporaryDirectory(prefix="scifed-ui-") as tmp, \
                zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
            for path in self.view.write(Path(tmp) / self.job_id):
                z.write(path, f"{self.job_id}/{path.name}")
        return buf.getvalue()


class Results:
    def __init__(self, client) -> None:
        self.client = client
        self._lock = threading.Lock()
        self._opened: OrderedDict[str, Opened] = OrderedDict()

    def get(self, job_id: str) -> Opened:
        with self._lock:
            hit = self._opened.get(job_id)
            if hit is not None:
                self._opened.move_to_end(job_id)
                return hit
        raw, verified = self.client.open_result(job_id)
        if verified is None:  # open_result refuses unsigned results unless asked
            raise NotFound(f"job {job_id}: the result carries no signature")
        opened = Opened(job_id, raw, load_result(raw), verified)
        with self._lock:
            self._opened[job_id] = opened
            while len(self._opened) > KEEP:
                self._opened.popitem(last=False)
        return opened
