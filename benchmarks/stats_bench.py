"""End-to-end latency of a federated `stats` job (real processes on loopback, BFV,
sealed release) with 3 and 10 nodes (``main``) or 100 (``main_100``, only when asked:
setting up 100 nodes takes minutes), beside the same statistics computed by DuckDB on
the pooled file in one process; the released counts and means checked against pandas;
and what a node process holds in memory after the jobs."""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import yaml
from rich.console import Console

from benchmarks.federated import Federation
from benchmarks.table import Figure, print_area

EDGES = [float(x) for x in np.linspace(-4, 4, 17)]
REPEATS = 3
ROWS = 100_000
QUANTILE_AIM = 4
HUNDRED_WORKERS = 4  # nodes set up at once
# 100 nodes each beating once a second are 100 coordinator transactions a second on a
# 2-core machine; a deployment beats every few seconds or more
HUNDRED_HEARTBEAT = 5.0
HUNDRED_DIR = Path(__file__).resolve().parent.parent / "bench-out" / "stats100"


def synthetic(rows: int, seed: int = 0) -> pd.DataFrame:
    """Generated measurements: three correlated numeric columns and a category."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=rows)
    return pd.DataFrame({"x": x, "y": 0.6 * x + rng.normal(scale=0.8, size=rows),
                         "z": rng.gamma(2.0, 1.5, size=rows),
                         "group": rng.choice(["a", "b", "c", "d"], size=rows)})


def job(nodes: list[str]) -> str:
    return yaml.safe_dump({
        "study": "bench", "type": "stats", "datasets": {n: "synthetic" for n in nodes},
        "stats": {"columns": ["x", "y", "z"], "histograms": {"x": EDGES},
                  "quantiles": {"x": [0.25, 0.5, 0.75]}, "group_counts": ["group"],
                  "correlation": ["x", "y", "z"]}})


POOLED_SQL = """
SELECT count(x), avg(x), var_samp(x), avg(y), var_samp(y), avg(z), var_samp(z),
       corr(x, y), corr(x, z), corr(y, z),
       quantile_cont(x, [0.25, 0.5, 0.75]) FROM {src};
SELECT "group", count(*) FROM {src} GROUP BY 1;
SELECT floor((x + 4) / 0.5) AS b, count(*) FROM {src} WHERE x >= -4 AND x <= 4 GROUP BY 1;
"""


def pooled_seconds(path: Path) -> float:
    con = duckdb.connect()
    times = []
    for _ in range(REPEATS):
        t = time.perf_counter()
        for stmt in POOLED_SQL.strip().split(";\n"):
            con.execute(stmt.format(src=f"read_csv('{path}')").rstrip(";")).fetchall()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def released_error(res: dict, df: pd.DataFrame) -> float:
    """Largest relative difference of the released counts and means from pandas on the
    pooled rows (0 where the encryption is exact, as it should be)."""
    worst = 0.0
    for col in ("x", "y", "z"):
        got = res["columns"][col]
        for value, truth in ((got["count"], df[col].count()), (got["mean"], df[col].mean())):
            worst = max(worst, abs(value - truth) / abs(truth))
    return worst


@dataclass
class Run:
    """One federation's figures: the job's median seconds, pooled DuckDB's, the released
    result's error, its quantile rounds, the node processes' memory and start-up."""

    nodes: int
    rows: int
    seconds: float
    pooled: float
    error: float
    rounds: int
    memory: dict[str, float]
    start: float
    stages: dict[str, float]


def measure(root: Path, n_nodes: int, rows: int, workers: int = 1,
            heartbeat_seconds: float = 1.0, repeats: int = REPEATS) -> Run:
    df = synthetic(rows)
    with Federation(root, n_nodes, df, "Synthetic benchmark measurements", workers,
                    heartbeat_seconds) as fed:
        seconds, res = fed.timed(job, repeats)
        memory = fed.node_memory()
    pooled = root / f"pooled{n_nodes}.csv"
    df.to_csv(pooled, index=False)
    return Run(n_nodes, rows, seconds, pooled_seconds(pooled), released_error(res, df),
               res.get("quantile_rounds", 0), memory,
               fed.stages["start the nodes"] / n_nodes * workers, fed.stages)


def job_figures(run: Run, anchor: str) -> list[Figure]:
    n = run.nodes
    return [
        Figure(f"stats job, {run.rows:,} rows over {n} nodes, end to end (median of "
               f"{REPEATS})", run.seconds, run.pooled, anchor, "s"),
        Figure(f"  {n} nodes: over pooled DuckDB on the same rows",
               run.seconds / run.pooled, None, "≤ 5" if n == 3 else "", "×"),
        Figure(f"  {n} nodes: exact quantile rounds", run.rounds, None, f"≤ {QUANTILE_AIM}",
               "rounds"),
        Figure(f"  {n} nodes: max rel. error of counts and means vs pandas", run.error,
               0.0, "≤ 1e-9", "rel."),
    ]


def memory_figures(run: Run, n_fit: int = 100) -> list[Figure]:
    """A node's memory after the jobs, against what lets ``n_fit`` nodes share this
    machine's RAM (with a coordinator's share left over)."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20
    share = total / (n_fit + 1)
    n = run.nodes
    return [
        Figure(f"  {n} nodes: a node's RSS after the jobs (median)", run.memory["rss"], None,
               "", "MB"),
        Figure(f"  {n} nodes: a node's PSS after the jobs (median; shared pages split)",
               run.memory["pss"], None, f"≤ {share:,.0f} ({n_fit} nodes in RAM)", "MB"),
        Figure(f"  {n} nodes: a node's start-up, spawn to admin socket (mean)", run.start,
               None, "", "s"),
    ]


def main(console: Console | None = None) -> None:
    """3 and 10 nodes, 100k rows."""
    figures = []
    with tempfile.TemporaryDirectory() as tmp:
        for n_nodes, anchor in ((3, "≤ 1.0"), (10, "≤ 1.5")):
            with (console or Console()).status(f"stats job with {n_nodes} nodes"):
                run = measure(Path(tmp), n_nodes, ROWS)
            figures += job_figures(run, anchor) + memory_figures(run)
    print_area(console or Console(), "stats jobs: real processes on loopback, BFV, sealed "
               "release", figures, "DuckDB on the pooled file in one process, the same "
               "statistics", "Anchors: issue 14 item 4. 100 nodes: `make bench AREAS=stats100`.")


def main_100(console: Console | None = None) -> None:
    """100 nodes, 100k rows: minutes of set-up, so only when asked."""
    console = console or Console()
    shutil.rmtree(HUNDRED_DIR, ignore_errors=True)  # kept after a run: 100 nodes' logs
    HUNDRED_DIR.mkdir(parents=True)
    with console.status(f"100 nodes in {HUNDRED_DIR}: set up, start, register, accept, "
                        "then the job"):
        run = measure(HUNDRED_DIR, 100, ROWS, workers=HUNDRED_WORKERS,
                      heartbeat_seconds=HUNDRED_HEARTBEAT)
    shutil.rmtree(HUNDRED_DIR / "fed100", ignore_errors=True)
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    figures = job_figures(run, "≤ 10") + memory_figures(run) + [
        Figure("  100 nodes: PSS of all node processes", run.memory["pss_total"] / 1024, None,
               f"≤ {total:.1f} (this machine's RAM)", "GiB")]
    figures += [Figure(f"  100 nodes: set-up, {stage} ({HUNDRED_WORKERS} at once)", seconds,
                       None, "", "s") for stage, seconds in run.stages.items()]
    print_area(console, "stats job over 100 node processes on this machine", figures,
               "DuckDB on the pooled file in one process, the same statistics",
               f"Heartbeats every {HUNDRED_HEARTBEAT:.0f} s. Anchor: issue 14 items 4 and 6.")
