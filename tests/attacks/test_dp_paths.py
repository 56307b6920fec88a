"""Attacks on the DP path and on the quantile rules of ``stats``, through the real pipeline
(in-memory link: real driver, gate, release path, BFV).

Where policy requires DP, what a release reveals must be bounded by ε alone: so the
release may not depend on the data in any way the noise does not cover — labels come
from the declared enumeration, clipping bounds from the metadata, and a refusal from the
column dictionary only. For exact quantiles (G2, k = 5) the rules are the margin
[k/N, 1 − k/N], the cap on probabilities per column, and the rounding to k shared values.
"""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
from staff import DEPARTMENTS, NODES, K, attempt, federation, staff_meta, staff_table, stats

from coordinator.db import Job
from harness.inmemory import InMemoryFederation
from jobs.stats import compute
from jobs.stats.compute import Layout, decode
from jobs.stats.disclosure import MAX_PROBABILITIES
from jobs.stats.spec import StatsSpec
from scifed.errors import UserError

# G2 / CONDITIONAL (k = 5), where the officer's override requires DP for aggregates
DP_POLICY = "dp: {required: true, epsilon_per_query: 1.0, annual_budget: 20}\n"


def dp_federation(root, table, meta) -> InMemoryFederation:
    """Three nodes holding ``table`` (split by its ``node`` column), DP required; the
    study is keyed once all three have accepted. A planted row outside the declared
    enumeration is registered anyway (the officer accepts the violation): the labels
    must still come from the enumeration."""
    fed = InMemoryFederation(root, list(NODES)).__enter__()
    for node in NODES:
        fed.add_dataset(node, table[table.node == node].drop(columns="node"), meta, "staff",
                        accept_violations=True)
        core = fed.nodes[node]
        core.gate.policies.set(core.registry.get("staff").record, DP_POLICY, "dp.yaml",
                               "officer")
    fed.create_study("staff", {n: "staff" for n in NODES}, min_nodes=len(NODES))
    return fed


@pytest.fixture
def staff(tmp_path):
    """The G2 staff federation, keyed once every node has accepted (min_nodes = 3): with
    fewer, a key may be made while the last node's acceptance is still in flight."""
    fed, table = federation(tmp_path, min_nodes=len(NODES))
    fed.table = table
    yield fed
    fed.__exit__(None, None, None)


def details(fed) -> list[str]:
    return [t.detail for t in fed.last_view.tasks if t.detail]


def spent(fed) -> dict[str, float]:
    return {n: sum(s.epsilon for s in core.gate.ledger.spent() if s.researcher is None)
            for n, core in fed.nodes.items()}


# -- 1. under DP, labels come from the enumeration, never from the data -----------------
def test_dp_group_labels_are_the_declared_enumeration_whatever_the_data(tmp_path):
    declared = [*DEPARTMENTS, "astronomy"]  # astronomy: declared, nobody works there
    meta = staff_meta()
    meta["fields"]["department"]["constraints"]["enum"] = declared
    plain = staff_table()
    planted = plain.copy()  # one person at beta in an undeclared department
    planted.loc[planted.index[planted.node == "beta"][3], "department"] = "alchemy"
    released = []
    for i, table in enumerate((plain, planted)):
        fed = dp_federation(tmp_path / f"fed{i}", table, meta)
        try:
            result, refusal = attempt(fed, stats(group_counts=["department"]))
            assert result is not None, (refusal, details(fed))
            assert sorted(result["privacy"]) == sorted(NODES)  # every node added noise
            groups = result["groups"]["department"]
            assert sorted(groups["values"]) == sorted(declared)
            held = dict(zip(groups["values"], groups["counts"], strict=True))
            # the empty label is reported with a noisy count (or withheld as a small one)
            assert held["astronomy"] is None or held["astronomy"] >= 0
            assert "alchemy" not in json.dumps(result) + refusal
            released.append(groups["values"])
            # a column without a declared enumeration: one clear refusal, no label in it
            result, refusal = attempt(fed, stats(group_counts=["title"]))
            assert result is None
            reasons = set(details(fed))
            assert len(reasons) == 1, reasons  # the same reason at every node
            reason, = reasons
            assert "'title'" in reason and "declared enumeration" in reason, reason
            assert not [v for v in table.title.unique() if v in refusal], refusal
        finally:
            fed.__exit__(None, None, None)
    assert released[0] == released[1]  # the planted label changed nothing


# -- 2. the quantile margin alone -----------------------------------------------------------
# 6 people at alpha and 6 at beta (none at gamma): N = 12, just above 2k = 10
SMALL = ("(person_id >= 100001 and person_id <= 100006) or "
         "(person_id >= 100061 and person_id <= 100066)")


def test_quantile_probabilities_outside_the_margin_are_not_answered(staff):
    group = staff.table.query(SMALL)
    n = len(group)
    assert 2 * K < n < 3 * K
    outside = [round((K - 1) / n, 6), round(K / n - 0.005, 6), round(1 - (K - 1) / n, 6),
               round(1 - K / n + 0.005, 6)]
    inside = [math.ceil(K / n * 1e6) / 1e6, 0.5, math.floor((1 - K / n) * 1e6) / 1e6]
    result, refusal = attempt(staff, stats(quantiles={"salary": outside + inside},
                                           filter=SMALL))
    assert result is not None, (refusal, details(staff))
    released = result["quantiles"]["salary"]
    assert set(released) == {str(p) for p in inside}, released
    notes = [x for x in result["suppression"]["notes"] if x.startswith("quantiles of")]
    assert len(notes) == 1, result["suppression"]
    # the note names k and the probabilities asked, never a count of values
    rest = re.sub(r"k=\d+|0 or 1", "", notes[0])
    for p in outside:
        rest = rest.replace(str(p), "")
    assert not re.search(r"\d", rest), notes[0]
    # each released value is shared by at least k of the pooled values, at its resolution
    values = group.salary.to_numpy()
    step = result["quantile_resolution"]["salary"]
    exact = set(np.round(staff.table.salary.to_numpy(), 2))
    for p, q in released.items():
        assert q is not None, p
        assert round(q, 2) not in exact, (p, q)
        shared = int((np.abs(values - q) <= 0.5 * step).sum())
        assert shared >= K, (p, q, step, shared)
        # and it sits between the k-th smallest and k-th largest of the group
        assert np.sort(values)[K - 1] - step / 2 <= q <= np.sort(values)[-K] + step / 2


# -- 3. at most 10 probabilities per column -------------------------------------------------
def test_more_than_ten_probabilities_on_one_column_are_refused_at_submission(staff):
    eleven = [round(0.05 + 0.08 * i, 2) for i in range(MAX_PROBABILITIES + 1)]
    assert len(set(eleven)) == 11 and max(eleven) < 1 - K / len(staff.table)
    with pytest.raises(UserError) as refused:
        staff.submit(stats(quantiles={"salary": eleven}))
    message = str(refused.value)
    assert "salary" in message and f"at most {MAX_PROBABILITIES}" in message, message
    assert message.count(f"at most {MAX_PROBABILITIES}") == 1, message
    with staff.coordinator.db.session() as s:  # nothing was dispatched
        assert s.query(Job).count() == 0
    result, refusal = attempt(staff, stats(quantiles={"salary": eleven[:10]}))
    assert result is not None, (refusal, details(staff))
    assert set(result["quantiles"]["salary"]) == {str(p) for p in eleven[:10]}
    assert all(q is not None for q in result["quantiles"]["salary"].values())


# -- 4. DP clipping bounds come from the metadata, not from the data ---------------------
def test_dp_bounds_come_from_the_metadata_and_clip_a_planted_extreme(tmp_path):
    table = staff_table()
    rng = np.random.default_rng(11)
    table["bonus"] = np.round(rng.uniform(0, 30_000, len(table)), 2)  # no declared bounds
    alpha = table.index[table.node == "alpha"][7]
    table.loc[alpha, "salary"] = 1e9  # one person's salary, far outside [0, 200000]
    meta = staff_meta()
    meta["fields"]["bonus"] = {"description": "Annual bonus.", "unit": "[CNY]"}
    fed = dp_federation(tmp_path, table, meta)
    try:
        before = spent(fed)
        result, refusal = attempt(fed, stats(columns=["bonus"], measures=["mean"]))
        assert result is None
        reasons = set(details(fed))
        assert len(reasons) == 1, reasons
        reason, = reasons
        assert "clipping bounds" in reason and "'bonus'" in reason, reason
        lo, hi = table.bonus.min(), table.bonus.max()
        assert f"{lo}" not in refusal and f"{hi}" not in refusal, refusal
        assert not re.search(r"\d{4,}", refusal), refusal  # no value of the data at all
        assert spent(fed) == before  # a refusal costs no ε

        result, refusal = attempt(fed, stats(columns=["salary"],
                                             measures=["count", "sum", "mean"]))
        assert result is not None, (refusal, details(fed))
        lo, hi = 0.0, 200_000.0  # the declared constraints of salary
        for report in result["privacy"].values():
            assert report["clipping_bounds"] == {"salary": [lo, hi]}
        clipped = table.salary.clip(lo, hi)
        # the pooled noise: the sum of the nodes' Laplace noises at their reported scales
        scales = {b["block"]: [] for b in next(iter(result["privacy"].values()))["blocks"]}
        for report in result["privacy"].values():
            for b in report["blocks"]:
                scales[b["block"]].append(b["scale"])
        sd = {block: math.sqrt(sum(2 * s * s for s in ss)) for block, ss in scales.items()}
        released = result["columns"]["salary"]
        assert abs(released["count"] - len(table)) < 10 * sd["salary: n, missing"]
        assert abs(released["sum"] - clipped.sum()) < 10 * sd["salary: sum"]
        mean = released["mean"]
        assert lo <= mean <= hi, mean
        n_low = len(table) - 10 * sd["salary: n, missing"]
        tolerance = (10 * sd["salary: sum"] + clipped.sum() * 10 * sd["salary: n, missing"]
                     / len(table)) / n_low
        assert abs(mean - clipped.mean()) < tolerance, (mean, clipped.mean(), tolerance)
        # the unclipped mean is far out of reach: the planted value did not get through
        assert abs(table.salary.mean() - clipped.mean()) > 10 * tolerance
    finally:
        fed.__exit__(None, None, None)


# -- 5. a noisy count pushed below zero reads as zero ----------------------------------------
def test_negative_noisy_counts_read_as_zero_in_the_decode():
    spec = StatsSpec(columns=["x"], measures=["count", "mean"], histograms={"x": [0, 1, 2]},
                     group_counts=["g"])
    vocab = {"g": ["a", "b", "c"]}
    layout = Layout.build(spec, vocab)
    total = np.zeros(layout.size)
    total[Layout.ROWS] = 40
    col = layout.columns["x"].start
    total[col:col + 4] = [-3, -2, 100.0, 500.0]  # n and missing below zero
    h = layout.histograms["x"].start
    total[h:h + 5] = [30, -4, -1, 12, -2]  # bins, below, above, missing
    g = layout.groups["g"].start
    total[g:g + 4] = [25, -6, 15, -1]  # a, b, c, missing
    with pytest.raises(ValueError):  # without the DP flag a negative count is corruption
        decode(total, spec, vocab, k=5)
    out = decode(total, spec, vocab, k=5, noisy=True)
    assert out["columns"]["x"]["count"] == 0 and out["columns"]["x"]["missing"] == 0
    assert out["columns"]["x"]["mean"] is None  # n read as 0: no mean
    assert out["histograms"]["x"]["counts"] == [30, 0]
    assert out["histograms"]["x"]["below"] == 0 and out["histograms"]["x"]["above"] == 12
    assert out["histograms"]["x"]["missing"] == 0
    assert out["groups"]["g"]["counts"] == [25, 0, 15] and out["groups"]["g"]["missing"] == 0


def test_negative_noisy_counts_read_as_zero_through_the_pipeline(tmp_path, monkeypatch):
    """Thirty declared departments nobody works in: their pooled noisy counts are
    symmetric around 0, so some go below zero (all thirty stay ≥ 0 with p < 1e-7)."""
    empty = [f"unit {i:02d}" for i in range(30)]
    meta = staff_meta()
    meta["fields"]["department"]["constraints"]["enum"] = [*DEPARTMENTS, *empty]
    pooled: list[np.ndarray] = []
    real = compute.decode

    def spy(total, *args, **kwargs):
        pooled.append(np.array(total, dtype=np.float64))
        return real(total, *args, **kwargs)

    monkeypatch.setattr(compute, "decode", spy)
    fed = dp_federation(tmp_path, staff_table(), meta)
    try:
        result, refusal = attempt(fed, stats(group_counts=["department"]))
        assert result is not None, (refusal, details(fed))
    finally:
        fed.__exit__(None, None, None)
    groups = result["groups"]["department"]
    vocab = {"department": sorted([*DEPARTMENTS, *empty])}
    assert groups["values"] == vocab["department"]
    sl = Layout.build(StatsSpec(group_counts=["department"]), vocab).groups["department"]
    raw, = pooled
    raw = np.round(raw[sl.start:sl.stop - 2])
    negative = [i for i, c in enumerate(raw) if c < 0]
    assert negative, raw  # the attack needs a noisy count below zero
    assert all(c is None or c >= 0 for c in groups["counts"]), groups["counts"]
    assert [groups["counts"][i] for i in negative] == [0] * len(negative)
    assert groups["values"][negative[0]] in empty



# -- 4. under DP, no refusal may depend on the rows: bounds too wide for the encryption ----
def test_bounds_too_wide_for_the_encryption_are_refused_from_the_bounds_alone(tmp_path):
    """Bounds of [1.1e9, 1.1e9 + 1] make every clipped age that constant: the sum of
    squares of one such row passes 2^60, what the encryption carries. Checked on the
    node's own sums, that refusal came exactly where a filter on one person's id found a
    row — membership, outside ε. Decided from the bounds and the catalogued row count,
    it is the same at every node whoever the filter names."""
    fed = dp_federation(tmp_path, staff_table(), staff_meta())
    try:
        table = fed.table = staff_table()
        target = int(table[table.node == "beta"].person_id.iloc[0])
        texts = []
        for pid in (target, 999_999):  # a person at beta, and nobody
            _, refusal = attempt(fed, stats(columns=["age"], filter=f"person_id == {pid}",
                                            dp={"bounds": {"age": [1.1e9, 1.1e9 + 1]}}))
            texts.append(refusal.replace(str(pid), "ID"))
        assert texts[0] == texts[1], texts
        assert "stats.dp.bounds: the clipping bounds are too wide for this dataset" in texts[0]
        assert "cannot encrypt" not in texts[0]
        assert spent(fed) == {n: 0 for n in NODES}
    finally:
        fed.__exit__(None, None, None)
