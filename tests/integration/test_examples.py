"""Every example job in ``configs/jobs/`` as a user runs it: the demo's study
(``penguin-morphology``, the penguins of three islands) on real node processes over mTLS
on 127.0.0.1, submitted with ``scifed job submit --wait``, read back with ``scifed job
result --json`` and written with ``--out DIR`` (the tables as CSV, the plots as PNG,
``result.json`` and ``report.html``). Each type's numbers are checked against the pooled
library result in its own pipeline tests; the regression example is checked here too,
against statsmodels on the pooled rows, through the whole command line."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf
import yaml

from harness.federation import LocalFederation

ISLANDS = {"biscoe": "Biscoe", "dream": "Dream", "torgersen": "Torgersen"}
EXAMPLES = Path(__file__).resolve().parents[2] / "configs" / "jobs"
# `train` needs the coordinator's Flower SuperLink: tests/integration/test_train_job.py
# runs it (and its `--out`) on a federation that has one.
NEEDS_FLOWER = {"train.yaml"}


@pytest.fixture(scope="module")
def fed(tmp_path_factory, penguins, penguins_meta):
    fed = LocalFederation(tmp_path_factory.mktemp("examples"),
                          {n: f"Palmer {i}" for n, i in ISLANDS.items()},
                          task_timeout_seconds=30)
    fed.setup()
    fed.start_all()
    # the psi example joins on a ring number: give every bird one, the first 40 of each
    # island R000-R039 (so 40 rings are held at every node), and declare it an identifier
    meta = copy.deepcopy(penguins_meta)
    meta["fields"]["ring"] = {"description": "Ring number.", "role": "id"}
    try:
        for node, island in ISLANDS.items():
            birds = penguins[penguins.island == island].reset_index(drop=True)
            birds["ring"] = [f"r{i:03d} " if i < 40 else f"{node}-{i}" for i in birds.index]
            fed.add_dataset(node, birds, meta, "penguins")
        fed.create_study("penguin-morphology", {n: "penguins" for n in ISLANDS})
        yield fed
    finally:
        fed.stop_all()


def examples() -> list[Path]:
    return [p for p in sorted(EXAMPLES.glob("*.yaml")) if p.name not in NEEDS_FLOWER]


@pytest.mark.parametrize("path", examples(), ids=lambda p: p.stem)
def test_each_example_job_runs_from_the_command_line_and_writes_its_files(fed, path,
                                                                           tmp_path,
                                                                           penguins):
    ident = ["--identity", str(fed.researcher_dir)]
    job_id = fed.cli("job", "submit", str(path), "--wait", *ident).stdout.strip()
    assert "done" in fed.cli("job", "status", job_id, *ident).stdout
    raw = json.loads(fed.cli("job", "result", job_id, "--json", *ident).stdout)
    kind = yaml.safe_load(path.read_text())["type"]
    assert raw["type"] == kind
    assert sorted(raw["meta"]["contributors"]) == sorted(ISLANDS)
    out = tmp_path / "out"
    fed.cli("job", "result", job_id, "--out", str(out), *ident)
    names = {p.name for p in out.iterdir()}
    assert {"result.json", "report.html"} <= names, names
    assert any(n.endswith(".csv") for n in names), names
    pngs = [out / n for n in names if n.endswith(".png")]
    assert pngs and all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    assert json.loads((out / "result.json").read_text())["type"] == kind
    html = (out / "report.html").read_text()
    assert html.startswith("<!doctype html>") and "<table" in html
    if kind == "regression":
        check_regression(penguins, path, out)
    if kind == "psi":  # normalised (strip, upper): the 40 rings every island holds
        assert raw["intersection"] == 40, raw


def check_regression(penguins: pd.DataFrame, path: Path, out: Path) -> None:
    """The written coefficients equal statsmodels' on the pooled penguins."""
    formula = yaml.safe_load(path.read_text())["regression"]["formula"]
    ref = smf.ols(formula, penguins).fit()
    coef = pd.read_csv(out / "coefficients.csv").set_index("term")
    np.testing.assert_allclose(coef.estimate.reindex(ref.params.index), ref.params,
                               rtol=1e-6)
    np.testing.assert_allclose(coef.std_error.reindex(ref.params.index), ref.bse,
                               rtol=1e-6)
    fit = pd.read_csv(out / "fit.csv").set_index("statistic").value
    assert float(fit["r_squared"]) == pytest.approx(ref.rsquared, rel=1e-9)
