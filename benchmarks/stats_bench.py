"""End-to-end latency of a federated `stats` job (real processes on loopback, CKKS,
sealed release) with 3 and 10 nodes, beside the same statistics computed by DuckDB on
the pooled file in one process."""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import yaml
from rich.console import Console
from rich.table import Table

from benchmarks.federated import timed_jobs

EDGES = [float(x) for x in np.linspace(-4, 4, 17)]
REPEATS = 3


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


def federated_seconds(root: Path, n_nodes: int, rows: int) -> tuple[float, float, int]:
    df = synthetic(rows)
    seconds, res = timed_jobs(root, n_nodes, df, "Synthetic benchmark measurements", job,
                              REPEATS)
    pooled = root / f"pooled{n_nodes}.csv"
    df.to_csv(pooled, index=False)
    return seconds, pooled_seconds(pooled), res.get("quantile_rounds", 0)


def main() -> None:
    console = Console()
    table = Table(title="stats job end to end (median of 3) vs DuckDB on the pooled file",
                  title_justify="left")
    for col in ("nodes", "rows", "federated s", "pooled DuckDB s", "ratio",
                "quantile rounds"):
        table.add_column(col, justify="right")
    with tempfile.TemporaryDirectory() as tmp:
        for n_nodes, rows in ((3, 100_000), (10, 100_000)):
            with console.status(f"stats job with {n_nodes} nodes, {rows} rows"):
                fed_s, pooled_s, rounds = federated_seconds(Path(tmp), n_nodes, rows)
            table.add_row(str(n_nodes), f"{rows:,}", f"{fed_s:.2f}", f"{pooled_s:.3f}",
                          f"{fed_s / pooled_s:.0f}x", str(rounds))
    console.print(table)


if __name__ == "__main__":
    main()
