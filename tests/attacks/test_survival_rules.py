"""Attacks on the `survival` type's disclosure rules, through the real pipeline (in-memory
link: real driver, gate, release path, BFV).

A ward's patients (synthetic: 60 per node at three nodes) with their age, ward, days of
follow-up and whether they died. One patient is the only 77-year-old and the only one in
the intensive care unit; the attacker knows that much and wants the day and outcome.

* At G1 / CONDITIONAL (k = 3, no query auditing) the type's own rules are the only
  defence: a filter leaving one patient, a group holding one patient, a declared bin
  holding one event, and the at-risk counts differenced to date one censoring.
* At G2 / CONDITIONAL (k = 5, query auditing) the node's auditor stops the difference of
  two releases that differ by that patient: two filters, or two grids whose bins
  differ by the patient's day (``row_sets``: every (group, bin, status) cell).

* The Cox model: a categorical level held by the patient alone (the fit's existence
  gives the outcome away), and two fits differing by a few patients, whose non-linear
  sums the auditor holds to atoms of 3·k rows.

Against the naive type (declared bins released as they are, a node with one row
contributing, no level rule, the Cox fit audited as linear) each attack reads the
patient's bin and outcome; here each one fails.
"""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import yaml
from staff import REPO
from staff import attempt as run

from harness.inmemory import InMemoryFederation

NODES = ("alpha", "beta", "gamma")
ROWS = 60
WARDS = ["A", "B", "C", "ICU"]
TARGET = {"age": 77, "ward": "ICU", "days": 505, "died": 1}


def patients(seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = ROWS * len(NODES)
    table = pd.DataFrame({
        "patient_id": np.arange(5001, 5001 + n),
        "age": rng.integers(30, 77, n),            # 30..76: nobody else is 77
        "ward": rng.choice(WARDS[:3], n),
        "days": rng.choice(np.r_[1:501, 511:1000], n),  # nobody else in (500, 510]
        "died": (rng.random(n) < 0.6).astype(int),
        "node": np.repeat(NODES, ROWS),
    })
    for col, value in TARGET.items():
        table.loc[7, col] = value                  # at alpha
    return table


def meta(grade: str, category: str) -> dict:
    m = copy.deepcopy(yaml.safe_load((REPO / "configs" / "datasets" /
                                      "penguins.yaml").read_text()))
    m.update({
        "title": {"en": "Ward patients"},
        "description": {"en": "Follow-up and outcome of a ward's patients."},
        "security_grade": grade, "sharing_category": category,
        "personal_info": {"status": "anonymized", "sensitive": False, "categories": []},
        "conditions_of_use": [{"code": "no_reidentification",
                               "text": "Aggregate analyses inside approved studies only."}],
        "targets": [], "splits": None, "annotation": None,
        "fields": {
            "patient_id": {"description": "Pseudonymous patient number.", "role": "id",
                           "pi_kind": "quasi_identifier", "resolution": 1},
            "age": {"description": "Age in years.", "unit": "a", "resolution": 1,
                    "constraints": {"minimum": 18, "maximum": 100}},
            "ward": {"description": "Ward.", "constraints": {"enum": WARDS}},
            "days": {"description": "Days from admission to death or last contact.",
                     "unit": "d", "resolution": 1,
                     "constraints": {"minimum": 0, "maximum": 1000}},
            "died": {"description": "1: died, 0: alive at last contact.",
                     "constraints": {"enum": [0, 1]}},
        },
    })
    return {k: v for k, v in m.items() if v is not None}


def federation(root, grade: str) -> tuple[InMemoryFederation, pd.DataFrame]:
    df = patients()
    fed = InMemoryFederation(root, list(NODES)).__enter__()
    for node in NODES:
        fed.add_dataset(node, df[df.node == node].drop(columns="node"),
                        meta(grade, "CONDITIONAL"), "ward")
    fed.create_study("ward", {n: "ward" for n in NODES}, min_nodes=2)
    return fed, df


def entered(root, grade: str):
    """A fresh federation per attack (the auditor's memory and the refusal alerts must
    not leak between attacks), exited after it."""
    fed, df = federation(root, grade)
    fed.table = df
    try:
        yield fed
    finally:
        fed.__exit__(None, None, None)


@pytest.fixture
def g1(tmp_path):
    yield from entered(tmp_path, "G1")


@pytest.fixture
def g2(tmp_path):
    yield from entered(tmp_path, "G2")


def survival(filter: str | None = None, **spec) -> str:
    job = {"study": "ward", "type": "survival", "datasets": {n: "ward" for n in NODES},
           "survival": {"time": "days", "event": "died", **spec}}
    if filter:
        job["filter"] = filter
    return yaml.safe_dump(job, sort_keys=False)


TEN_DAYS = list(range(0, 1001, 10))


def attempt(fed: InMemoryFederation, spec_yaml: str) -> tuple[dict | None, str]:
    """(the released result or None, every refusal text: the job's and each node's)."""
    result, why = run(fed, spec_yaml)
    view = getattr(fed, "last_view", None)
    details = [t.detail for t in view.tasks if t.detail] if view is not None else []
    return result, " | ".join([why, *details])


def spent(fed: InMemoryFederation) -> list:
    return [s for core in fed.nodes.values() for s in core.gate.ledger.spent()]


def target_bin(result: dict) -> float:
    """The released time (right edge) of the bin the target's day falls in."""
    right = np.asarray(result["model"]["edges"][1:])
    return float(right[np.searchsorted(right, TARGET["days"])])


def assert_no_count_below_k(text: str, k: int) -> None:
    """A refusal names k, never a count below it."""
    for n in range(1, k):
        for form in (f"{n} row", f"{n} event", f"{n} censor", f"n={n}", f"({n})"):
            assert form not in text, text


def test_a_filter_that_leaves_one_patient_reads_nothing(g1):
    """Naive: alpha's one row is the whole curve (1 at risk, 1 event in (500, 510]).
    Here alpha refuses, saying only that it holds fewer than k rows, and the others'
    empty selections release nothing."""
    result, why = attempt(g1, survival(filter="age == 77", bins=TEN_DAYS))
    assert result is None, result["curves"]
    assert "node alpha: survival: fewer than k=3 complete rows here" in why, why
    assert_no_count_below_k(why, 3)
    assert "505" not in why and "510" not in why
    assert spent(g1) == []


def test_a_group_that_holds_one_patient_reads_nothing(g1):
    """Naive: the ICU curve is one patient: 1 at risk, 1 event at 510. Here no merge of
    the bins gives the ICU group 0 or at least k events, so the release refuses, naming
    no group."""
    result, why = attempt(g1, survival(groups="ward", bins=TEN_DAYS))
    assert result is None, [c for c in result["curves"] if c["group"] == "ICU"]
    assert "no merge of the declared bins meets the disclosure rules" in why, why
    assert "ICU" not in why
    assert_no_count_below_k(why, 3)


def test_no_released_bin_dates_one_event_or_one_censoring(g1):
    """Naive: of 100 ten-day bins many hold one death (a step of one patient) or one
    censoring (two adjacent at-risk counts less the step). Here every released bin holds
    0 or at least k of each, per group, so no step and no drop of the at-risk count is
    one patient's; the target's bin holds at least k deaths."""
    df = g1.table
    declared = np.searchsorted(TEN_DAYS[1:], df.days)
    singles = pd.crosstab(declared, df.died)
    assert ((singles == 1).sum() > 0).all()  # the naive grid would date single patients
    result, why = attempt(g1, survival(groups="ward", bins=TEN_DAYS,
                                       filter="ward != 'ICU'"))
    assert result is not None, why
    k = result["meta"]["k"]
    assert k == 3
    for curve in result["curves"]:
        events, censored = np.array(curve["events"]), np.array(curve["censored"])
        at_risk = np.array(curve["at_risk"])
        assert np.all((events == 0) | (events >= k)), curve
        assert np.all((censored == 0) | (censored >= k)), curve
        drops = at_risk[:-1] - at_risk[1:] - events[:-1]  # the censored, by differencing
        assert np.all((drops == 0) | (drops >= k)), curve
    overall = result["curves"][0]
    i = overall["time"].index(target_bin(result))
    assert overall["events"][i] >= k


def test_two_releases_that_differ_by_one_patient_are_stopped_by_the_auditor(g2):
    """Naive (or without row sets): ward B, then ward B or the 77-year-old; the second
    curve less the first is the patient. At G2 the node's auditor holds every (bin,
    status) cell of the first release and refuses the second: it would isolate a row."""
    df = g2.table
    b = df[(df.ward == "B") & (df.node == "alpha")]
    assert b.died.sum() >= 5 and (1 - b.died).sum() >= 5  # the first is admissible
    first, why = attempt(g2, survival(filter="ward == 'B'", bins=[0, 1000]))
    assert first is not None, why
    second, why = attempt(g2, survival(filter="ward == 'B' or age == 77", bins=[0, 1000]))
    assert second is None, second["curves"]
    assert "node alpha refused the query" in why and "query auditing" in why, why
    assert_no_count_below_k(why, 5)


def test_two_grids_whose_bins_differ_by_one_patient_are_stopped_by_the_auditor(g2):
    """The same rows twice, binned at 500 and at 510 days: only the target lies in
    (500, 510], so the second first bin less the first is the target's outcome. Without
    the cells as row sets the auditor sees one selection twice and lets both pass; with
    them it holds (0, 500] × status from the first and refuses the second."""
    df = g2.table
    assert ((df.days > 500) & (df.days <= 510)).sum() == 1
    first, why = attempt(g2, survival(bins=[0, 500, 1000]))
    assert first is not None, why
    second, why = attempt(g2, survival(bins=[0, 510, 1000]))
    assert second is None, (first["curves"][0]["events"], second["curves"][0]["events"])
    assert "node alpha refused the query" in why and "query auditing" in why, why
    assert_no_count_below_k(why, 5)


def test_an_edge_off_the_time_grid_is_refused_before_any_row_is_read(g2):
    """An edge splits rows as `days <= edge` does: bisecting free edges on the auditor's
    refusals would locate one patient's day, so at G2 each edge lies on the column's
    declared resolution (1 day), as a filter threshold must."""
    result, why = attempt(g2, survival(bins=[0, 504.5, 1000]))
    assert result is None
    assert "days bin edge 504.5 is not on the column's grid" in why, why
    assert "use 504 or 505" in why, why
    assert spent(g2) == []


# -- the Cox model ---------------------------------------------------------------------------
def test_a_covariate_level_held_by_one_patient_is_refused_without_naming_it(g1, monkeypatch):
    """A Cox model with C(ward): the ICU dummy is the target alone. Its score equation is
    Σ_events x_ICU = Σ_j d_j·(ICU share of the risk set), so the ICU coefficient is finite
    exactly when the target died (had they been censored the fit would have no maximum).
    Naive (no level rule at the node): the fit is released with a C(ward)[T.ICU] term, and
    that it exists says the target died. Here alpha refuses before any level leaves it,
    naming neither the level nor how many hold it."""
    import jobs.survival as survival_type

    spec = survival(cox=["age", "C(ward)"], bins=[0, 1000])
    with monkeypatch.context() as naive:
        naive.setattr(survival_type.regression_rules, "check_node", lambda *a, **k: None)
        leaked, why = attempt(g1, spec)
    assert leaked is not None, why
    assert "C(ward)[T.ICU]" in [c["term"] for c in leaked["cox"]["coefficients"]]
    result, why = attempt(g1, spec)
    assert result is None, result["cox"]
    assert "node alpha: survival: a level of C(ward) is held by fewer than k=3 rows" in why, why
    assert "ICU" not in why
    assert_no_count_below_k(why, 3)


def _older_than(df: pd.DataFrame, age: int) -> pd.DataFrame:
    """Per node, the deaths and censorings among patients of ``age`` and older."""
    old = df[df.age >= age]
    return pd.DataFrame({"died": old.groupby("node").died.sum(),
                         "censored": (1 - old.died).groupby(old.node).sum()})


def _cox_pair(fed: InMemoryFederation) -> tuple[tuple[dict | None, str], tuple[dict | None, str]]:
    """Two Cox fits whose selections differ by the patients aged 63 and over."""
    first = attempt(fed, survival(cox=["age"], bins=[0, 1000]))
    second = attempt(fed, survival(filter="age < 63", cox=["age"], bins=[0, 1000]))
    return first, second


def test_two_cox_fits_differing_by_a_few_patients_pass_the_naive_auditor(g2, monkeypatch):
    """The patients aged 63 and over hold, at each node, at least 5 deaths and 5
    censorings, and fewer than 15 of each at some node: a difference of linear counts
    over them mixes at least k = 5 people, so the linear auditor lets two curves that
    differ by them pass. Two Cox fits differ in
    sums of exp(β·age) over the same people, a non-linear equation per coefficient and
    round: with the likelihood and the score of both fits that is several equations in
    a few unknown ages and outcomes. Naive (the type not flagged non-linear): both fits
    are released."""
    import jobs.survival as survival_type

    old = _older_than(g2.table, 63)
    assert (old >= 5).all().all() and (old < 15).all(axis=1).any(), old
    monkeypatch.setattr(survival_type.SurvivalJob, "nonlinear", lambda self, params: False)
    (first, why1), (second, why2) = _cox_pair(g2)
    assert first is not None and second is not None, (why1, why2)


def test_two_cox_fits_differing_by_a_few_patients_are_stopped_by_the_non_linear_auditor(g2):
    """The same pair, defended: the Cox fit is a non-linear release, so its row sets also
    go to the auditor's non-linear partition, whose atoms must hold 3·k = 15 rows; the
    second fit would leave atoms of fewer and is refused."""
    (first, why1), (second, why2) = _cox_pair(g2)
    assert first is not None, why1
    assert second is None, second["cox"]
    assert "refused the query" in why2 and "3·k: its fit statistics are non-linear" in why2, \
        why2
    assert_no_count_below_k(why2, 5)


def test_the_same_pair_of_curves_alone_passes_the_linear_auditor(g2):
    """The control: without a Cox model the two releases are linear counts, each
    difference over at least k people, and both are released."""
    first, why = attempt(g2, survival(bins=[0, 1000]))
    assert first is not None, why
    second, why = attempt(g2, survival(filter="age < 63", bins=[0, 1000]))
    assert second is not None, why
