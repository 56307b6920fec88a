"""``crosstab`` through the real pipeline (in-memory link: real driver, gate, release
path, BFV), each table compared with ``pd.crosstab`` and each test with
``scipy.stats.chi2_contingency(..., correction=False)`` on the pooled rows, computed
here.

Data shipped in PyPI packages, split across three nodes non-IID: the penguins by island
(the module's ``fed``: species × island × sex), vega_datasets' ``cars`` (origin ×
cylinders) split by a tertile of weight."""

from __future__ import annotations

import copy
import math

import numpy as np
import pandas as pd
import pytest
from inmemory_cases import ISLANDS, attempt, build, job_yaml, require_dp, spent
from scipy.optimize import linprog
from scipy.stats import chi2_contingency
from vega_datasets import data as vega

from harness.inmemory import InMemoryFederation
from jobs.views import load_result

NODES = ("alpha", "beta", "gamma")


def crosstab(study: str, nodes, filter: str | None = None, **spec) -> str:
    job = {"study": study, "type": "crosstab", "datasets": {n: study for n in nodes},
           "crosstab": spec}
    if filter:
        job["filter"] = filter
    return job_yaml(**job)


def labelled(ref: pd.DataFrame) -> pd.DataFrame:
    """pd.crosstab's table with its labels as the node writes them (text)."""
    out = ref.copy()
    out.index = [str(v) for v in out.index]
    out.columns = [str(v) for v in out.columns]
    return out


def assert_layer(table: dict, ref: pd.DataFrame, row_levels, column_levels) -> None:
    """One released layer equals pd.crosstab (absent levels count 0) and its test equals
    scipy's on the same table."""
    ref = labelled(ref).reindex(index=row_levels, columns=column_levels, fill_value=0)
    assert table["counts"] == ref.to_numpy().tolist()
    assert table["row_totals"] == ref.sum(axis=1).tolist()
    assert table["column_totals"] == ref.sum(axis=0).tolist()
    assert table["total"] == int(ref.to_numpy().sum())
    observed = ref.loc[ref.sum(axis=1) > 0, ref.sum(axis=0) > 0]
    stat, p, dof, expected = chi2_contingency(observed, correction=False)
    test = table["test"]
    assert test["statistic"] == pytest.approx(stat, rel=1e-12)
    assert test["p_value"] == pytest.approx(p, rel=1e-9, abs=1e-300)
    assert test["dof"] == dof
    np.testing.assert_allclose(test["expected"], expected, rtol=1e-12)
    v = math.sqrt(stat / (observed.to_numpy().sum() * (min(observed.shape) - 1)))
    assert test["cramers_v"] == pytest.approx(v, rel=1e-12)


def test_two_way_equals_pandas_and_scipy(fed, penguins, tmp_path):
    _, result = fed.run(crosstab("penguins", ISLANDS, rows="species", columns="island"))
    ref = pd.crosstab(penguins.species, penguins.island)
    (table,) = result["tables"]
    assert_layer(table, ref, result["row_levels"], result["column_levels"])
    assert result["row_levels"] == ["Adelie", "Chinstrap", "Gentoo"]
    assert result["suppression"]["cells"] == 0
    res = load_result(result)
    pd.testing.assert_frame_equal(res.table.astype("int64"), labelled(ref), check_names=False)
    assert res.tests.iloc[0]["dof"] == 4
    written = {p.name for p in res.write(tmp_path / "out")}
    assert {"table.csv", "margins.csv", "tests.csv", "expected.csv", "heatmap.png",
            "result.json", "report.html"} <= written
    assert (tmp_path / "out" / "heatmap.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_three_way_per_layer_equals_pandas_and_scipy(fed, penguins):
    _, result = fed.run(crosstab("penguins", ISLANDS, rows="species", columns="island",
                                 layers="sex"))
    rows = penguins.dropna(subset=["species", "island", "sex"])
    assert [t["layer"] for t in result["tables"]] == ["female", "male"]
    for table in result["tables"]:
        part = rows[rows.sex == table["layer"]]
        assert_layer(table, pd.crosstab(part.species, part.island), result["row_levels"],
                     result["column_levels"])
    res = load_result(result)
    assert list(res.table.index.names) == ["sex", "species"]
    assert res.table.shape == (6, 3)


def test_a_filter(fed, penguins):
    _, result = fed.run(crosstab("penguins", ISLANDS, filter="year == 2008",
                                 rows="sex", columns="species"))
    part = penguins[penguins.year == 2008].dropna(subset=["sex", "species"])
    (table,) = result["tables"]
    assert_layer(table, pd.crosstab(part.sex, part.species), result["row_levels"],
                 result["column_levels"])


@pytest.mark.parametrize(("spec", "message"), [
    ({"rows": "species", "columns": "wingspan"}, "unknown column 'wingspan'"),
    ({"rows": "species", "columns": "body_mass_g"},
     "crosstab: column 'body_mass_g' is numeric and cannot be grouped"),
    ({"rows": "species", "columns": "species"}, "duplicate columns"),
    ({"rows": "species"}, "crosstab.columns: Field required"),
])
def test_bad_input_gets_one_clear_message_and_charges_nothing(fed, spec, message):
    result, refusal = attempt(fed, crosstab("penguins", ISLANDS, **spec))
    assert result is None
    assert message in refusal, refusal
    assert spent(fed) == []


# -- cars: origin × cylinders, split by weight (non-IID), at k = 1 and at k = 5 ------------
@pytest.fixture(scope="module")
def cars() -> pd.DataFrame:
    return vega.cars()[["Name", "Origin", "Cylinders", "Weight_in_lbs", "Horsepower"]]


def cars_federation(root, cars: pd.DataFrame, penguins_meta: dict,
                    k: int | None = None) -> InMemoryFederation:
    """alpha, beta, gamma hold the light, middle and heavy third of the cars."""
    fed = InMemoryFederation(root, list(NODES)).__enter__()
    part = pd.qcut(cars.Weight_in_lbs.rank(method="first"), 3, labels=False)
    meta = copy.deepcopy(penguins_meta)
    meta.update({"title": {"en": "cars"}, "description": {"en": "cars (vega_datasets)."},
                 "fields": {"Name": {"description": "model"},
                            "Origin": {"description": "region of origin",
                                       "constraints": {"enum": ["Europe", "Japan", "USA"]}},
                            "Cylinders": {"description": "cylinders",
                                          "constraints": {"enum": [3, 4, 5, 6, 8]}},
                            "Weight_in_lbs": {"description": "weight"},
                            "Horsepower": {"description": "power"}}})
    meta = {key: v for key, v in meta.items() if key not in ("targets", "annotation",
                                                               "splits")}
    for i, node in enumerate(NODES):
        fed.add_dataset(node, cars[part == i], meta, "cars")
        if k is not None:
            core = fed.nodes[node]
            core.gate.policies.set(core.registry.get("cars").record,
                                   f"min_cell_count: {k}\n", "k.yaml", "officer")
    fed.create_study("cars", {n: "cars" for n in NODES})
    return fed


def test_cars_origin_by_cylinders_equals_pandas_and_scipy(tmp_path, cars, penguins_meta):
    fed = cars_federation(tmp_path, cars, penguins_meta)
    try:
        _, result = fed.run(crosstab("cars", NODES, rows="Origin", columns="Cylinders"))
        (table,) = result["tables"]
        assert result["column_levels"] == ["3", "4", "5", "6", "8"]
        assert_layer(table, pd.crosstab(cars.Origin, cars.Cylinders),
                     result["row_levels"], result["column_levels"])
    finally:
        fed.__exit__(None, None, None)


def recoverable(table: dict) -> list[tuple[int, int]]:
    """Suppressed cells whose value the released cells and margins fix: for each, the
    least and the greatest value any non-negative table with the released numbers
    allows (two linear programs) are equal."""
    counts = table["counts"]
    n_r, n_c = len(counts), len(counts[0])
    unknown = [(r, c) for r in range(n_r) for c in range(n_c) if counts[r][c] is None]
    margins = [("row", r) for r in range(n_r) if table["row_totals"][r] is None]
    margins += [("col", c) for c in range(n_c) if table["column_totals"][c] is None]
    total = table["total"] is None
    size = len(unknown) + len(margins) + total
    a, b = [], []

    def equation(cells, margin, margin_value, known):
        eq = np.zeros(size)
        for cell in cells:
            eq[unknown.index(cell)] = 1.0
        if margin in margins:
            eq[len(unknown) + margins.index(margin)] = -1.0
            a.append(eq)
            b.append(-known)
        else:
            a.append(eq)
            b.append(margin_value - known)

    for r in range(n_r):
        known = sum(v for v in counts[r] if v is not None)
        equation([u for u in unknown if u[0] == r], ("row", r), table["row_totals"][r], known)
    for c in range(n_c):
        known = sum(counts[r][c] for r in range(n_r) if counts[r][c] is not None)
        equation([u for u in unknown if u[1] == c], ("col", c), table["column_totals"][c],
                 known)
    for kind, values in (("row", table["row_totals"]), ("col", table["column_totals"])):
        eq = np.zeros(size)
        known = sum(v for v in values if v is not None)
        for j, m in enumerate(margins):
            if m[0] == kind:
                eq[len(unknown) + j] = 1.0
        if total:
            eq[-1] = -1.0
            a.append(eq)
            b.append(-known)
        else:
            a.append(eq)
            b.append(table["total"] - known)
    out = []
    for i, cell in enumerate(unknown):
        goal = np.zeros(size)
        goal[i] = 1.0
        lo = linprog(goal, A_eq=np.array(a), b_eq=np.array(b), bounds=(0, None))
        hi = linprog(-goal, A_eq=np.array(a), b_eq=np.array(b), bounds=(0, None))
        assert lo.status in (0, 3) and hi.status in (0, 3), (lo.message, hi.message)
        if hi.status == 0 and abs(lo.fun + hi.fun) < 0.5:   # max == min: pinned down
            out.append(cell)
    return out


def test_at_k5_small_cells_are_suppressed_and_none_can_be_solved_for(tmp_path, cars,
                                                                      penguins_meta):
    fed = cars_federation(tmp_path, cars, penguins_meta, k=5)
    try:
        _, result = fed.run(crosstab("cars", NODES, rows="Origin", columns="Cylinders"))
    finally:
        fed.__exit__(None, None, None)
    (table,) = result["tables"]
    ref = labelled(pd.crosstab(cars.Origin, cars.Cylinders)).reindex(
        index=result["row_levels"], columns=result["column_levels"], fill_value=0)
    part = pd.qcut(cars.Weight_in_lbs.rank(method="first"), 3, labels=False)
    small = [(r, c) for r, row in enumerate(result["row_levels"])
             for c, col in enumerate(result["column_levels"])
             if any(0 < n < 5 for n in (labelled(pd.crosstab(cars.Origin[part == i],
                                                             cars.Cylinders[part == i]))
                                        .get(col, {}).get(row, 0) for i in range(3)))]
    assert small, "the split must leave small cells at some node"
    for r, c in small:                      # every cell with a small share is withheld
        assert table["suppressed"][r][c]
    for r, row in enumerate(table["counts"]):
        for c, v in enumerate(row):         # what is released is the true count
            assert v is None or v == ref.iat[r, c]
    assert table["test"] is None and "suppressed" in table["test_note"]
    assert recoverable(table) == []
    res = load_result(result)
    assert res.table.isna().sum().sum() == sum(map(sum, table["suppressed"]))


def test_where_policy_requires_dp_each_node_noises_its_table(tmp_path, penguins,
                                                             penguins_meta):
    """Species × island under DP at ε = 1 per node: the levels are the declared ones, every
    node adds discrete Laplace noise of scale 1 to each cell and is charged once; each
    released cell stays within the noise of the pooled pandas count (three draws of
    scale 1: |noise| < 25 but with probability e^-20), and the cells are integers."""
    meta = copy.deepcopy(penguins_meta)  # sex with its values undeclared
    del meta["fields"]["sex"]["constraints"]["enum"]
    # the attack: one bird at Dream of an undeclared species — were the levels read from
    # the rows, "Zeta" would be a row of the released table, one bird's value
    planted = penguins.copy()
    planted.loc[planted.index[planted.island == "Dream"][0], "species"] = "Zeta"
    fed = build(tmp_path, planted, meta, accept_violations=True)  # registered anyway
    try:
        require_dp(fed)
        result, refusal = attempt(fed, crosstab("penguins", ISLANDS, rows="species",
                                                columns="island", dp={}))
        assert result is not None, refusal
        assert sorted(result["privacy"]) == sorted(ISLANDS)
        assert result["row_levels"] == ["Adelie", "Chinstrap", "Gentoo"]
        assert result["column_levels"] == ["Biscoe", "Dream", "Torgersen"]
        assert "Zeta" not in str(result)
        assert "noisy" in result["privacy_note"]
        ref = pd.crosstab(penguins.species, penguins.island)
        (table,) = result["tables"]
        for r, row in enumerate(table["counts"]):
            for c, v in enumerate(row):
                assert v is None or (v == int(v) and abs(v - ref.iat[r, c]) < 25)
        assert sorted((s.dataset_id.split(":")[2], s.epsilon) for s in spent(fed)
                      if s.researcher is None) == [(n, 1.0) for n in sorted(ISLANDS)]
        # a column without declared levels is refused before a row is read
        result, refusal = attempt(fed, crosstab("penguins", ISLANDS, rows="species",
                                                columns="sex", dp={}))
        assert result is None
        assert "under differential privacy only columns with a declared enumeration" \
            in refusal, refusal
    finally:
        fed.__exit__(None, None, None)
