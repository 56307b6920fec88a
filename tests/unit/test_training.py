"""The pieces of federated training that need no processes: the model zoo and its flat
vector (also under Opacus), the train spec's checks, FedAvg through BFV sums, DP-SGD
accounting carried across rounds, decoding pooled metric sums, and what the coordinator
does before it submits a died run again."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from coordinator.flower import RunState
from jobs.train import local
from jobs.train.models import build_model, model_to_vector, released_model, vector_to_model
from jobs.train.protocol import average, contribution, metrics_history, update_bound
from jobs.train.spec import TrainSpec
from scifed import he
from scifed.errors import UserError
from scifed.he import StudyKey, sum_ciphertexts

BASE = {"features": ["a", "b"], "label": "y", "task": "classification",
        "classes": ["no", "yes"], "model": {"kind": "logistic_regression"}, "rounds": 2}


def spec(**changes) -> TrainSpec:
    return TrainSpec.model_validate({**BASE, **changes})


def data(n: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2)).astype(np.float32)
    return x, (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int64)


@pytest.mark.parametrize("model,n_params", [({"kind": "logistic_regression"}, 4 * 3 + 3),
                                            ({"kind": "linear_regression"}, 4 * 3 + 3),
                                            ({"kind": "mlp", "hidden": [5, 2]},
                                             4 * 5 + 5 + 5 * 2 + 2 + 2 * 3 + 3)])
def test_vector_round_trip(model, n_params):
    net = build_model(model, 4, 3, scaling=([1, 2, 3, 4], [1, 1, 2, 2]))
    vec = model_to_vector(net)
    assert vec.shape == (n_params,)
    other = build_model(model, 4, 3)
    vector_to_model(other, vec)
    np.testing.assert_array_equal(model_to_vector(other), vec)
    with pytest.raises(UserError, match="parameter vector"):
        vector_to_model(other, vec[:-1])


def test_vector_ignores_opacus_wrapping_and_updates_in_place():
    from opacus import PrivacyEngine

    net = build_model({"kind": "mlp", "hidden": [3]}, 2, 2)
    before = model_to_vector(net)
    x, y = data(64)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(
        torch.from_numpy(x), torch.from_numpy(y)), batch_size=16)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    wrapped, opt, _ = PrivacyEngine(accountant="rdp").make_private(
        module=net, optimizer=opt, data_loader=loader, noise_multiplier=1.0, max_grad_norm=1.0)
    assert next(iter(dict(wrapped.named_parameters()))).startswith("_module.")
    np.testing.assert_array_equal(model_to_vector(wrapped), before)
    vector_to_model(wrapped, before + 1)
    np.testing.assert_allclose(model_to_vector(net), before + 1, rtol=1e-6)
    assert opt.original_optimizer.param_groups[0]["params"][0] is next(net.parameters())


def test_released_model_predicts_in_label_units():
    s = spec(task="regression", classes=None, label="y",
             model={"kind": "linear_regression"}, standardize={"a": (10, 2), "y": (100, 5)})
    net = local.initial_model(s)
    info = {"kind": "linear_regression", "hidden": [], "features": ["a", "b"], "label": "y",
            "task": "regression", "classes": None, "standardize": s.standardize}
    again = released_model(info)
    again.load_state_dict(net.state_dict())
    x = torch.tensor([[10.0, 0.0]])
    assert again(x).item() == pytest.approx(net(x).item())
    assert abs(net(x).item() - 100) < 5 * 3  # starts near the label mean, in label units


@pytest.mark.parametrize("changes,needle", [
    ({"classes": None}, "needs `classes`"),
    ({"classes": ["a", "a"]}, "listed twice"),
    ({"task": "regression"}, "`classes` is for task: classification"),
    ({"model": {"kind": "linear_regression"}}, "linear_regression is for task: regression"),
    ({"model": {"kind": "mlp"}}, "hidden layer"),
    ({"model": {"kind": "logistic_regression", "hidden": [3]}}, "has no hidden layers"),
    ({"features": ["a", "y"]}, "also listed as a feature"),
    ({"features": ["a", "a"]}, "duplicate feature"),
    ({"standardize": {"y": (0, 1)}}, "neither features nor a regression label"),
    ({"standardize": {"a": (0, 0)}}, "positive std"),
    ({"rounds": 0}, "rounds"),
    ({"dp": {"epsilon": 0}}, "epsilon"),
])
def test_spec_refusals(changes, needle):
    with pytest.raises(ValidationError, match=needle):
        spec(**changes)


def test_integer_and_boolean_classes_need_no_quotes_and_match_the_node_values():
    """YAML reads `classes: [0, 1, 2]` as integers: they are accepted and kept as text, and
    the node's integer, whole-float and boolean label values find their class."""
    from jobs.train.rows import _labels

    s = spec(classes=[0, 1, 2])
    assert s.classes == ["0", "1", "2"]
    assert TrainSpec.model_validate(s.model_dump()).classes == ["0", "1", "2"]
    got = _labels(np.array([2, 0, 1, 1]), s, "n1", "d")
    assert got.tolist() == [2, 0, 1, 1]
    assert _labels(np.array([2.0, 0.0, 1.0]), s, "n1", "d").tolist() == [2, 0, 1]
    b = spec(classes=[True, False])
    assert b.classes == ["true", "false"]
    assert _labels(np.array([False, True, True]), b, "n1", "d").tolist() == [1, 0, 0]
    with pytest.raises(UserError, match="outside the job's classes"):
        _labels(np.array([0, 3]), s, "n1", "d")
    with pytest.raises(ValidationError, match="valid string"):
        spec(classes=[0.5, 1.5])


def _penguin_table(tmp_path, penguins):
    from node.data import DataFile

    path = tmp_path / "penguins.csv"
    penguins.to_csv(path, index=False)
    fields = [{"name": c, "type": "number" if penguins[c].dtype.kind in "fi" else "string"}
              for c in penguins.columns]
    return DataFile(path), {"fields": fields}


def test_a_derived_label_is_computed_by_the_node_from_its_columns(tmp_path, penguins):
    """`label: "body_mass_g > 4000"` trains a binary classifier: the node computes the
    label per row (ground truth: pandas on the same rows), its columns are referenced
    columns, and its threshold obeys the node's grid as a filter's does."""
    from jobs.base import Limits
    from jobs.train import TrainJob

    s = spec(features=["bill_length_mm", "flipper_length_mm"], label="body_mass_g > 4000",
             classes=None)
    assert s.classes == ["false", "true"] and s.derived_label() == "body_mass_g > 4000"
    assert s.referenced_columns() == ["bill_length_mm", "flipper_length_mm", "body_mass_g"]
    table, record = _penguin_table(tmp_path, penguins)
    with table:
        grant = TrainJob().grant(s, table, Limits("n1", 1, record, grid={}))
        complete = penguins.dropna(subset=s.referenced_columns())
        np.testing.assert_allclose(grant.features,
                                   complete[["bill_length_mm", "flipper_length_mm"]])
        assert grant.labels.tolist() == (complete["body_mass_g"] > 4000).astype(int).tolist()
        assert 0 < grant.labels.sum() < len(grant.labels)
        off_grid = spec(features=["bill_length_mm"], label="body_mass_g > 4010", classes=None)
        with pytest.raises(UserError, match="n1: label: .*4010"):
            TrainJob().grant(off_grid, table, Limits("n1", 1, record, grid={}))
        both = spec(features=["bill_length_mm"], classes=None,
                    label="species == 'Adelie' and island in ['Dream', 'Biscoe']")
        want = (complete.species.eq("Adelie") & complete.island.isin(["Dream", "Biscoe"]))
        got = TrainJob().grant(both, table, Limits("n1", 1, record)).labels
        assert got.sum() == (want & complete.bill_length_mm.notna()).sum() > 0
        unknown = spec(features=["bill_length_mm"], label="mass > 4000", classes=None)
        with pytest.raises(UserError, match="unknown column 'mass'"):
            TrainJob().grant(unknown, table, Limits("n1", 1, record))
    # with the job's filter too: its parameters and the label's stay apart
    from node.data import DataFile
    from scifed.filters import compile_filter

    types = {f["name"]: f["type"] for f in record["fields"]}
    with DataFile(tmp_path / "penguins.csv", compile_filter("year == 2008", types)) as table:
        got = TrainJob().grant(s, table, Limits("n1", 1, record)).labels
    subset = complete[complete.year == 2008]
    assert got.tolist() == (subset["body_mass_g"] > 4000).astype(int).tolist()


@pytest.mark.parametrize("changes,needle", [
    ({"label": "a > 1", "classes": None}, "computed from feature.*a"),
    ({"label": "c > 1", "classes": ["no", "yes"]}, "classes are false and true"),
    ({"label": "c > 1", "task": "regression", "classes": None,
      "model": {"kind": "linear_regression"}}, "needs task: classification"),
])
def test_derived_label_refusals(changes, needle):
    with pytest.raises(ValidationError, match=needle):
        spec(**changes)


def test_a_plain_column_label_is_not_a_condition():
    for label in ("species", "Culmen Length (mm)", "a-b"):
        s = spec(label=label)
        assert s.derived_label() is None and s.label_columns() == [label]
    assert spec(label="c > 1", classes=[True, False]).classes == ["true", "false"]


def test_a_derived_label_is_checked_with_the_filter_before_the_nodes_are_asked():
    """The coordinator compiles every filter-language field of a job against the catalog's
    columns before it starts; a derived label is one, under its own field name."""
    from jobs.spec import parse_job_dict

    job = parse_job_dict({"study": "s", "type": "train", "datasets": {"n1": "d"},
                          "filter": "year == 2008",
                          "train": {**BASE, "label": "body_mass_g > 4000", "classes": None}})
    assert job.conditions() == {"filter": "year == 2008", "train.label": "body_mass_g > 4000"}
    assert job.to_dict()["train"]["classes"] == ["false", "true"]
    assert parse_job_dict(job.to_dict()).params == job.params
    plain = parse_job_dict({"study": "s", "type": "train", "datasets": {"n1": "d"},
                            "train": BASE})
    assert plain.conditions() == {}


def test_fedavg_through_encrypted_sums_is_the_weighted_mean():
    key = StudyKey.generate()
    thetas = [np.array([0.5, -2.0, 3.25]), np.array([1.5, 0.0, -1.0])]
    ns = [30, 10]
    blobs = [key.encrypt(np.append(n * t, n)) for t, n in zip(thetas, ns, strict=True)]
    pooled = average(key.decrypt(sum_ciphertexts(key.public_bytes(), blobs)))
    np.testing.assert_allclose(pooled, (30 * thetas[0] + 10 * thetas[1]) / 40, atol=1e-7)


def test_later_rounds_average_like_fedavg_at_four_bytes_per_parameter():
    """Round 1 is exact; a later round's quantised ``[w theta, w]`` (w = n / the previous
    round's pooled rows) decrypts to numpy's FedAvg of the same updates within 2e-4, at
    about 3.76 B per parameter on the wire (60-bit words)."""
    key = StudyKey.generate()
    rng = np.random.default_rng(14)
    nodes, params = 10, 3 * 2 * he.SLOTS - 1  # with w: three full chunks of two lanes
    ns = rng.integers(40, 600, nodes)
    start = rng.uniform(-0.45, 0.45, params)   # the round's start model (bound 1)
    thetas = [start + rng.normal(0, 0.02, params) for _ in range(nodes)]  # after training
    fedavg = np.average(np.stack(thetas), axis=0, weights=ns)

    first = [contribution(key, t, int(n))[0] for t, n in zip(thetas, ns, strict=True)]
    assert he.parse(first[0]).encoding == he.EXACT
    np.testing.assert_allclose(average(key.decrypt(sum_ciphertexts(key.public_bytes(), first))),
                               fedavg, rtol=0, atol=1e-7)

    blobs, clipped = zip(*(contribution(key, t, int(n), pooled=float(ns.sum()), theta_start=start,
                                        capacity=nodes, rng=rng)
                           for t, n in zip(thetas, ns, strict=True)), strict=True)
    frame = he.parse(blobs[0])
    assert (frame.encoding, frame.lanes, frame.bound) == (he.QUANTISED, 2, 1.0)
    assert sum(clipped) == 0
    assert 3.75 <= len(blobs[0]) / params <= 3.78  # the exact round: 30 B per value
    assert len(first[0]) / params > 30
    pooled = average(key.decrypt(sum_ciphertexts(key.public_bytes(), list(blobs))))
    assert np.max(np.abs(pooled - fedavg)) <= 2e-4


def test_a_quantised_update_clips_to_twice_the_start_model_and_counts():
    key = StudyKey.generate()
    start = np.array([0.75, -3.0, 0.1])
    assert update_bound(start) == 8.0 and update_bound(np.zeros(3)) == 1.0
    theta = np.array([0.5, -20.0, 9.0])  # n / pooled = 1: w theta = theta
    blob, clipped = contribution(key, theta, 50, pooled=50.0, theta_start=start, capacity=3)
    assert clipped == 2
    np.testing.assert_allclose(key.decrypt(blob), [0.5, -8.0, 8.0, 1.0], atol=2 * 16 / 2**16)
    with pytest.raises(UserError, match="pooled 40 rows"):
        contribution(key, theta, 50, pooled=40.0, theta_start=start, capacity=3)


def test_dp_accounting_continues_across_rounds():
    s = spec(rounds=3, local_epochs=2, batch_size=20, dp={"epsilon": 4.0})
    d = local.split(*data(), s, "n1")
    history: list = []
    spent = []
    for r in (1, 2, 3):  # one fresh model per round, as in a fresh ClientApp process
        res = local.train(local.initial_model(s), d, s, round_no=r, node="n1", dp=s.dp,
                          history=history)
        history = res.history
        spent.append(res.epsilon)
    assert spent[0] < spent[1] < spent[2] <= 4.0
    assert spent[2] > 3.5  # calibrated for the whole job, so the last round nearly uses it
    steps = sum(k for _, _, k in history)
    assert steps == 3 * 2 * 8  # rounds x epochs x ceil(160 / 20)


def test_split_is_stable_and_training_learns():
    s = spec(local_epochs=5, lr=0.5)
    x, y = data()
    a, b = local.split(x, y, s, "n1"), local.split(x, y, s, "n1")
    assert torch.equal(a.x_val, b.x_val) and len(a.y_val) == 40
    net = local.initial_model(s)
    before = local.evaluate(net, a.x_val, a.y_val, "classification")
    local.train(net, a, s, round_no=1, node="n1")
    after = local.evaluate(net, a.x_val, a.y_val, "classification")
    assert after[2] / after[0] > max(0.9, before[2] / before[0])


def test_metrics_history_decodes_pooled_sums():
    # round r's sums carry validation of the model after r-1 and training loss of r.
    sums = {1: np.array([10, 5.0, 6, 0, 0, 0, 40, 20.0]),
            2: np.array([10, 2.0, 9, 0, 0, 0, 40, 8.0])}
    final = np.array([10, 1.0, 10, 0, 0, 0, 0, 0])
    h = metrics_history("classification", sums, final, 2)
    assert h[0] == {"round": 0, "val_rows": 10.0, "val_loss": 0.5, "val_accuracy": 0.6}
    assert h[1]["train_loss"] == 0.5 and h[1]["val_accuracy"] == 0.9
    assert h[2] == {"round": 2, "train_loss": 0.2, "val_rows": 10.0, "val_loss": 0.1,
                    "val_accuracy": 1.0}
    y = np.array([1.0, 2.0, 3.0, 4.0])
    reg = np.array([4, 0.5, 0, 0.5, y.sum(), (y ** 2).sum(), 0, 0])
    (r0,) = metrics_history("regression", {}, reg, 0)
    assert r0["val_r2"] == pytest.approx(1 - 0.5 / 5.0)


def test_a_train_result_heads_with_rounds_and_final_validation():
    """`scifed job result` of a train job leads with what was trained, for how many
    rounds, and the released model's validation (from the metrics history, the model
    after the last round), not a stats-style row count."""
    from jobs.train.view import TrainResult

    sums = {1: np.array([10, 5.0, 6, 0, 0, 0, 40, 20.0]),
            2: np.array([10, 2.0, 9, 0, 0, 0, 40, 8.0])}
    final = np.array([10, 1.0, 10, 0, 0, 0, 0, 0])
    raw = {"type": "train", "metrics": metrics_history("classification", sums, final, 2),
           "epsilon": {"n1": 0.5}, "meta": {"contributors": ["n1", "n2"]},
           "model": {"kind": "mlp", "task": "classification", "features": ["a", "b"],
                     "label": "species"}}
    line = TrainResult.from_json(raw).headline()
    assert line.startswith("train: 2 round(s) of a mlp (classification) on 2 feature(s) "
                           "predicting species")
    assert "final validation (after round 2 on 10 rows): val_loss 0.1000, " \
        "val_accuracy 1.0000" in line
    assert "contributors: n1, n2" in line and "ε spent: n1 0.5" in line
    raw["metrics"] = metrics_history("classification", sums, None, 2)  # no final evaluation
    assert "(after round 1 on 10 rows): val_loss 0.2000, val_accuracy 0.9000" in \
        TrainResult.from_json(raw).headline()


def test_the_released_model_is_the_best_validated_round_and_says_so():
    """Round 1's model validated better than round 2's (which overfit): the release node
    releases round 1's, names it in `model.round` and the headline, and still reports
    every round's metrics. Without validation it releases the last round's."""
    from jobs.base import Pooled
    from jobs.train.release import release
    from jobs.train.view import TrainResult

    s = spec()
    n = len(model_to_vector(local.initial_model(s)))
    theta = {1: np.arange(n, dtype=float), 2: -np.arange(n, dtype=float)}
    totals = {"model.1": np.append(40 * theta[1], 40), "model.2": np.append(4 * theta[2], 4),
              "metrics.1": np.array([10, 7.0, 5, 0, 0, 0, 40, 28.0]),
              "metrics.2": np.array([10, 2.0, 9, 0, 0, 0, 40, 8.0]),
              "final_metrics": np.array([10, 3.0, 8, 0, 0, 0, 0, 0])}
    extra = {"rounds_done": 2, "epsilon": {}, "dropped": {}, "contributors_by_round": {}}
    out = release(s, Pooled(totals, {}, 0, {}, ["n1"], extra=extra)).result
    assert out["model"]["round"] == 1 and out["model"]["selected_by"] == "lowest val_loss"
    got = TrainResult.from_json({**out, "meta": {"contributors": ["n1"]}})
    np.testing.assert_allclose(model_to_vector(got.model()), theta[1])
    assert [m["round"] for m in out["metrics"]] == [0, 1, 2]
    line = got.headline()
    assert "final validation (after round 2 on 10 rows): val_loss 0.3000" in line
    assert "released model: after round 1 (lowest val_loss: val_loss 0.2000, " \
        "val_accuracy 0.9000)" in line
    blind = {k: (v if not k.startswith(("metrics", "final")) else v * [0, 0, 0, 0, 0, 0, 1, 1])
             for k, v in totals.items()}
    out = release(s, Pooled(blind, {}, 0, {}, ["n1"], extra=extra)).result
    assert out["model"]["round"] == 2 and out["model"]["selected_by"] == "last round"
    np.testing.assert_allclose(model_to_vector(TrainResult.from_json(out).model()), theta[2])


def test_job_watch_gets_the_final_evaluation_as_the_last_rounds_validation(tmp_path):
    """The final evaluation (the model after the last round) is published live like a
    round, numbered last + 1, and decodes to the validation of the last round: `job
    watch` merges it into that round's line instead of leaving it blank."""
    from jobs.base import Pooled
    from jobs.train.coordinate import _publish_round_metrics
    from jobs.train.release import release
    from scifed.tasks import TaskHeader

    final = np.array([10, 1.0, 10, 0, 0, 0, 0, 0])
    sums = {1: np.array([10, 5.0, 6, 0, 0, 0, 40, 20.0]),
            2: np.array([10, 2.0, 9, 0, 0, 0, 40, 8.0])}
    for name, blob in [("ledger-r1.json", b"r1"), ("ledger-r2.json", b"r2"),
                       ("ledger-final.json", b"fin")]:
        (tmp_path / name).write_bytes(blob)
    sent: list[tuple[int, bytes]] = []
    header = TaskHeader(job_id="j", study_id="s", key_version=1, job_type="train",
                        n_nodes=1, dataset="d", spec={})

    class Driver:
        def header(self, run, node):
            return header

        def send(self, node, kind, request, reply):
            # the rounds up to the one published, whose attestations the node checks
            sent.append((request.round, request.rounds))
            return SimpleNamespace(sealed=b"sealed")

        def progress(self, run, r, sealed):
            pass

    checkpoint = {"round": 2, "active": ["n1"], "final_metrics_file": None,
                  "metrics_files": {"1": "metrics-r1.ct", "2": "metrics-r2.ct"},
                  "ledger_files": {"1": "ledger-r1.json", "2": "ledger-r2.json"}}
    published: set[int] = set()
    _publish_round_metrics(Driver(), None, tmp_path, checkpoint, "n1", published)
    checkpoint["final_metrics_file"] = "metrics-final.ct"
    checkpoint["ledger_files"]["final"] = "ledger-final.json"
    _publish_round_metrics(Driver(), None, tmp_path, checkpoint, "n1", published)
    assert sent == [(1, {"1": b"r1"}), (2, {"1": b"r1", "2": b"r2"}),
                    (3, {"1": b"r1", "2": b"r2", "final": b"fin"})]
    live: dict[int, dict] = {}  # merged as the researcher's client does
    for r, totals in [(1, sums[1]), (2, sums[2]), (3, final)]:
        out = release(spec(), Pooled({"metrics": totals}, {}, 0, {}, ["n1"],
                                     stage="progress", round=r)).result
        for entry in out["metrics"]:
            live.setdefault(entry["round"], {}).update(entry)
    assert sorted(live) == [0, 1, 2]
    assert live[2] == {"round": 2, "train_loss": 0.2, "val_rows": 10.0, "val_loss": 0.1,
                       "val_accuracy": 1.0}
    assert live[2] == metrics_history("classification", sums, final, 2)[2]


def test_a_regression_learning_curve_plots_r2_on_its_own_fitted_axis():
    """An MSE in label units and an R² <= 1 on one axis flattened R² to a line at zero:
    R² has its own axis, fitted to the rounds' values (an initial model's R² far below
    -1 is cut off, and said so), and the losses keep theirs."""
    from jobs.train.view import TrainResult

    metrics = [{"round": 0, "val_loss": 90000.0, "val_r2": -40.0},
               {"round": 1, "train_loss": 9000.0, "val_loss": 1500.0, "val_r2": 0.61},
               {"round": 2, "train_loss": 1400.0, "val_loss": 1200.0, "val_r2": 0.69},
               {"round": 3, "train_loss": 1100.0, "val_loss": 1100.0, "val_r2": 0.72}]
    result = TrainResult.from_json({"metrics": metrics, "model": {"task": "regression"}})
    fig = result.learning_curve()
    loss_ax, score_ax = fig.axes
    (r2,) = score_ax.get_lines()
    assert r2.get_label() == "val_r2" and list(r2.get_ydata()) == [-40.0, 0.61, 0.69, 0.72]
    low, high = score_ax.get_ylim()
    assert -1.3 < low < -1.0 and 0.72 < high < 0.9 and "not shown" in score_ax.get_ylabel()
    assert {ln.get_label() for ln in loss_ax.get_lines()} == {"train_loss", "val_loss"}
    assert loss_ax.get_yscale() == "log"  # 1100 .. 90000
    later = TrainResult.from_json({"metrics": metrics[1:], "model": {}}).learning_curve()
    low, high = later.axes[1].get_ylim()
    assert 0.55 < low < 0.61 and 0.72 < high < 0.76  # fitted, not flattened at 0
    assert later.axes[0].get_yscale() == "linear"
    assert result.plot()[:4] == b"\x89PNG"
    import matplotlib.pyplot as plt

    plt.close("all")


class _DyingLink:
    """A SuperLink whose first run dies without a reason (as when the SuperLink crashes
    under it) and whose second completes; it records what the coordinator did, in order."""

    def __init__(self, job_dir, events: list) -> None:
        self.job_dir, self.events, self.runs = job_dir, events, 0

    def start_run(self, run_config, app_dir) -> int:
        self.runs += 1
        self.events.append(("start_run", self.runs))
        checkpoint = {"round": self.runs, "active": ["a", "b"], "complete": self.runs == 2}
        (self.job_dir / "checkpoint.json").write_text(json.dumps(checkpoint))
        return self.runs

    def run_state(self, run_id):
        return RunState(run_id, "finished", "completed" if run_id == 2 else "failed",
                        "", 0, 0)

    def log_tail(self, run_id, lines=40) -> str:
        return "the SuperLink went away"

    def wait_online(self, names, timeout, *, activated_after=None):
        self.events.append(("wait_online", sorted(names), activated_after is not None))
        return set(names)


class _Driver:
    task_timeout = 5.0

    def __init__(self, flower, events: list, connected: list[str]) -> None:
        self.flower, self.events, self._connected = flower, events, connected

    def connected(self) -> list[str]:
        return self._connected

    def send(self, node, kind, payload, reply):
        self.events.append(("reset", node))
        return reply()


def test_a_run_that_died_is_resubmitted_only_after_fresh_supernodes(tmp_path):
    """After a SuperLink crash, each connected node's SuperNode is restarted and seen
    connected afresh before the run is submitted again (a SuperNode still holding the
    dead run's message would answer the new run under the old id, and never be heard)."""
    from jobs.train.coordinate import _fresh_supernodes, train_on_flower

    (tmp_path / "run.json").write_text(json.dumps({"spec": {"rounds": 2,
                                                           "round_timeout": 5}}))
    events: list = []
    link = _DyingLink(tmp_path, events)
    driver = _Driver(link, events, connected=["a", "c"])  # b is offline
    run = SimpleNamespace(job_id="job-1")
    checkpoint = train_on_flower(
        link, tmp_path,
        before_resubmit=lambda ck: _fresh_supernodes(driver, run, ck["active"]))
    assert checkpoint["complete"]
    assert events == [("start_run", 1), ("reset", "a"), ("wait_online", ["a"], True),
                      ("start_run", 2)]
