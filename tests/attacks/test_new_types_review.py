"""A researcher (and, for psi, a deviating coordinator) attacking the new job types
``pca``, ``crosstab``, ``survival`` and ``psi`` through the real pipeline (in-memory
federation: real driver, gate, auditor, release path, BFV, OpenDP) at G2 / CONDITIONAL
(k = 5, query auditing). Each test asserts that the attack FAILS; a test that fails is a
finding (see the review report)."""

from __future__ import annotations

import pytest
import yaml
from staff import NODES, attempt, staff_meta, staff_table

from harness.inmemory import InMemoryFederation

# -- psi ---------------------------------------------------------------------------------
# alpha holds persons 0-99, beta 40-139, gamma 60-179, delta 60-179 but one (75);
# 60-99 are held by alpha, beta and gamma
HELD = {"alpha": range(0, 100), "beta": range(40, 140), "gamma": range(60, 180),
        "delta": [i for i in range(60, 180) if i != 75]}
THREE = ("alpha", "beta", "gamma")
MEMBER, OUTSIDER = 100_071, 100_011   # at alpha, beta and gamma / at alpha only
MISSING = 100_076                     # at alpha, beta and gamma, not at delta


def psi(study: str, nodes=THREE, filter: str | None = None, **spec) -> str:
    job = {"study": study, "type": "psi", "datasets": {n: study for n in nodes},
           "psi": {"on": "person_id", **spec}}
    if filter:
        job["filter"] = filter
    return yaml.safe_dump(job, sort_keys=False)


@pytest.fixture
def overlap(tmp_path):
    """Staff at four G2 / CONDITIONAL platforms whose staff overlap (HELD)."""
    df = staff_table().drop(columns="node")
    fed = InMemoryFederation(tmp_path, list(HELD)).__enter__()
    for node, rows in HELD.items():
        fed.add_dataset(node, df.iloc[list(rows)], staff_meta(), "staff")
    fed.create_study("staff", {n: "staff" for n in HELD}, min_nodes=2)
    # the same staff at alpha, beta and gamma, but beta's record of MEMBER names another
    # department (chemistry at alpha and gamma, physics at beta): records of one person
    # that differ between platforms, as they do
    for node in THREE:
        rows = df.iloc[list(HELD[node])].copy()
        if node == "beta":
            rows.loc[rows.person_id == MEMBER, "department"] = "physics"
        fed.add_dataset(node, rows, staff_meta(), "moved")
    fed.create_study("moved", {n: "moved" for n in THREE}, min_nodes=2)
    fed.df = df
    yield fed
    fed.__exit__(None, None, None)


def size(fed, spec: str) -> int | None:
    """The released intersection size, or None where every node refused exact psi
    because it audits exact queries (the defence: node/../jobs/psi/disclosure.py)."""
    result, why = attempt(fed, spec)
    if result is None:
        assert "psi: this node audits exact queries" in why, why
        return None
    return result["intersection"]


def test_psi_membership_of_one_person_is_not_read_through_a_chosen_epsilon(overlap):
    """The researcher asks for DP (psi ``wants_dp``: any node noises the count at the
    job's ε, up to MAX_EPSILON = 10) on a G2 cell whose policy sets no per-query cap
    and no budget. Under DP the node reads the selection as it is (no "under k is
    empty"), the node's k rule and the query auditor are skipped, and the release node
    releases the noisy count of any size: a filter on one person's id gives
    1 + Laplace(0.1) for a member and 0 + Laplace(0.1) for anyone else."""
    got = {}
    for who in (MEMBER, OUTSIDER):
        result, why = attempt(overlap, psi("staff", filter=f"person_id == {who}",
                                           dp={"epsilon": 10.0}))
        # the defence: a researcher's ε at a cell without the officer's cap and budget
        assert result is not None or "only with a per-query ε cap" in why, why
        got[who] = None if result is None else result["intersection"]
    assert not (got[MEMBER] == 1 and got[OUTSIDER] == 0), (
        f"membership read from one DP job each: member -> {got[MEMBER]}, "
        f"outsider -> {got[OUTSIDER]}")


def test_psi_over_two_node_sets_does_not_count_one_person(overlap):
    """The count is not a sum over any one node's row sets: the same selection at every
    node (the whole file, which the auditor always counts as released) over the nodes
    {alpha, beta, gamma} and over {alpha, beta, gamma, delta} gives two counts of at
    least k whose difference is the number of people alpha, beta and gamma share and
    delta lacks — one here. No node's auditor sees a new row set."""
    three = size(overlap, psi("staff", nodes=THREE))
    four = size(overlap, psi("staff", nodes=tuple(HELD)))
    truth = len(set(HELD["alpha"]) & set(HELD["beta"]) & set(HELD["gamma"])
                - set(HELD["delta"]))
    assert truth == 1
    if three is None or four is None:
        return  # refused at the auditing nodes: no difference to take
    diff = three - four
    assert not 0 < diff < 5, (f"|A∩B∩C| = {three}, |A∩B∩C∩D| = {four}: {diff} person(s) "
                              "of A∩B∩C not at D")


def test_psi_membership_of_one_person_through_two_node_sets_and_a_filter(overlap):
    """Targeted: a filter of ten consecutive ids around the target (an interval of at
    least k at every node, answered once), over three and over four nodes. With the
    other nine known to work at delta (say, from its public staff list), a difference of
    one says the target is not there, zero that it is."""
    window = f"person_id >= {MISSING - 5} and person_id < {MISSING + 5}"
    three = size(overlap, psi("staff", nodes=THREE, filter=window))
    four = size(overlap, psi("staff", nodes=tuple(HELD), filter=window))
    assert (three, four) != (10, 9), (
        "10 of the window at alpha∩beta∩gamma, 9 with delta: the target is not at delta")


def test_psi_cross_terms_of_two_complementary_filters_do_not_count_one_person(overlap):
    """A filter splits every node's rows into the same two cells (complements: the
    auditor sees two row sets of at least k at each node, plus the whole file). The psi
    count of a filter only counts identifiers whose records fall in it at every node, so
    count(all) − count(F) − count(not F) is the number of people whose records fall on
    different sides at different platforms: one person here, below k."""
    f = "department in ('biology', 'chemistry')"
    g = "department in ('geology', 'mathematics', 'physics')"
    counts = [size(overlap, psi("moved", filter=flt)) for flt in (None, f, g)]
    if None in counts:
        return  # refused at the auditing nodes
    cross = counts[0] - counts[1] - counts[2]
    assert not 0 < cross < 5, (f"count(all) = {counts[0]}, count(F) = {counts[1]}, "
                               f"count(not F) = {counts[2]}: {cross} person(s) whose "
                               "department differs between the platforms")


# -- pca, crosstab, survival: attacks the defence holds against -------------------------
from staff import federation as staff_federation  # noqa: E402
from test_crosstab_rules import crosstab  # noqa: E402
from test_crosstab_rules import federation as survey  # noqa: E402,F401
from test_survival_rules import g2 as ward  # noqa: E402,F401
from test_survival_rules import survival  # noqa: E402


@pytest.fixture
def staff(tmp_path):
    fed, df = staff_federation(tmp_path)
    fed.table = df
    yield fed
    fed.__exit__(None, None, None)


def pca(filter: str | None = None, columns=("age", "salary"), **spec) -> str:
    job = {"study": "staff", "type": "pca", "datasets": {n: "staff" for n in NODES},
           "pca": {"columns": list(columns), **spec}}
    if filter:
        job["filter"] = filter
    return yaml.safe_dump(job, sort_keys=False)


def test_pca_standardized_and_truncated_then_one_person_less_is_refused(staff):
    """A correlation PCA with one component (the stds and means of everyone), then a
    covariance PCA of everyone but the one director (an undeclared text column): the
    difference of the two releases' moments would be the director's age and salary.
    The second leaves an atom of one at alpha and is refused."""
    first, why = attempt(staff, pca(standardize=True, n_components=1))
    assert first is not None, why
    assert len(first["loadings"]) == 1 and "stds" in first
    second, why = attempt(staff, pca(filter="title != 'director'"))
    assert second is None, second  # alpha's auditor refuses; the others are too few


def test_pca_a_selection_under_k_read_as_empty_adds_no_equation(staff):
    """Four of alpha's people (under k: read as empty) with all of beta and gamma, then
    beta and gamma alone: the two releases must be the same numbers (nothing of the
    four), and a fifth added is an atom of k (admissible), a sixth refused."""
    base = "person_id >= 100061"
    four, why = attempt(staff, pca(filter=f"person_id <= 100004 or {base}"))
    none, why2 = attempt(staff, pca(filter=base))
    assert four is not None and none is not None, (why, why2)
    assert four["n"] == none["n"] == 120
    assert four["means"] == none["means"]
    six, why = attempt(staff, pca(filter=f"person_id <= 100006 or {base}"))
    five, _ = attempt(staff, pca(filter=f"person_id <= 100005 or {base}"))
    assert six is None or five is None, "a sixth person beside an atom of five"


def test_crosstab_a_transposed_table_then_a_filtered_one_is_refused(survey):  # noqa: F811
    """The table and its transpose (the same cells: answered, nothing new), then the
    table of those aged 30 or more, whose difference with the first is the young's
    table with the one young northern smoker alone: refused by the auditor."""
    fed = survey("G2", "CONDITIONAL")
    first, why = attempt_ct(fed, crosstab())
    assert first is not None, why
    again, why = attempt_ct(fed, crosstab(rows="region", columns="smoker"))
    assert again is not None, why
    old, why = attempt_ct(fed, crosstab(filter="age >= 30", rows="region",
                                        columns="smoker"))
    assert old is None, old
    assert "query auditing" in why, why


def attempt_ct(fed, spec):
    from test_crosstab_rules import attempt as run_ct
    return run_ct(fed, spec)


def test_survival_last_edge_censoring_does_not_date_the_target(ward):  # noqa: F811
    """Rows beyond the last edge count as censored at it: a one-bin grid ending at 500,
    then one ending at 510, differ only by the target's death moving from censored to
    event. The status of each cell is a row set: the second is refused."""
    first, why = attempt(ward, survival(bins=[0, 500]))
    assert first is not None, why
    second, why = attempt(ward, survival(bins=[0, 510]))
    assert second is None, second  # alpha's auditor refuses; the others are too few


def test_survival_groups_on_two_grids_give_no_one_patient_bin(ward):  # noqa: F811
    """The curves per ward, the ICU patient's
    ward filtered out: refused (an atom of one at alpha)."""
    out, why = attempt(ward, survival(groups="ward", bins=[0, 500, 1000],
                                      filter="ward != 'ICU'"))
    assert out is None, out
