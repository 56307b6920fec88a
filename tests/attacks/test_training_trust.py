"""Attacks on training grants and on loading an officer-approved app, found in a review
of the trust defences. Each succeeded on the code it was found on (a training job's
grants took the round number and the spec from the coordinator, and an approved app was
loaded by the run's fab_version) and now fails."""

from __future__ import annotations

import json
import sqlite3
from types import SimpleNamespace

import pytest
from islands import EXACT, ISLANDS, island_federation, job

from jobs.spec import load_job
from node.apps import Verdict
from node.executor import Executor
from node.local_api import NodeLocalServicer
from protos.scifed.v1 import node_local_pb2 as pb
from scifed.flower_apps import build_fab

FEATURES = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"]


@pytest.fixture
def fed(tmp_path, penguins, penguins_meta):
    fed = island_federation(tmp_path, penguins, penguins_meta)
    try:
        fed.pooled = penguins.dropna(subset=[*FEATURES, "species"])
        fed.run(job(EXACT))  # an aggregate job: every member opens its copy of the key
        yield fed
    finally:
        fed.__exit__(None, None, None)


def train_spec(fed, **train) -> str:
    pooled = fed.pooled
    spec = {"features": FEATURES, "label": "species", "task": "classification",
            "classes": ["Adelie", "Chinstrap", "Gentoo"],
            "model": {"kind": "logistic_regression"}, "rounds": 2, "local_epochs": 1,
            "batch_size": 16, "lr": 0.5, "validation_split": 0.1, "min_node_classes": 1,
            "standardize": {f: [float(pooled[f].mean()), float(pooled[f].std())]
                            for f in FEATURES}, **train}
    doc = {"study": "penguins", "type": "train",
           "datasets": {n: "penguins" for n in ISLANDS}, "train": spec}
    import yaml
    return json.dumps(load_job(yaml.safe_dump(doc), "job.yaml").to_dict())


def servicer(fed, node: str) -> NodeLocalServicer:
    from scifed.pki import refresh_crl
    refresh_crl(fed.ca_dir)  # the CA's fresh CRL, as the coordinator forwards it
    fed.nodes[node].studies.trust.offer((fed.ca_dir / "crl.pem").read_bytes(), via="task")
    gate = fed.nodes[node].gate
    return NodeLocalServicer(gate, apps=None, ca_pem=(fed.ca_dir / "ca.crt").read_bytes())


def grant_request(fed, spec_json: str, *, round_no: int, job_id: str = "job-t1"):
    return pb.TrainingGrantRequest(
        job_id=job_id, study_id=fed.study_id, key_version=1, dataset="penguins",
        spec_json=spec_json, filter="", round=round_no, n_nodes=3, researcher="alice",
        researcher_claim_json=fed.claim_json())


def why(fed, reply, node="dream", job_id="job-t1") -> str:
    from scifed.sealing import load_seal_key, open_sealed, refusal_context
    if reply.allowed or not reply.sealed_reason:
        return reply.reason
    return open_sealed(load_seal_key(fed.researcher_dir), reply.sealed_reason,
                       context=refusal_context(job_id, node)).decode()


def charged(fed, node: str, job_id: str) -> list[float]:
    db = fed.nodes[node].cfg.state_dir / "node.db"
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return [r[0] for r in con.execute("SELECT epsilon FROM budget_charges WHERE "
                                          "job_id=?", (job_id,))]
    finally:
        con.close()


# -- 1. DP-SGD accounting: the round number is the coordinator's word ----------------------
def test_coordinator_restarts_dp_sgd_accounting_by_resending_round_1(fed):
    """A ServerApp that calls every round "round 1" would start each round's accountant
    afresh (before: an empty history every time, so each round spent a fresh ε). The
    node hands back the latest history whatever round number the request gives."""
    api, node = servicer(fed, "dream"), "dream"
    spec = train_spec(fed, dp={"epsilon": 1.0})
    first = api.TrainingGrant(grant_request(fed, spec, round_no=1), None)
    assert first.allowed and first.dp.enabled and first.dp.epsilon == 1.0, why(fed, first)
    # the genuine ClientApp reports round 1: ε=1 spent, with its accountant history
    api.ReportTraining(pb.ReportTrainingRequest(
        job_id="job-t1", dataset="penguins", round=1, examples=100, epsilon_spent=1.0,
        delta=1e-5, dp_history=[pb.AccountantStep(noise_multiplier=1.1, sample_rate=0.1,
                                                  steps=50)]), None)
    for round_no in (2, 1, 1, 0):
        again = api.TrainingGrant(grant_request(fed, spec, round_no=round_no), None)
        assert again.allowed and again.dp.enabled
        assert [(s.noise_multiplier, s.steps) for s in again.dp_history] == [(1.1, 50)], \
            round_no  # round 1's spending, carried into every later grant
    assert charged(fed, node, "job-t1") == [1.0]


# -- 2. The grant is not bound to the job's spec ------------------------------------------
def test_coordinator_swaps_the_spec_of_a_training_job_between_rounds(fed):
    """Before: a later grant of the same job id with another spec (ε=50, then no DP) was
    served, the first grant's ε=0.5 charge replayed. Now a job's grants are bound to its
    spec: another one is refused as a replay, nothing more charged."""
    api = servicer(fed, "dream")
    small = api.TrainingGrant(grant_request(fed, train_spec(fed, dp={"epsilon": 0.5}),
                                            round_no=1), None)
    assert small.allowed and small.dp.epsilon == 0.5, why(fed, small)
    for other in (train_spec(fed, dp={"epsilon": 50.0}), train_spec(fed),
                  train_spec(fed, dp={"epsilon": 0.5}, features=FEATURES[:2],
                             standardize={})):
        reply = api.TrainingGrant(grant_request(fed, other, round_no=2), None)
        assert not reply.allowed, other
        assert "refuses a replay of job job-t1" in why(fed, reply)
    again = api.TrainingGrant(grant_request(fed, train_spec(fed, dp={"epsilon": 0.5}),
                                            round_no=2), None)
    assert again.allowed and again.dp.epsilon == 0.5, why(fed, again)  # the job itself
    assert charged(fed, "dream", "job-t1") == [0.5]


# -- 3. Flower's loader follows the run's fab_version out of FLWR_HOME --------------------
APPROVED = """\
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "approved-app"
version = "1.0.0"
license = "Apache-2.0"
dependencies = []

[tool.flwr.app]
publisher = "{publisher}"

[tool.flwr.app.components]
serverapp = "{module}:server"
clientapp = "{module}:app"

[tool.flwr.app.config]
"""
APP_CODE = """\
from flwr.clientapp import ClientApp
from flwr.serverapp import ServerApp
app = ClientApp()
app.marker = {marker!r}
server = ServerApp()
"""


def write_app(directory, *, publisher: str, module: str, marker: str) -> None:
    directory.mkdir(parents=True)
    (directory / "pyproject.toml").write_text(APPROVED.format(publisher=publisher,
                                                              module=module))
    (directory / f"{module}.py").write_text(APP_CODE.format(marker=marker))


def test_run_fab_version_cannot_lead_the_loader_to_a_planted_directory(tmp_path,
                                                                        monkeypatch):
    """Before: the executor loaded an officer-approved FAB by the run's fab_id and
    fab_version (the coordinator's words), and Flower's loader followed a version with
    "/../" in it to a directory another local account planted, whose code then ran as the
    approved app. Now it loads the bundle from where the bundle itself installs."""
    home = tmp_path / "state" / "flower"
    home.mkdir(parents=True)
    monkeypatch.setenv("FLWR_HOME", str(home))
    write_app(tmp_path / "src", publisher="officer", module="approved_mod_rv",
              marker="approved")
    fab = build_fab(tmp_path / "src")
    sha8 = fab.hash_str[:8]
    # another local account plants its app in a world-readable place (here: tmp_path)
    write_app(tmp_path / f"planted.{sha8}", publisher="x", module="planted_mod_rv",
              marker="foreign code")
    up = "/".join([".."] * 4)  # apps/<dir>/.. -> apps, -> FLWR_HOME, -> state, -> tmp_path
    run = SimpleNamespace(fab_id="officer/approved-app",
                          fab_version=f"1.0.0.{sha8}/{up}/planted", run_id=7)
    ex = Executor(port_file=tmp_path / "p", secret_file=tmp_path / "s", local_api="x")
    app = ex._load(Verdict(fab.hash_str, True), run, fab)  # the FAB the officer approved
    assert getattr(app, "marker", None) == "approved"
