"""A real federation on loopback for the end-to-end benchmarks: one coordinator and
``n`` node processes, a generated table dealt out row by row, one study, and the median
wall time of a job submitted ``repeats`` times (submission to released result).

With many nodes, setting up is most of the time (every node is initialised, enrolled,
started, given its dataset and accepts the study through the CLI, as a deployment does):
``workers`` of these steps run at once, and :class:`Federation` records how long each
stage took and what the node processes hold in memory.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

from harness.federation import LocalFederation

REPO = Path(__file__).resolve().parent.parent


def metadata(title: str) -> dict:
    meta = yaml.safe_load((REPO / "configs" / "datasets" / "penguins.yaml").read_text())
    for key in ("fields", "splits", "annotation"):
        meta.pop(key, None)
    meta["targets"] = []
    meta["title"] = {"en": title}
    return meta


def memory_mb(pid: int) -> dict[str, float]:
    """Resident and proportional set size of a process, in MB (Linux). PSS shares each
    page among the processes that map it (the libraries every node loads), so the PSS of
    all nodes adds up to what they take from the machine; RSS counts shared pages once
    per process."""
    out = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("Rss", "Pss"):
                out[key.lower()] = int(rest.split()[0]) / 1024
    return out


@dataclass
class Federation:
    """``n_nodes`` nodes holding ``df`` dealt out row by row, in one study "bench"."""

    root: Path
    n_nodes: int
    df: pd.DataFrame
    title: str
    workers: int = 1
    heartbeat_seconds: float = 1.0
    stages: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.nodes = [f"n{i:03d}" for i in range(self.n_nodes)]
        self.fed = LocalFederation(self.root / f"fed{self.n_nodes}",
                                   {n: f"bench platform {n}" for n in self.nodes},
                                   task_timeout_seconds=120, workers=self.workers,
                                   heartbeat_seconds=self.heartbeat_seconds,
                                   offline_after_seconds=3 * self.heartbeat_seconds)

    def _stage(self, name: str, action: Callable[[], object]) -> None:
        start = time.perf_counter()
        action()
        self.stages[name] = time.perf_counter() - start

    def __enter__(self) -> Federation:
        fed = self.fed
        self._stage("init and enrol", fed.setup)
        try:
            self._stage("start the coordinator", fed.start_coordinator)
            self._stage("start the nodes", fed.start_nodes)
            meta = metadata(self.title)
            self._stage("register datasets", lambda: fed.each_node(
                lambda n: fed.add_dataset(n, self.df.iloc[self.nodes.index(n)::self.n_nodes],
                                          meta, "synthetic")))
            self._stage("create the study", lambda: fed.create_study(
                "bench", {n: "synthetic" for n in self.nodes}, timeout=60 + 3 * self.n_nodes))
        except BaseException:
            fed.stop_all()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.fed.stop_all()

    def timed(self, job: Callable[[list[str]], str], repeats: int) -> tuple[float, dict]:
        """(median seconds, the last released result) of ``job(nodes)``."""
        times, res = [], {}
        with self.fed.researcher() as r:
            for _ in range(repeats):
                t = time.perf_counter()
                job_id = r.submit(job(self.nodes))
                info = r.wait(job_id, timeout=600)
                if info.status != "done":
                    raise SystemExit(f"benchmark job failed: {info.error}")
                res = r.result_json(job_id)
                times.append(time.perf_counter() - t)
        return statistics.median(times), res

    def node_memory(self) -> dict[str, float]:
        """Median RSS and PSS of a node process, and the PSS of all nodes, in MB."""
        each = [memory_mb(self.fed.procs[n].pid) for n in self.nodes]
        return {"rss": statistics.median(m["rss"] for m in each),
                "pss": statistics.median(m["pss"] for m in each),
                "pss_total": sum(m["pss"] for m in each)}


def timed_jobs(root: Path, n_nodes: int, df: pd.DataFrame, title: str,
               job: Callable[[list[str]], str], repeats: int) -> tuple[float, dict]:
    """(median seconds, the last released result) of ``job(nodes)`` on ``df`` split
    over ``n_nodes`` nodes."""
    with Federation(root, n_nodes, df, title) as fed:
        return fed.timed(job, repeats)
