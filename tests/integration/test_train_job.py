"""A `train` job the way a researcher runs it: `scifed job submit` to a coordinator that
supervises its Flower SuperLink, nodes that supervise their SuperNodes (keys registered
at enrolment), CKKS-encrypted FedAvg, and the model sealed to the researcher, opened
with `scifed job result --out` and `scifed model load`, scored against scikit-learn."""

from __future__ import annotations

import json
import re
import sqlite3

import grpc
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from sklearn.linear_model import LogisticRegression

from coordinator.flower import SuperLink
from harness.federation import LocalFederation, wait_for
from scifed.config import CoordinatorConfig, load_config
from jobs.train.models import load_model_file

ISLANDS = {"biscoe": "Biscoe", "dream": "Dream", "torgersen": "Torgersen"}
FEATURES = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"]
CLASSES = ["Adelie", "Chinstrap", "Gentoo"]


@pytest.fixture(scope="module")
def fed(tmp_path_factory, penguins, penguins_meta):
    fed = LocalFederation(tmp_path_factory.mktemp("trainjob"),
                          {n: f"Palmer {i}" for n, i in ISLANDS.items()}, flower=True,
                          task_timeout_seconds=120)
    fed.setup()
    fed.start_all()
    try:
        for node, island in ISLANDS.items():
            fed.add_dataset(node, penguins[penguins.island == island], penguins_meta,
                            "penguins")
        fed.create_study("morphology", {n: "penguins" for n in ISLANDS})
        fed.pooled = penguins.dropna(subset=[*FEATURES, "species"])
        yield fed
    finally:
        fed.stop_all()


def job(fed, **train) -> str:
    pooled = fed.pooled
    spec = {"features": FEATURES, "label": "species", "task": "classification",
            "classes": CLASSES, "model": {"kind": "logistic_regression"}, "rounds": 3,
            "local_epochs": 30, "batch_size": 16, "lr": 0.5, "validation_split": 0.1,
            "min_node_classes": 1,
            "standardize": {f: [float(pooled[f].mean()), float(pooled[f].std())]
                            for f in FEATURES}, **train}
    return yaml.safe_dump({"study": "morphology", "type": "train",
                           "datasets": {n: "penguins" for n in ISLANDS}, "train": spec})


def rounds_done(client, job_id: str) -> int:
    """Rounds checkpointed so far, from the job's phase ("round N/M": N-1 are done)."""
    info = client.job(job_id)
    if info.status not in ("submitted", "running"):
        raise AssertionError(f"job {job_id} is {info.status}: {info.error}")
    if info.phase == "final evaluation":
        return 10**6  # every round is done
    m = re.match(r"round (\d+)/", info.phase)
    return int(m.group(1)) - 1 if m else 0


def test_train_job_end_to_end_matches_pooled_sklearn(fed, tmp_path):
    spec = tmp_path / "train.yaml"
    spec.write_text(job(fed))
    ident = ["--identity", str(fed.researcher_dir)]
    job_id = fed.cli("job", "submit", str(spec), "--wait", *ident, timeout=900).stdout.strip()
    out = tmp_path / "result"
    fed.cli("job", "result", job_id, "--out", str(out), *ident)
    metrics = pd.read_csv(out / "metrics.csv")
    assert list(metrics["round"]) == [0, 1, 2, 3] and "val_accuracy" in metrics  # 0: initial
    assert (out / "learning_curve.png").read_bytes()[:4] == b"\x89PNG"
    described = fed.cli("model", "load", str(out / "model.pt")).stdout
    assert "logistic_regression" in described and "species" in described
    model, info = load_model_file(out / "model.pt")
    pooled = fed.pooled
    with torch.no_grad():
        pred = model(torch.tensor(pooled[FEATURES].to_numpy(np.float32))).argmax(1).numpy()
    accuracy = float((np.array(CLASSES)[pred] == pooled.species.to_numpy()).mean())
    x = pooled[FEATURES].to_numpy()
    x = (x - x.mean(axis=0)) / x.std(axis=0, ddof=1)
    reference = LogisticRegression(max_iter=1000).fit(x, pooled.species).score(
        x, pooled.species)
    assert accuracy >= reference - 0.01, (accuracy, reference)
    status = json.loads(fed.cli("job", "status", job_id, "--json", *ident).stdout)
    assert status["status"] == "done" and sorted(status["contributors"]) == sorted(ISLANDS)
    # Each round's pooled metrics were sealed to the researcher as the job ran; they are
    # the numbers of the final result (whose last validation comes with the final model).
    with fed.researcher() as r:
        info = r.job(job_id)
        live = r.live_metrics(info)
    assert [p.round for p in info.progress] == [1, 2, 3]
    assert [m["round"] for m in live] == [0, 1, 2, 3] and "val_accuracy" not in live[3]
    released = metrics.set_index("round")
    for m in live:
        for name in set(m) - {"round"}:
            assert m[name] == pytest.approx(released.loc[m["round"], name], rel=1e-9), name
    watched = fed.cli("job", "watch", job_id, *ident).stdout
    assert "val_accuracy" in watched and f"{live[2]['val_accuracy']:.4f}" in watched


@pytest.mark.parametrize("change,needle", [
    ({"model": {"kind": "random_forest"}}, "train.model.kind"),
    ({"rounds": 0}, "train.rounds"),
    ({"batch_size": 100000}, "train.batch_size"),
    ({"features": ["wingspan"], "standardize": {}}, "wingspan"),
])
def test_bad_train_jobs_are_refused_at_submission(fed, change, needle):
    with fed.researcher() as r:
        with pytest.raises(grpc.RpcError) as exc:
            r.submit(job(fed, **change))
    assert needle in exc.value.details()


def test_a_single_class_node_fails_the_job_with_its_reason(fed):
    with fed.researcher() as r:
        job_id = r.submit(job(fed, rounds=1, local_epochs=1, min_node_classes=2))
        info = r.wait(job_id, timeout=600)
    assert info.status == "failed"
    assert "torgersen" in info.error.lower() and "class" in info.error
    with fed.operator() as op:
        wait_for(lambda: bool(op.nodes().online.all()), 30, "nodes still online")


def test_coordinator_restart_mid_training_and_resume(fed):
    with fed.researcher() as r:
        job_id = r.submit(job(fed, rounds=4, local_epochs=5))
        wait_for(lambda: rounds_done(r, job_id) >= 2, 600,
                 "two rounds to be checkpointed")
    fed.stop("coordinator")
    fed.start_coordinator()
    with fed.researcher() as r:
        info = r.job(job_id)
        assert info.status == "interrupted" and "job resume" in info.error
        out = fed.cli("job", "resume", job_id, "--identity", str(fed.researcher_dir))
        assert job_id in out.stdout
        info = r.wait(job_id, timeout=900)
        assert info.status == "done", info.error
        res = r.result(job_id)
    assert list(res.metrics["round"]) == [0, 1, 2, 3, 4]
    checkpoint = json.loads((fed.coord_dir / "state" / "flower" / "jobs" / job_id /
                             "checkpoint.json").read_text())
    assert checkpoint["resumed_after"] and checkpoint["resumed_after"][0] >= 2


def test_cancel_stops_the_flower_run(fed):
    """`scifed job cancel` ends a training job mid-run and stops its Flower run; the
    nodes train the next job as usual (the test after this one)."""
    with fed.researcher() as r:
        job_id = r.submit(job(fed, rounds=30, local_epochs=1))
        wait_for(lambda: rounds_done(r, job_id) >= 1, 300, "round 1 to end")
        out = fed.cli("job", "cancel", job_id, "--identity", str(fed.researcher_dir))
        assert job_id in out.stdout
        info = r.wait(job_id, timeout=120)
        assert info.status == "cancelled" and info.error == "cancelled by alice"
        with pytest.raises(grpc.RpcError) as exc:
            r.cancel(job_id)
        assert "nothing to cancel" in exc.value.details()
    checkpoint = json.loads((fed.coord_dir / "state" / "flower" / "jobs" / job_id /
                             "checkpoint.json").read_text())
    cfg = load_config(fed.coord_dir / "coordinator.yaml", CoordinatorConfig)
    superlink = SuperLink(cfg.state_dir, cfg.tls.files(), port=cfg.flower_port)
    state = superlink.run_state(checkpoint["flower_runs"][-1])
    assert (state.status, state.sub_status) == ("finished", "stopped")
    assert checkpoint["round"] < 30


def test_every_node_checks_the_job_before_any_flower_run(fed):
    """Dream's officer holds training for approval and caps its privacy budget: a job
    asking for more ε than is left fails with dream's reason, charging nothing and
    starting no Flower run; a job within budget waits for the officer, then trains and
    is charged its ε once, to the researcher who submitted it."""
    override = fed.node_dir("dream") / "policy.yaml"
    override.write_text("job_types:\n  train: approval\ndp:\n  annual_budget: 3\n"
                        "  researcher_budget: 2\n")
    fed.node_cli("dream", "policy", "set", "penguins", "--file", str(override))
    superlink_db = fed.coord_dir / "state" / "flower" / "superlink.db"

    def flower_runs() -> int:
        con = sqlite3.connect(f"file:{superlink_db}?mode=ro", uri=True)
        try:
            return con.execute("SELECT count(*) FROM run").fetchone()[0]
        finally:
            con.close()

    def spent() -> list:
        return json.loads(fed.node_cli("dream", "budget", "show", "--json").stdout)

    try:
        runs_before, budget_before = flower_runs(), spent()
        with fed.researcher() as r:
            greedy = r.submit(job(fed, rounds=1, local_epochs=1,
                                  dp={"epsilon": 2.5, "delta": 1e-5}))
            info = r.wait(greedy, timeout=300)
        assert info.status == "failed"
        assert "node dream" in info.error and "alice's privacy budget" in info.error
        assert "ε=2.5" in info.error and "2 of 2 is left" in info.error
        assert flower_runs() == runs_before and spent() == budget_before
        assert not (fed.coord_dir / "state" / "flower" / "jobs" / greedy).exists()

        with fed.researcher() as r:
            job_id = r.submit(job(fed, rounds=1, local_epochs=1,
                                  dp={"epsilon": 1.5, "delta": 1e-5}))
            wait_for(lambda: any(t.state == "waiting" and "approval at node dream" in t.detail
                                 for t in r.job(job_id).tasks), 120, "the approval hold")
            assert flower_runs() == runs_before
            held = json.loads(fed.node_cli("dream", "approvals", "list", "--json").stdout)
            assert [a["job_id"] for a in held] == [job_id] and held[0]["researcher"] == "alice"
            fed.node_cli("dream", "approvals", "approve", held[0]["approval_id"])
            info = r.wait(job_id, timeout=600)
            assert info.status == "done", info.error
            res = r.result_json(job_id)
        assert flower_runs() == runs_before + 1
        assert 0 < res["epsilon"]["dream"] <= 1.5
        budget = spent()
        assert budget[0]["spent"] == 1.5 and budget[0]["by_researcher"] == {"alice": 1.5}
    finally:
        fed.node_cli("dream", "policy", "reset", "penguins")
