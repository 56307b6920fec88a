"""A `train` job on a G4 cell, released through the officer's output review, the way
people run it: real coordinator and node processes, Flower, DP-SGD, and the officer's
`scifed node approvals approve` and `scifed node review list|show|release --key`.

Biscoe (the study's lead, so its release node) is graded G4 CONDITIONAL: training there
needs the officer's approval and DP-SGD (ε ≤ 3), and its cell asks for output review, so
the model waits for the officer before it is sealed to the researcher, and no live
metrics leave meanwhile. Dream and Torgersen stay G1 OPEN."""

from __future__ import annotations

import copy
import json

import pytest
import yaml
from test_train_job import FEATURES, ISLANDS, accuracy, job_dict

from harness.federation import LocalFederation, wait_for

pytestmark = pytest.mark.slow
REVIEWER = "biscoe"


def g4(meta: dict, repo) -> dict:
    example = yaml.safe_load((repo / "configs" / "datasets" / "contraception.yaml")
                             .read_text())
    out = copy.deepcopy(meta)
    out.update({"security_grade": "G4", "sharing_category": "CONDITIONAL",
                "grade_assessment": example["grade_assessment"],
                "approvals": example["approvals"],
                "conditions_of_use": [{"code": "research_only",
                                       "text": "Federated analyses inside approved studies."}]})
    return out


@pytest.fixture(scope="module")
def fed(tmp_path_factory, penguins, penguins_meta):
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    fed = LocalFederation(tmp_path_factory.mktemp("trainreview"),
                          {n: f"Palmer {i}" for n, i in ISLANDS.items()}, flower=True,
                          task_timeout_seconds=120)
    fed.setup()
    fed.start_all()
    try:
        for node, island in ISLANDS.items():
            meta = g4(penguins_meta, repo) if node == REVIEWER else penguins_meta
            fed.add_dataset(node, penguins[penguins.island == island], meta, "penguins")
        fed.create_study("morphology", {n: "penguins" for n in ISLANDS})
        fed.pooled = penguins.dropna(subset=[*FEATURES, "species"])
        yield fed
    finally:
        fed.stop_all()


def cli_json(fed, *args: str):
    return json.loads(fed.node_cli(REVIEWER, *args, "--json").stdout)


def test_a_g4_model_is_released_after_the_officers_review(fed):
    with fed.researcher() as r:
        job_id = r.submit(yaml.safe_dump(job_dict(fed, rounds=2, local_epochs=10,
                                                  dp={"epsilon": 3.0})))
        wait_for(lambda: any(a["job_id"] == job_id
                             for a in cli_json(fed, "approvals", "list")), 120,
                 "the G4 training job in biscoe's approval queue")
        (request,) = [a for a in cli_json(fed, "approvals", "list") if a["job_id"] == job_id]
        fed.decide(REVIEWER, "approve", request["approval_id"])
        wait_for(lambda: r.job(job_id).phase == "in output review"
                 or r.job(job_id).status not in ("submitted", "running"), 900,
                 "the trained model to reach the officer's output review")
        info = r.job(job_id)
        assert (info.status, info.phase) == ("running", "in output review"), info.error
        assert not info.progress  # no live metrics leave a reviewed cell
        (held,) = [v for v in cli_json(fed, "review", "list") if v["job_id"] == job_id]
        shown = cli_json(fed, "review", "show", held["review_id"])
        assert shown["grade"] == "G4" and shown["job_type"] == "train"
        assert shown["result"]["model"]["features"] == FEATURES
        assert [m["round"] for m in shown["view"]["tables"]["metrics"]] == [0, 1, 2]
        assert all(0 < e <= 3.0 for e in shown["result"]["epsilon"].values())
        decided = json.loads(fed.node_cli(
            REVIEWER, "review", "release", held["review_id"], "--key",
            str(fed.approver(REVIEWER)), "--passphrase-file", str(fed.passphrase_file),
            "--json").stdout)
        assert decided["state"] == "released" and decided["signed_by"] == "officer"
        info = r.wait(job_id, timeout=300)
        assert info.status == "done", info.error
        res = r.result(job_id)
        assert res.raw["model"] == shown["result"]["model"]  # what the officer released
        assert accuracy(fed, res.model()) >= 0.6
