"""A researcher attacking the ``regression`` job type through the real pipeline (in-memory
federation: real driver, gate, auditor, release path, BFV, OpenDP) on the G2 staff test
bed of ``staff.py`` (180 people, k = 5, query auditing). Each test asserts that the
attack FAILS; a test that fails is a finding (see the review report)."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from staff import NODES, attempt, federation

from jobs.views import load_result

DP_POLICY = "dp: {required: true, epsilon_per_query: 1.0, annual_budget: 20}\n"


@pytest.fixture
def staff(tmp_path):
    """A fresh federation per attack, keyed once all three nodes accepted (with
    min_nodes=2 the key may leave one node out: two contributors, refused)."""
    fed, df = federation(tmp_path, min_nodes=len(NODES))
    fed.table = df
    yield fed
    fed.__exit__(None, None, None)


def regression(formula: str, *, filter: str | None = None, **extra) -> str:
    job = {"study": "staff", "type": "regression", "datasets": {n: "staff" for n in NODES},
           "regression": {"formula": formula, **extra}}
    if filter:
        job["filter"] = filter
    return yaml.safe_dump(job, sort_keys=False)


def said(fed) -> str:
    """Everything the researcher reads about the last job: its error and each task's
    detail (with the node it came from)."""
    view = fed.last_view
    return " | ".join([str(view.error), *(f"{t.node}: {t.detail}" for t in view.tasks
                                          if t.detail)])


def _record(core) -> dict:
    (row,) = core.registry.list()
    return row.record


def require_dp(fed) -> None:
    """Every node's officer: DP required on the staff data (ε 1 per query)."""
    for core in fed.nodes.values():
        core.gate.policies.set(_record(core), DP_POLICY, "dp.yaml", "officer")


def spent(fed) -> dict[str, float]:
    return {n: sum(s.epsilon for s in core.gate.ledger.spent())
            for n, core in fed.nodes.items()}


def mean_and_n(result: dict) -> tuple[float, int]:
    res = load_result(result)
    return float(res.params["Intercept"]), res.rows


# -- 1. differencing two exact regressions one person apart ------------------------------
def test_differencing_two_intercept_only_fits_one_person_apart_is_refused(staff):
    """``salary ~ 1`` releases the mean and n: Σ salary. The same model with a filter that
    leaves out one person gives Σ over the others; the difference is that person's salary.
    The auditor must see regression's row sets and refuse the second."""
    target = staff.table.iloc[70]  # at beta
    t = int(target.person_id)
    first, why = attempt(staff, regression("salary ~ 1"))
    assert first is not None, why
    second, why = attempt(staff, regression(
        "salary ~ 1", filter=f"person_id < {t} or person_id > {t}"))
    if second is not None:
        (m1, n1), (m2, n2) = mean_and_n(first), mean_and_n(second)
        recovered = m1 * n1 - m2 * n2
        assert abs(recovered - target.salary) > 1.0, \
            f"recovered {recovered:.2f}, true {target.salary:.2f}"
    else:
        assert "query auditing" in why, why


def test_a_dummy_for_one_person_via_a_filter_difference_is_refused(staff):
    """``salary ~ C(department)`` twice, the second without one person: the coefficient of
    the person's department moves by exactly their share."""
    target = staff.table.iloc[130]  # at gamma
    t = int(target.person_id)
    first, why = attempt(staff, regression("salary ~ age + C(department)"))
    assert first is not None, why
    second, why = attempt(staff, regression(
        "salary ~ age + C(department)", filter=f"person_id != {t}"))
    assert second is None, "two fits one person apart were both released"
    assert "query auditing" in why, why


# -- 2. membership from a refusal ---------------------------------------------------------
def test_which_node_holds_a_person_is_not_told_by_a_refusal(staff):
    """Whether a person (known by their staff number) is in a dataset: one
    regression filtered to the staff number. The node that holds the person refuses (one row:
    fewer than k); the others have no row and say nothing. The refusal names the node."""
    target = staff.table.iloc[100]  # at beta
    result, why = attempt(staff, regression("salary ~ age",
                                            filter=f"person_id == {target.person_id}"))
    assert result is None
    refusing = {t.node for t in staff.last_view.tasks
                if t.detail and ("refused" in t.detail or "fewer than" in t.detail)}
    assert refusing != {target.node}, f"the refusal names {refusing}: {said(staff)}"


# -- 3. under DP: the overflow check runs on the exact sums, before the noise -------------
def _dp_probe(fed, flt: str) -> tuple[bool, str]:
    """Under DP: an OLS whose ``age`` is clipped to the constant C = 1.1e8 by the
    researcher's bounds, so that XᵀX[age, age] = n·C² = n·1.21e16 exceeds the limit of
    ``_bounded`` (2^60/100 = 1.15e16) exactly when the filter keeps a row at a node (the
    noise a node adds to its zeros, scale 8·C²/ε, stays below the encryption's 2^60).
    True: some node refused its exact sums as an overflow."""
    bounds = {"salary": [0, 200000], "age": [1.1e8, 1.1e8 + 1]}
    attempt(fed, regression("salary ~ age", filter=flt, dp={"bounds": bounds}))
    text = said(fed)
    return "sums overflow" in text, text


def charged(fed) -> dict[str, float]:
    return {n: sum(s.epsilon for s in core.gate.ledger.spent() if s.researcher is None)
            for n, core in fed.nodes.items()}


def test_under_dp_no_refusal_depends_on_the_exact_rows(tmp_path):
    """Under DP whether a node answers must not depend on its rows (jobs/regression/dp.py:
    "no data-dependent refusals"). ``_bounded`` checks the exact sums before the noise;
    with clipping bounds of the researcher's choosing it refuses exactly when the filter
    keeps a row: a membership oracle outside ε (the refused node charges nothing), and,
    on a salary threshold, a bisection of one person's salary."""
    fed, table = federation(tmp_path, min_nodes=len(NODES))
    try:
        require_dp(fed)
        target = table.iloc[100]  # at beta
        present, text = _dp_probe(fed, f"person_id == {target.person_id}")
        absent, text2 = _dp_probe(fed, "person_id == 99999")  # nobody
        before = charged(fed)
        # bisect the target's salary on the grid (resolution 1000) by the oracle; after
        # two refusals in a row an answered probe resets the run (node/alerts.py)
        lo, hi, jobs, run = 40_000, 160_000, 0, 0
        while hi - lo > 1000 and jobs < 12:
            mid = (lo + hi) // 2000 * 1000
            hit, _ = _dp_probe(fed, f"person_id == {target.person_id} and salary >= {mid}")
            jobs += 1
            run = run + 1 if hit else 0
            if hit:
                lo = mid
            else:
                hi = mid
            if run == 2:
                _dp_probe(fed, "person_id == 99999")
                jobs, run = jobs + 1, 0
        after = charged(fed)
        held = "held" in said(fed)
    finally:
        fed.__exit__(None, None, None)
    leaked = present and not absent
    found = lo <= target.salary < hi and hi - lo <= 1000
    assert not leaked and not found, (
        f"membership: present→overflow={present}, absent→overflow={absent}; the "
        f"salary {target.salary:.2f} bisected to [{lo}, {hi}) in {jobs} jobs (held: "
        f"{held}); ε charged at the target's node beta for the two membership probes: "
        f"{before['beta']}, for all {jobs} bisection probes: "
        f"{after['beta'] - before['beta']}; researcher read: {text}")


# -- 4. GLM fit statistics are non-linear sums: the atom rule bounds linear ones only ------
def _sums(fed, flt: str) -> tuple[dict[str, float] | None, str]:
    """Per-row sums of f(age) over the rows the filter keeps, read off four released fits
    (each a pooled model the rules admit): Σa, Σa² (OLS), Σa·id (OLS on person_id),
    Σ log a! and Σ a log a (Poisson), Σ log a (Gamma). (None, the reason) where a GLM is
    refused."""
    out = {}
    ols, why = attempt(fed, regression("age ~ 1", filter=flt))
    assert ols is not None, why
    n = ols["fit"]["nobs"]
    mean = load_result(ols).params["Intercept"]
    out["n"], out["a"] = n, mean * n
    out["a2"] = ols["fit"]["rss"] + n * mean ** 2
    lin, why = attempt(fed, regression("age ~ person_id", filter=flt))
    assert lin is not None, why
    # Σ a·id from the normal equations: [n, Σid; Σid, Σid²]·β = [Σa, Σa·id]
    b = load_result(lin).params
    ids = [int(v) for v in _ids(flt)]
    out["aid"] = b["Intercept"] * sum(ids) + b["person_id"] * sum(i * i for i in ids)
    poi, why = attempt(fed, regression("age ~ 1", filter=flt, family="poisson"))
    if poi is None:
        return None, why
    out["alog"] = poi["fit"]["deviance"] / 2 + out["a"] * np.log(mean)
    out["lfact"] = out["a"] * np.log(mean) - out["a"] - poi["fit"]["log_likelihood"]
    gam, why = attempt(fed, regression("age ~ 1", filter=flt, family="gamma"))
    if gam is None:
        return None, why
    out["log"] = n * np.log(mean) - gam["fit"]["deviance"] / 2
    return out, ""


def _ids(flt: str) -> range:
    lo, hi = (int(w) for w in flt.replace("person_id >= ", "").split(" and person_id <= "))
    return range(lo, hi + 1)


def test_glm_fit_statistics_do_not_reveal_the_ages_of_an_atom_of_k_people(staff):
    """The auditor lets two id ranges 5 people apart be released (every atom holds k = 5).
    Linear sums over those 5 are all the atom rule means to allow; but a Poisson and a
    Gamma fit release Σ log a!, Σ a log a and Σ log a as well, and with OLS's Σa, Σa²,
    Σa·id these pin down the five ages, and who has which."""
    from scipy.special import gammaln

    base = int(staff.table.person_id.iloc[0])
    small = f"person_id >= {base} and person_id <= {base + 14}"
    large = f"person_id >= {base} and person_id <= {base + 19}"
    s1, why = _sums(staff, small)
    assert s1 is not None, why  # 15 rows: a GLM's selection may hold 3·k
    s2, why = _sums(staff, large)
    if s2 is None:  # the defence: the 5 people between would be an atom of the GLMs'
        assert "3·k: its fit statistics are non-linear sums" in why, why
        assert s1 is not None
        return
    g = {k: s2[k] - s1[k] for k in s1}
    assert round(g["n"]) == 5
    true = staff.table.age.iloc[15:20].to_numpy()
    # every multiset of five ages 22..65 (the attacker's only prior), then the orders
    from itertools import combinations_with_replacement, permutations
    combos = np.array(list(combinations_with_replacement(range(22, 66), 5)), dtype=float)
    err = (np.abs(combos.sum(1) - g["a"]) + np.abs((combos ** 2).sum(1) - g["a2"])
           + 100 * np.abs(np.log(combos).sum(1) - g["log"])
           + 10 * np.abs((combos * np.log(combos)).sum(1) - g["alog"])
           + 10 * np.abs(gammaln(combos + 1).sum(1) - g["lfact"]))
    best = np.argsort(err)[:2]
    ages = [int(a) for a in combos[best[0]]]
    true = [int(a) for a in true]
    ids = np.arange(base + 15, base + 20)
    orders = {p for p in permutations(ages) if abs(np.dot(p, ids) - g["aid"]) < 0.5}
    recovered = sorted(ages) == sorted(true) and err[best[1]] > 10 * err[best[0]] + 1e-3
    assert not recovered, (
        f"the five ages {sorted(true)} recovered as {sorted(ages)} (fit error "
        f"{err[best[0]]:.2e}, next multiset {err[best[1]]:.2e}); orders consistent with "
        f"Σa·id: {sorted(orders)} (true order {list(true)})")


# -- 5. under DP: is one row's effect on each block really bounded? -----------------------
def test_one_rows_effect_on_each_dp_block_is_within_its_sensitivity():
    """Add one adversarial row (values far outside the bounds, an undeclared level) to a
    node's rows: after the clipping and level filter every block moves by at most the
    sensitivity the noise is scaled to (jobs/regression/dp.py: blocks)."""
    from jobs.regression import compute, design, dp
    from jobs.regression.formula import parse_formula

    model = parse_formula("salary ~ age + C(department)")
    clip = {"salary": (1000.0, 200000.0), "age": (-70.0, 18.0)}
    levels = {"department": ["biology", "chemistry", "physics"]}
    layout = design.Layout.build(model, levels)
    rng = np.random.default_rng(3)
    n = 50
    sal, age = rng.uniform(-1e6, 1e6, n), rng.uniform(-500, 500, n)
    dep = rng.choice(["biology", "chemistry", "physics", "zeta"], n).astype(object)

    def vector(s, a, d):
        rows = design.Rows(s, {"salary": s, "age": a}, {"department": d})
        rows = dp.private_rows(rows, model, clip, levels)
        return compute.sufficient(design.matrix(model, layout, rows), rows.y)

    blocks = dp.blocks(model, layout, clip)
    worst = 0.0
    for extra in ((1e9, -1e9, "physics"), (-1e9, 1e9, "biology"), (5.0, 0.0, "zeta"),
                  (2e5, -70.0, "chemistry")):
        v0 = vector(sal, age, dep)
        v1 = vector(np.append(sal, extra[0]), np.append(age, extra[1]),
                    np.append(dep, extra[2]).astype(object))
        for blk in blocks:
            moved = float(np.abs(v1[blk.index] - v0[blk.index]).sum())
            worst = max(worst, moved / blk.sensitivity)
    assert worst <= 1.0 + 1e-9, worst
