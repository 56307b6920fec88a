"""Wall time of federated `regression` jobs (real processes on loopback, BFV, sealed
release): exact OLS (one encrypted sum) and a logistic GLM (one encrypted round per IRLS
iteration), beside statsmodels fitting the same model on the pooled file in one process,
in the same run. The largest relative difference of the coefficients is printed too."""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import statsmodels.api as sm
import statsmodels.formula.api as smf
import yaml
from rich.console import Console

from benchmarks.federated import timed_jobs
from benchmarks.table import Figure, print_area

REPEATS = 3
ROWS = 100_000
NODES = 3
RHS = "x1 + x2 + x3 + x4 + C(group)"
MODELS = {"OLS": ("y", "gaussian"), "logistic": ("event", "binomial")}


def synthetic(rows: int, seed: int = 0) -> pd.DataFrame:
    """Four correlated predictors, a four-level group, a continuous and a 0/1 outcome."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 4)) @ np.array([[1, .3, 0, 0], [0, 1, .2, 0],
                                               [0, 0, 1, .4], [0, 0, 0, 1]])
    group = rng.choice(["a", "b", "c", "d"], size=rows)
    eta = 0.3 + x @ np.array([0.8, -0.5, 0.3, 0.1]) + 0.4 * (group == "b")
    return pd.DataFrame({"x1": x[:, 0], "x2": x[:, 1], "x3": x[:, 2], "x4": x[:, 3],
                         "group": group, "y": eta + rng.normal(size=rows),
                         "event": (rng.uniform(size=rows) < 1 / (1 + np.exp(-eta)))
                         .astype(float)})


def job(response: str, family: str):
    def make(nodes: list[str]) -> str:
        return yaml.safe_dump({"study": "bench", "type": "regression",
                               "datasets": {n: "synthetic" for n in nodes},
                               "regression": {"formula": f"{response} ~ {RHS}",
                                              "family": family}})
    return make


def pooled(path: Path, response: str, family: str):
    """(median seconds of read + fit, the fit) with statsmodels on the pooled file."""
    times, fit = [], None
    for _ in range(REPEATS):
        t = time.perf_counter()
        df = pd.read_csv(path)
        formula = f"{response} ~ {RHS}"
        fit = (smf.ols(formula, df).fit() if family == "gaussian" else
               smf.glm(formula, df, family=sm.families.Binomial()).fit())
        times.append(time.perf_counter() - t)
    return statistics.median(times), fit


def main(console: Console | None = None) -> None:
    console = console or Console()
    figures = []
    df = synthetic(ROWS)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pooled.csv"
        df.to_csv(path, index=False)
        for name, (response, family) in MODELS.items():
            with console.status(f"{name}, {NODES} nodes, {ROWS:,} rows"):
                fed_s, res = timed_jobs(Path(tmp) / family, NODES, df, "Synthetic "
                                        "regression data", job(response, family), REPEATS)
                ref_s, ref = pooled(path, response, family)
            est = pd.Series({c["term"]: c["estimate"] for c in res["coefficients"]})
            diff = float(np.max(np.abs(est[ref.params.index] / ref.params - 1)))
            iterations = res["fit"]["iterations"]
            figures += [
                Figure(f"{name}, {ROWS:,} rows over {NODES} nodes, end to end (median of "
                       f"{REPEATS})", fed_s, ref_s, "", "s"),
                Figure(f"  {name}: encrypted rounds (IRLS iterations)", iterations,
                       ref.fit_history["iteration"] if family != "gaussian" else 1, "",
                       "rounds"),
                Figure(f"  {name}: max rel. difference of the coefficients", diff, 0.0, "",
                       "rel."),
            ]
    print_area(console, "regression jobs: real processes on loopback, BFV, sealed release",
               figures, "statsmodels fitting the same model on the pooled file (read + "
               "fit), in one process", "No anchor in the performance notes.")


if __name__ == "__main__":
    main()
