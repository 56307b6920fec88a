"""A real federation on loopback for the end-to-end benchmarks: one coordinator and
``n`` node processes, a generated table dealt out row by row, one study, and the median
wall time of a job submitted ``repeats`` times (submission to released result)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
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


def timed_jobs(root: Path, n_nodes: int, df: pd.DataFrame, title: str,
               job: Callable[[list[str]], str], repeats: int) -> tuple[float, dict]:
    """(median seconds, the last released result) of ``job(nodes)`` on ``df`` split
    over ``n_nodes`` nodes."""
    nodes = [f"n{i:02d}" for i in range(n_nodes)]
    fed = LocalFederation(root / f"fed{n_nodes}", {n: f"bench platform {n}" for n in nodes},
                          task_timeout_seconds=120)
    fed.setup()
    with fed:
        fed.start_all()
        for i, node in enumerate(nodes):
            fed.add_dataset(node, df.iloc[i::n_nodes], metadata(title), "synthetic")
        fed.create_study("bench", {n: "synthetic" for n in nodes}, timeout=180)
        times, res = [], {}
        with fed.researcher() as r:
            for _ in range(repeats):
                t = time.perf_counter()
                job_id = r.submit(job(nodes))
                info = r.wait(job_id, timeout=600)
                if info.status != "done":
                    raise SystemExit(f"benchmark job failed: {info.error}")
                res = r.result_json(job_id)
                times.append(time.perf_counter() - t)
        return statistics.median(times), res
