"""A first run as a new user makes it from the README: `scifed ca init`, `coordinator
init`, `node init`, `ca sign`, `coordinator serve` and `node serve` — every step a real
`scifed` process on loopback — then the researcher's commands: a filter on a missing
column, a stats result that states its conventions, a train job on the nodes that run a
SuperNode and one naming a node that runs none, `job list`, `--json` output and
`ca revoke --name`.

Node `node-c` is initialised with `--flower-superlink none`, as an officer would for a
node that takes no part in training; the others point their SuperNodes at the
coordinator's SuperLink (`--flower-port`, on a free port here rather than 9093 so that
other runs on the machine do not collide).
"""

from __future__ import annotations

import json

import pytest
import yaml

from harness.federation import LocalFederation, wait_for
from scifed.config import CoordinatorConfig, NodeConfig, load_config

pytestmark = pytest.mark.slow

ISLANDS = {"node-a": "Biscoe", "node-b": "Dream", "node-c": "Torgersen"}
TRAINERS = {"node-a", "node-b"}
FEATURES = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"]


@pytest.fixture(scope="module")
def fed(tmp_path_factory, penguins, penguins_meta):
    fed = LocalFederation(tmp_path_factory.mktemp("firstrun"),
                          {n: f"Palmer {i}" for n, i in ISLANDS.items()}, flower=True,
                          trainers=TRAINERS, task_timeout_seconds=120)
    fed.setup()
    fed.start_all()
    try:
        for node, island in ISLANDS.items():
            fed.add_dataset(node, penguins[penguins.island == island], penguins_meta,
                            "penguins")
        fed.create_study("penguins", {n: "penguins" for n in ISLANDS}, min_nodes=2)
        fed.pooled = penguins.dropna(subset=[*FEATURES, "species"])
        yield fed
    finally:
        fed.stop_all()


def researcher(fed, *args: str, check: bool = True):
    return fed.cli(*args, "--identity", str(fed.researcher_dir), check=check)


def submit(fed, tmp_path, spec: dict, *extra: str, check: bool = True):
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(spec))
    return researcher(fed, "job", "submit", str(path), *extra, check=check)


def train_spec(fed, nodes) -> dict:
    pooled = fed.pooled
    return {"study": "penguins", "type": "train", "datasets": {n: "penguins" for n in nodes},
            "train": {"features": FEATURES, "label": "species", "task": "classification",
                      "classes": ["Adelie", "Chinstrap", "Gentoo"],
                      "model": {"kind": "logistic_regression"}, "rounds": 2,
                      "local_epochs": 5, "batch_size": 16, "lr": 0.5,
                      "validation_split": 0.2, "min_node_classes": 1,
                      "standardize": {f: [float(pooled[f].mean()), float(pooled[f].std())]
                                      for f in FEATURES}}}


def test_init_wrote_the_flower_settings(fed):
    coord = load_config(fed.coord_dir / "coordinator.yaml", CoordinatorConfig)
    assert coord.flower_port == fed.flower_port
    for node in ISLANDS:
        cfg = load_config(fed.node_config(node), NodeConfig)
        expected = f"127.0.0.1:{fed.flower_port}" if node in TRAINERS else None
        assert cfg.flower_superlink == expected


def test_a_filter_on_a_missing_column_is_refused_at_submission_by_name(fed, tmp_path):
    out = submit(fed, tmp_path, {"study": "penguins", "type": "stats",
                                 "datasets": {n: "penguins" for n in ISLANDS},
                                 "filter": "wingspan_mm > 30",
                                 "stats": {"columns": ["body_mass_g"]}}, check=False)
    assert out.returncode == 1
    assert "unknown column 'wingspan_mm'" in out.stderr
    assert "answered" not in out.stderr  # not a quorum failure that reads like the network


def test_a_stats_result_says_which_variance_and_bins(fed, tmp_path):
    spec = {"study": "penguins", "type": "stats", "datasets": {n: "penguins" for n in ISLANDS},
            "stats": {"columns": ["body_mass_g"],
                      "histograms": {"body_mass_g": [2500, 4000, 6500]}}}
    submitted = json.loads(submit(fed, tmp_path, spec, "--wait", "--json").stdout)
    assert submitted["status"] == "done"
    job_id = submitted["job"]
    printed = researcher(fed, "job", "result", job_id).stdout
    assert "variance: sample variance, ddof = 1" in printed
    assert "histogram bins: [a, b)" in printed
    raw = json.loads(researcher(fed, "job", "result", job_id, "--json").stdout)
    assert raw["meta"]["conventions"]["variance"].startswith("sample variance, ddof = 1")
    assert raw["columns"]["body_mass_g"]["variance"] == pytest.approx(
        fed.pooled.body_mass_g.var(ddof=1), rel=1e-9)


def test_a_train_job_naming_a_node_without_a_supernode_names_it(fed, tmp_path):
    out = submit(fed, tmp_path, train_spec(fed, ISLANDS), "--wait", check=False)
    assert out.returncode == 1
    assert "node(s) node-c run no Flower SuperNode" in out.stderr
    assert "flower_superlink" in out.stderr
    assert "only" not in out.stderr  # not the timeout's "only 2 of the job's nodes"


def test_a_train_job_result_leads_with_its_rounds_and_validation(fed, tmp_path):
    job_id = submit(fed, tmp_path, train_spec(fed, sorted(TRAINERS)), "--wait").stdout.strip()
    printed = researcher(fed, "job", "result", job_id).stdout
    assert "train: 2 round(s) of a logistic_regression (classification)" in printed
    assert "final validation (after round 2" in printed and "val_accuracy" in printed
    assert "rows: 0" not in printed and "k = None" not in printed
    watched = json.loads(researcher(fed, "job", "watch", job_id, "--json").stdout)
    assert watched["status"] == "done" and [m["round"] for m in watched["metrics"]]
    out = tmp_path / "res"
    researcher(fed, "job", "result", job_id, "--out", str(out))
    model = json.loads(fed.cli("model", "load", str(out / "model.pt"), "--json").stdout)
    assert model["features"] == FEATURES and model["parameters"] > 0


def test_job_list_shows_a_researchers_own_jobs_only(fed, tmp_path):
    jobs = json.loads(researcher(fed, "job", "list", "--json").stdout)
    assert jobs and {j["study"] for j in jobs} == {"penguins"}
    assert {j["type"] for j in jobs} == {"stats", "train"}
    assert [j["created"] for j in jobs] == sorted((j["created"] for j in jobs), reverse=True)
    done = json.loads(researcher(fed, "job", "list", "--status", "done", "--json").stdout)
    assert done and {j["status"] for j in done} == {"done"}
    table = researcher(fed, "job", "list").stdout
    assert jobs[0]["job"] in table
    # another researcher of the same study sees none of alice's jobs; an operator none
    bob = fed.root / "bob"
    fed.cli("researcher", "init", "--name", "bob", "--dir", str(bob), "--coordinator",
            fed.address)
    fed.enrol("researcher", "bob", bob)
    fed.cli("study", "add-researcher", "penguins", "bob", "--identity",
            str(fed.operator_dir))
    assert json.loads(fed.cli("job", "list", "--json", "--identity", str(bob)).stdout) == []
    refused = fed.cli("job", "list", "--identity", str(fed.operator_dir), check=False)
    assert refused.returncode == 1
    # and once revoked by name, as the README shows, bob is refused outright
    fed.cli("ca", "revoke", "--name", "bob", "--role", "researcher", "--ca-dir",
            str(fed.ca_dir))
    wait_for(lambda: fed.cli("job", "list", "--identity", str(bob),
                             check=False).returncode == 1, 10, "bob to be refused")


def test_study_show_and_create_print_json(fed):
    shown = json.loads(fed.cli("study", "show", "penguins", "--json", "--identity",
                               str(fed.operator_dir)).stdout)
    assert shown["name"] == "penguins" and shown["status"] == "active"
    assert {m["node"] for m in shown["members"]} == set(ISLANDS)
    made = json.loads(fed.cli("study", "create", "later", "--purpose", "p", "--nodes",
                              "node-a,node-b", "--json", "--identity",
                              str(fed.operator_dir)).stdout)
    assert made["name"] == "later" and made["status"] != "active"
