"""The policy engine: one test per cell of the default matrix (governance §2.6), and
overrides that may only tighten."""

from __future__ import annotations

import pytest

from jobs.registry import names
from node.policy import DEFAULTS, decide, effective, load_override
from scifed.errors import UserError
from scifed.grading import VALID_PAIRS

# (grade, category) -> expected outcome for (stats, train) as the matrix reads.
EXPECTED = {
    ("G1", "OPEN"): ("allow", "allow"),
    ("G1", "CONDITIONAL"): ("allow", "allow"),
    ("G1", "CLOSED"): ("approval", "approval"),
    ("G2", "OPEN"): ("allow", "allow"),
    ("G2", "CONDITIONAL"): ("allow", "allow"),
    ("G2", "CLOSED"): ("approval", "approval"),
    ("G3", "CONDITIONAL"): ("allow", "allow"),
    ("G3", "CLOSED"): ("approval", "approval"),
    ("G4", "CONDITIONAL"): ("approval", "approval"),
    ("G4", "CLOSED"): ("approval", "deny"),
    ("G5", "CONDITIONAL"): ("approval", "approval"),
    ("G5", "CLOSED"): ("deny", "deny"),
    ("G6", "CLOSED"): ("deny", "deny"),
}
K = {"G1": {"OPEN": 1, "CONDITIONAL": 3, "CLOSED": 3}, "G2": {"OPEN": 3},
     "G3": {}, "G4": {}, "G5": {}}


def test_matrix_covers_exactly_the_valid_pairs():
    assert set(DEFAULTS) == set(VALID_PAIRS) == set(EXPECTED)


@pytest.mark.parametrize("cell", sorted(EXPECTED), ids=lambda c: f"{c[0]}-{c[1]}")
def test_each_cell_decides_as_the_matrix_says(cell):
    grade, category = cell
    pol = effective(grade, category)
    for job_type, expected in zip(("stats", "train"), EXPECTED[cell], strict=True):
        # where training needs DP-SGD, the access rule is read with an ε under the cap
        eps = 1.0 if job_type == "train" and pol.fl_dp_required and expected != "deny" else None
        dec = decide(pol, job_type=job_type, n_nodes=5, record={}, now_date="2026-06-01",
                     requested_epsilon=eps)
        assert dec.outcome == expected, (cell, job_type, dec)
        if eps is not None:
            plain = decide(pol, job_type=job_type, n_nodes=5, record={},
                           now_date="2026-06-01")
            assert (plain.outcome, plain.rule) == ("deny", "fl_dp_required")
        if expected == "deny":
            assert f"{grade}/{category}" in dec.reason
    # Parameters of the default table.
    k_default = {"G1": 3, "G2": 5}.get(grade, 10)
    assert pol.min_cell_count == K.get(grade, {}).get(category, k_default)
    assert pol.min_nodes == {"G1": 1, "G2": 2}.get(grade, 3)
    assert pol.he_required == (grade >= "G3")
    assert pol.query_auditing == (grade >= "G2")
    assert pol.agg_dp_required == (cell in {("G4", "CONDITIONAL"), ("G5", "CONDITIONAL"),
                                            ("G5", "CLOSED"), ("G6", "CLOSED")})
    if grade in ("G3", "G4", "G5"):
        assert pol.epsilon_per_query == {"G3": 1.0}.get(grade, 0.5)
        assert pol.annual_budget == {"G3": 10.0, "G4": 4.0, "G5": 2.0}[grade]


def test_dp_is_applied_with_the_per_query_cap():
    pol = effective("G4", "CONDITIONAL")
    dec = decide(pol, job_type="stats", n_nodes=3, record={})
    assert dec.dp and dec.epsilon == 0.5 and dec.outcome == "approval"
    too_much = decide(pol, job_type="stats", n_nodes=3, record={}, requested_epsilon=2.0)
    assert too_much.outcome == "deny" and "per-query cap" in too_much.reason


def test_min_nodes_embargo_and_expired_approvals_deny():
    pol = effective("G3", "CONDITIONAL")
    assert decide(pol, job_type="stats", n_nodes=2, record={}).rule == "min_nodes"
    emb = decide(effective("G1", "OPEN"), job_type="stats", n_nodes=1,
                 record={"embargo_until": "2099-01-01"})
    assert emb.outcome == "deny" and "embargo" in emb.reason
    old = decide(pol, job_type="stats", n_nodes=3, now_date="2026-06-01",
                 record={"approvals": [{"type": "ethics", "ref": "E-1", "expires": "2026-01-01"}]})
    assert old.outcome == "deny" and "E-1" in old.reason


def test_override_tightens_and_names_its_source():
    ov = load_override("job_types: {stats: approval, train: forbidden}\nmin_cell_count: 20\n"
                       "dp: {required: true, epsilon_per_query: 0.2, annual_budget: 3}\n", "o.yaml")
    pol = effective("G3", "CONDITIONAL", ov, "override o.yaml")
    assert pol.min_cell_count == 20 and pol.sources["min_cell_count"] == "override o.yaml"
    assert pol.sources["min_nodes"].startswith("default G3/CONDITIONAL")
    assert decide(pol, job_type="stats", n_nodes=3, record={}).outcome == "approval"
    assert decide(pol, job_type="train", n_nodes=3, record={}).outcome == "deny"
    assert {r[0] for r in pol.rows()} >= {f"job type {j}" for j in names()}


@pytest.mark.parametrize("text,needle", [
    ("min_cell_count: 2", "min_cell_count"),
    ("job_types: {stats: automatic}", "job_types.stats"),
    ("dp: {epsilon_per_query: 5}", "dp.epsilon_per_query"),
    ("he_required: false", "he_required"),
    ("min_nodes: 1", "min_nodes"),
])
def test_a_loosening_override_is_refused_with_the_rule_named(text, needle):
    ov = load_override(text, "loose.yaml")
    with pytest.raises(UserError) as exc:
        effective("G3", "CLOSED", ov)
    assert needle in str(exc.value) and "only tighten" in str(exc.value)


@pytest.mark.parametrize("text,needle", [
    ("colour: red", "colour"),
    ("min_cell_count: lots", "min_cell_count"),
    ("job_types: {stats: sometimes}", "job_types.stats"),
    ("dp: {epsilon_per_query: -1}", "dp.epsilon_per_query"),
    ("- a list", "mapping"),
    ("a: [unclosed", "YAML"),
])
def test_bad_override_yaml_gives_one_clear_message(text, needle):
    with pytest.raises(UserError) as exc:
        load_override(text, "bad.yaml")
    assert needle in str(exc.value) and "bad.yaml" in str(exc.value)
