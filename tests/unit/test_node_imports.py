"""A node starts with what every node needs and imports the rest when a job needs it:
100 node processes share one machine only if each stays small (docs/benchmarks.md).
These libraries cost a node from 25 to 260 MB each and are used by some job types only."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# imported on use: training, FAB checks, scorecard, statistical tests, schema validation
LATER = ("torch", "opacus", "flwr", "fastapi", "sklearn", "scipy", "pandas", "matplotlib",
         "statsmodels", "frictionless", "opendp.extras")


def modules_after(statement: str) -> set[str]:
    code = f"import json, sys\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    return set(json.loads(out.stdout.splitlines()[-1]))


def test_node_start_up_imports_no_library_a_job_loads_on_use() -> None:
    loaded = modules_after("import node.server")
    assert sorted(m for m in LATER if m in loaded) == []
    assert "jobs.stats" in loaded and "duckdb" in loaded  # the node itself is all there


def test_the_libraries_load_when_a_job_needs_them() -> None:
    """The lazy imports still resolve: a release computing a p-value imports scipy.stats,
    a DP query OpenDP's measurements, a FAB check Flower."""
    loaded = modules_after(
        "import numpy as np\n"
        "from jobs.regression import fit\n"
        "fit.table(['a'], np.array([1.0]), np.eye(1), df=10.0, confidence=0.95)\n"
        "from jobs import privacy\n"
        "privacy.add_laplace(np.zeros(2), [privacy.Block('n', [0, 1], 1.0, True)], 1.0)\n"
        "from scifed.flower_apps import build_fab\n"
        "from jobs.train import TrainJob\n"
        "build_fab(TrainJob.flower_app.app_dir)")
    assert {"scipy.stats", "opendp.measurements", "flwr"} <= loaded
