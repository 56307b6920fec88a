"""The attacker's test bed: a synthetic staff table (person id, age, salary, department,
zip code) at three nodes, 60 rows each, graded G2 / CONDITIONAL (k = 5, query auditing,
min 2 nodes), on the in-memory federation (real driver, gate, release path, BFV)."""

from __future__ import annotations

import copy
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from harness.approvers import officer_approves
from harness.inmemory import InMemoryFederation

REPO = Path(__file__).resolve().parents[2]
NODES = ("alpha", "beta", "gamma")
DEPARTMENTS = ["biology", "chemistry", "physics", "geology", "mathematics"]
ROWS = 60
K = 5  # G2 / CONDITIONAL


def staff_table(seed: int = 7) -> pd.DataFrame:
    """180 people: unique ids and salaries (to the cent), ages 22-65, five departments,
    zip codes that are nearly unique."""
    rng = np.random.default_rng(seed)
    n = ROWS * len(NODES)
    table = pd.DataFrame({
        "person_id": np.arange(100_001, 100_001 + n),
        "age": rng.integers(22, 66, n),
        "salary": np.round(rng.uniform(40_000, 160_000, n), 2),
        "department": rng.choice(DEPARTMENTS, n),
        "zip_code": [f"{z:06d}" for z in rng.choice(np.arange(100_000, 999_999), n,
                                                    replace=False)],
        "node": np.repeat(NODES, ROWS),
    })
    # undeclared categories: an office number nearly per person, and job titles of which
    # one ("director") only one person holds
    table["office"] = [f"R{r}" for r in rng.integers(100, 400, n)]
    table["title"] = rng.choice(["researcher", "engineer", "technician"], n)
    table.loc[5, "title"] = "director"
    return table


def staff_meta(grade: str = "G2", category: str = "CONDITIONAL") -> dict:
    meta = copy.deepcopy(yaml.safe_load((REPO / "configs" / "datasets" /
                                         "penguins.yaml").read_text()))
    meta.update({
        "title": {"en": "Staff of the institute"},
        "description": {"en": "Age, salary, department and zip code of staff members."},
        "keywords": ["staff", "salary", "human resources"], "subjects": ["630"],
        "security_grade": grade, "sharing_category": category,
        "personal_info": {"status": "anonymized", "sensitive": False, "categories": []},
        "conditions_of_use": [{"code": "no_reidentification",
                               "text": "Aggregate analyses inside approved studies only."}],
        "classification": {"discipline": "630", "subject_category": "personal",
                           "domain": "科学数据/管理学"},
        "targets": [], "splits": None, "annotation": None,
        "fields": {
            "person_id": {"description": "Pseudonymous staff number.", "role": "id",
                          "pi_kind": "quasi_identifier",
                          "resolution": 1},  # any id: the auditor, not the grid, rules
            "age": {"description": "Age in years.", "unit": "a",
                    "constraints": {"minimum": 18, "maximum": 70}},
            "salary": {"description": "Gross annual salary.", "unit": "[CNY]",
                       "resolution": 1000,  # filter thresholds in steps of 1000 at G2+
                       "constraints": {"minimum": 0, "maximum": 200000}},
            "department": {"description": "Department.",
                           "constraints": {"enum": DEPARTMENTS}},
            "zip_code": {"description": "Home zip code.", "pi_kind": "quasi_identifier"},
            "office": {"description": "Office room."},
            "title": {"description": "Job title."},
        },
    })
    return {k: v for k, v in meta.items() if v is not None}


def federation(root: Path, *, grade: str = "G2", category: str = "CONDITIONAL",
               min_nodes: int = 2) -> tuple[InMemoryFederation, pd.DataFrame]:
    df = staff_table()
    fed = InMemoryFederation(root, list(NODES)).__enter__()
    meta = staff_meta(grade, category)
    for node in NODES:
        fed.add_dataset(node, df[df.node == node].drop(columns="node"), meta, "staff")
    fed.create_study("staff", {n: "staff" for n in NODES}, min_nodes=min_nodes)
    return fed, df


def stats(nodes=NODES, filter: str | None = None, **spec) -> str:
    job = {"study": "staff", "type": "stats", "datasets": {n: "staff" for n in nodes},
           "stats": spec}
    if filter:
        job["filter"] = filter
    return yaml.safe_dump(job, sort_keys=False)


def approve_until_done(fed: InMemoryFederation, job_id: str, timeout: float = 30) -> None:
    """Every officer approves each request the job puts in its queue (an alert's hold,
    say) until the job ends."""
    deadline = time.monotonic() + timeout
    while not fed.job(job_id).status.stopped:
        assert time.monotonic() < deadline, fed.job(job_id)
        for core in fed.nodes.values():
            for request in core.approvals.list("pending"):
                if request.job_id == job_id:
                    officer_approves(core.approvals, request.approval_id)
        time.sleep(0.05)


def attempt(fed: InMemoryFederation, spec_yaml: str) -> tuple[dict | None, str]:
    """Run a job as the researcher; (the released result or None, the refusal text)."""
    try:
        job_id = fed.submit(spec_yaml)
    except Exception as exc:  # refused at submission
        return None, str(exc)
    deadline = time.monotonic() + 30
    while True:
        view = fed.job(job_id)
        held = [t.detail for t in view.tasks if t.state == "waiting"]
        if held:  # an alert holds the researcher: the officer decides; give up here
            fed.coordinator.jobs.cancel(job_id, fed.researcher)
            fed.last_view = view
            return None, "held: " + "; ".join(held)
        if view.status.stopped:
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} still {view.status}")
        time.sleep(0.02)
    fed.last_view = view
    if view.status != "done":
        return None, view.error
    return fed.result_json(job_id), ""
