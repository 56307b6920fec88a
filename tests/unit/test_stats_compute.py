"""The `stats` job in a plaintext simulation of the federation: real data split over nodes
(penguins by island, Seattle weather by year), node vectors summed with numpy as the
coordinator sums ciphertexts, decoded at release and compared with pandas on the pooled
data. Also the disclosure rules, the exact quantile search and the job spec."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from vega_datasets import data as vega

from jobs import registry
from jobs.spec import datasets_by_node, load_job
from jobs.stats.compute import Layout, compute, decode, pooled_quantile_n, vocabulary
from jobs.stats.quantiles import QuantileSearch, count_le, round_vector
from jobs.stats.spec import StatsSpec
from node.data import DataFile
from node.profiling import profile_file
from scifed.errors import UserError
from scifed.filters import compile_filter

NUMERIC = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"]
EDGES = [2500.0, 3000.0, 3500.0, 4000.0, 4500.0, 5000.0, 5500.0, 6000.0, 6500.0]
PROBS = [0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0]
REL = 1e-9


@dataclass
class Node:
    path: Path
    types: dict[str, str]


@dataclass
class Run:
    result: dict
    vectors: list[np.ndarray]
    vocab: dict[str, list[str]]
    search: QuantileSearch | None


def make_nodes(root: Path, parts: dict[str, pd.DataFrame], parquet: set[str]) -> list[Node]:
    nodes = []
    for name, df in parts.items():
        path = root / f"{name}.{'parquet' if name in parquet else 'csv'}"
        if name in parquet:
            df.to_parquet(path, index=False)
        else:
            df.to_csv(path, index=False)
        nodes.append(Node(path, {c.name: c.type for c in profile_file(path).columns}))
    return nodes


def federate(nodes: list[Node], spec: StatsSpec, *, k: int = 1, release_k: int | None = None,
             where: str | None = None) -> Run:
    """What the coordinator and the release node do, with plaintext sums for ciphertexts."""
    filters = [compile_filter(where, n.types) if where else None for n in nodes]
    files = [DataFile(n.path, f) for n, f in zip(nodes, filters, strict=True)]
    parts = [vocabulary(data, spec) for data in files]
    vocab = {c: sorted(set().union(*(p[c] for p in parts))) for c in spec.group_counts}
    vectors = [compute(data, spec, vocab, k=k) for data in files]
    total = np.sum(vectors, axis=0)
    result = decode(total, spec, vocab, k=release_k or k)
    search = None
    if spec.quantiles:
        search = QuantileSearch.start(spec, pooled_quantile_n(total, spec, vocab),
                                      k=release_k or k)
        while not search.done:
            query = search.query()
            pooled = np.sum([round_vector(data, spec, query, k=k) for data in files], axis=0)
            search = QuantileSearch.from_json(search.to_json())  # travels sealed between rounds
            search.learn(pooled)
        result["quantiles"] = search.result()
    for data in files:
        data.close()
    json.dumps(result, allow_nan=False)  # JSON-able, no NaN
    return Run(result, vectors, vocab, search)


def assert_matches_pandas(run: Run, df: pd.DataFrame, spec: StatsSpec) -> None:
    res = run.result
    assert res["rows"] == len(df)
    for col in spec.columns:
        out, x = res["columns"][col], df[col]
        assert out["count"] == x.count() and out["missing"] == x.isna().sum()
        assert out["sum"] == pytest.approx(x.sum(), rel=REL)
        assert out["mean"] == pytest.approx(x.mean(), rel=REL)
        assert out["variance"] == pytest.approx(x.var(), rel=REL)
        assert out["std"] == pytest.approx(x.std(), rel=REL)
    for col, edges in spec.histograms.items():
        out, x = res["histograms"][col], df[col]
        assert out["counts"] == np.histogram(x.dropna(), bins=edges)[0].tolist()
        assert out["below"] == (x < edges[0]).sum() and out["above"] == (x > edges[-1]).sum()
        assert out["missing"] == x.isna().sum() and not any(out["suppressed"])
    for col in spec.group_counts:
        out = res["groups"][col]
        assert dict(zip(out["values"], out["counts"], strict=True)) == \
            df[col].astype(str).where(df[col].notna()).value_counts().to_dict()
        assert out["missing"] == df[col].isna().sum()
    if spec.correlation:
        cols = spec.correlation
        assert res["correlation"]["columns"] == cols
        np.testing.assert_allclose(np.array(res["correlation"]["matrix"], dtype=float),
                                   df[cols].corr().to_numpy(), rtol=REL, atol=1e-12)
        present = df[cols].notna().astype(int)
        assert res["correlation"]["n"] == (present.T @ present).to_numpy().tolist()
    for col, probs in spec.quantiles.items():
        for p in probs:
            assert res["quantiles"][col][str(p)] == pytest.approx(df[col].quantile(p), rel=REL)
    if spec.quantiles:
        assert run.search is not None and run.search.rounds <= 12


# -- penguins, split by island (one node holds Parquet) -----------------------------------
@pytest.fixture(scope="module")
def islands(tmp_path_factory, penguins: pd.DataFrame) -> list[Node]:
    root = tmp_path_factory.mktemp("islands")
    parts = {i.lower(): penguins[penguins.island == i] for i in ("Biscoe", "Dream", "Torgersen")}
    return make_nodes(root, parts, parquet={"dream"})


FULL = StatsSpec(columns=NUMERIC, histograms={"body_mass_g": EDGES},
                 quantiles={"body_mass_g": PROBS, "bill_length_mm": [0.05, 0.5, 0.95],
                            "flipper_length_mm": [0.5]},
                 group_counts=["species", "sex", "year"], correlation=NUMERIC)


def test_penguins_pooled_equal_pandas(islands, penguins):
    run = federate(islands, FULL)
    assert_matches_pandas(run, penguins, FULL)
    assert run.vocab["year"] == ["2007", "2008", "2009"]
    assert run.result["suppression"] == {"k": 1, "local": {}, "release": [], "notes": []}


def test_penguins_with_a_filter(islands, penguins):
    where = "sex == 'female' and body_mass_g > 3500"
    run = federate(islands, FULL, where=where)
    assert_matches_pandas(run, penguins[(penguins.sex == "female")
                                        & (penguins.body_mass_g > 3500)], FULL)


def test_only_requested_measures_appear(islands, penguins):
    spec = StatsSpec(columns=["body_mass_g"], measures=["count", "mean"])
    out = federate(islands, spec).result
    assert out["columns"] == {"body_mass_g": {
        "count": 342, "missing": 2,
        "mean": pytest.approx(penguins.body_mass_g.mean(), rel=REL)}}
    assert set(out) == {"rows", "columns", "suppression"}


def test_layout_comes_from_spec_and_vocabulary_only(islands):
    vocab = {"species": ["Adelie", "Chinstrap", "Gentoo"], "sex": ["female", "male"],
             "year": ["2007", "2008", "2009"]}
    layout = Layout.build(FULL, vocab)
    pairs = len(NUMERIC) * (len(NUMERIC) + 1) // 2
    assert layout.size == 2 + 6 * 4 + (len(EDGES) + 3) + (3 + 2) + (2 + 2) + (3 + 2) \
        + 7 * pairs + 3
    # Torgersen holds Adelie only, yet fills the same layout as every other node.
    assert {v.shape for v in (compute(DataFile(n.path), FULL, vocab, k=1) for n in islands)} == \
        {(layout.size,)}
    with pytest.raises(ValueError, match="lacks group column"):
        Layout.build(FULL, {"species": []})


# -- Seattle weather, split by year into 4 nodes --------------------------------------------
@pytest.fixture(scope="module")
def weather() -> pd.DataFrame:
    return vega.seattle_weather()


@pytest.fixture(scope="module")
def years(tmp_path_factory, weather: pd.DataFrame) -> list[Node]:
    root = tmp_path_factory.mktemp("years")
    parts = {str(y): weather[weather.date.dt.year == y] for y in (2012, 2013, 2014, 2015)}
    return make_nodes(root, parts, parquet={"2014"})


WEATHER = StatsSpec(columns=["temp_max", "precipitation"],
                    histograms={"precipitation": [0, 0.5, 2, 5, 10, 20, 60]},
                    quantiles={"temp_max": [0.0, 0.05, 0.5, 0.95, 1.0],
                               "precipitation": [0.5, 0.75, 0.9, 0.99]},
                    group_counts=["weather"],
                    correlation=["temp_max", "temp_min", "precipitation", "wind"])


def test_weather_pooled_equal_pandas(years, weather):
    run = federate(years, WEATHER)
    assert_matches_pandas(run, weather, WEATHER)
    assert run.result["groups"]["weather"]["values"] == ["drizzle", "fog", "rain", "snow",
                                                         "sun"]


def test_weather_with_a_filter_on_dates_and_categories(years, weather):
    where = "weather != 'sun' and temp_max > 10 and date >= '2013-03-01'"
    sel = weather[(weather.weather != "sun") & (weather.temp_max > 10)
                  & (weather.date >= "2013-03-01")]
    assert_matches_pandas(federate(years, WEATHER, where=where), sel, WEATHER)


# -- disclosure control ---------------------------------------------------------------------
def test_local_suppression_of_a_small_bin_and_its_partner(islands, penguins):
    edges = [2800.0, 3500.0, 4000.0, 4500.0, 5000.0, 6000.0]
    spec = StatsSpec(histograms={"body_mass_g": edges})
    run = federate(islands, spec, k=10)
    hist = Layout.build(spec, {}).histograms["body_mass_g"]
    raw = {n.path.stem: np.histogram(penguins[penguins.island.str.lower() == n.path.stem]
                                     .body_mass_g.dropna(), bins=edges)[0].tolist()
           for n in islands}
    assert raw["torgersen"] == [18, 19, 11, 3, 0]
    biscoe, dream, torgersen = (v[hist].tolist() for v in run.vectors)
    # bins..., below, above, missing, flag
    assert torgersen == [18, 19, 0, 0, 0, 0, 0, 1, 1]  # 3 < k, and 11 to protect it
    assert biscoe == [0, 21, 23, 43, 65, 0, 0, 1, 1]   # 2 above the range, and 13
    assert dream == [39, 54, 25, 0, 0, 0, 0, 0, 1]     # 5 and 1 below: two cells, no partner
    out = run.result["histograms"]["body_mass_g"]
    assert out["counts"] == [57, 94, 48, 43, 65] and out["below"] == out["above"] == 0
    assert run.result["suppression"]["local"] == {"histograms.body_mass_g": 3}
    assert "3 node(s) suppressed small cells" in run.result["suppression"]["notes"][0]
    assert_nothing_under_k(run.result, 10)


def test_local_suppression_in_a_group_table(islands):
    spec = StatsSpec(group_counts=["species"])
    run = federate(islands, spec, k=50)
    # Biscoe: Adelie 44 < 50, and Gentoo 124 goes with it (the only other non-zero cell)
    assert dict(zip(run.vocab["species"], run.vectors[0][2:5], strict=True)) == {
        "Adelie": 0, "Chinstrap": 0, "Gentoo": 0}
    out = run.result["groups"]["species"]
    assert out["counts"] == [56 + 52, 68, 0] and out["suppressed"] == [False] * 3
    assert run.result["suppression"]["local"] == {"groups.species": 1}


def test_release_suppression_with_secondary_cell(islands, penguins):
    edges = [3000.0, 3500.0, 4000.0, 4500.0, 5000.0, 6500.0]
    spec = StatsSpec(histograms={"body_mass_g": edges}, group_counts=["species"])
    run = federate(islands, spec, k=1, release_k=10)
    out = run.result["histograms"]["body_mass_g"]
    assert (penguins.body_mass_g < 3000).sum() == 9  # the pooled cell under k
    assert out["below"] is None
    assert out["counts"] == [62, 94, 59, None, 67]  # 51 is the smallest other cell
    assert out["suppressed"] == [False, False, False, True, False]
    assert run.result["suppression"]["release"] == ["histograms.body_mass_g"]
    assert_nothing_under_k(run.result, 10)


def assert_nothing_under_k(result: dict, k: int) -> None:
    tables = [*result.get("histograms", {}).values(), *result.get("groups", {}).values()]
    cells = [c for t in tables for c in [*t["counts"], t.get("below"), t.get("above")]]
    assert all(c is None or c == 0 or c >= k for c in cells), cells


def test_small_selections_are_withheld(islands):
    spec = StatsSpec(columns=["body_mass_g"], correlation=["body_mass_g", "flipper_length_mm"])
    # sex is missing for 5 / 1 / 5 penguins, with body mass for 4 / 1 / 4 of them
    run = federate(islands, spec, k=5, where="sex is None")
    assert run.vectors[1].tolist() == [0, 1] + [0] * (len(run.vectors[1]) - 2)  # Dream
    res = run.result
    assert res["rows"] == 10
    assert res["columns"]["body_mass_g"] == {"count": 0, "missing": 2, "sum": 0.0,
                                             "mean": None, "variance": None, "std": None}
    assert res["suppression"]["local"] == {
        "rows": 1, "columns.body_mass_g": 2, "correlation.body_mass_g,body_mass_g": 2,
        "correlation.body_mass_g,flipper_length_mm": 2,
        "correlation.flipper_length_mm,flipper_length_mm": 2}
    # Without local thresholds the release node still withholds everything but the count.
    pooled = federate(islands, spec, k=1, release_k=10, where="sex is None").result
    assert pooled["columns"]["body_mass_g"] == {"count": 9, "missing": 2, "sum": None,
                                                "mean": None, "variance": None, "std": None}
    assert pooled["correlation"]["matrix"] == [[None, None], [None, None]]
    assert "columns.body_mass_g" in pooled["suppression"]["release"]
    assert federate(islands, spec, k=1, release_k=20, where="sex is None").result == {
        "rows": None, "suppression": {
            "k": 20, "local": {}, "release": ["rows"],
            "notes": ["rows: fewer than k rows match: nothing is released"]}}


def test_dominance_rule_for_non_negative_columns(tmp_path):
    a = pd.DataFrame({"grant": [1.0] * 11 + [1000.0], "change": [-5.0] + [1.0] * 11})
    b = pd.DataFrame({"grant": np.arange(1.0, 13.0), "change": np.arange(1.0, 13.0)})
    nodes = make_nodes(tmp_path, {"a": a, "b": b}, parquet=set())
    spec = StatsSpec(columns=["grant", "change"], measures=["count", "mean"])
    res = federate(nodes, spec, k=10).result
    assert res["columns"]["grant"] == {"count": 12, "missing": 0, "mean": 6.5}  # b only
    assert res["columns"]["change"]["count"] == 24  # negative values: no dominance rule
    assert res["suppression"]["local"] == {"columns.grant.dominance": 1}
    counts_only = StatsSpec(columns=["grant"], measures=["count"])
    assert federate(nodes, counts_only, k=10).result["columns"]["grant"]["count"] == 24


# -- the exact quantile search --------------------------------------------------------------
def test_quantiles_refused_below_2k(islands):
    spec = StatsSpec(quantiles={"body_mass_g": [0.5], "flipper_length_mm": [0.5]})
    search = QuantileSearch.start(spec, {"body_mass_g": 19, "flipper_length_mm": 0}, k=10)
    assert search.done and search.result() == {}
    assert search.refused == {"body_mass_g": "too few values for a quantile at k=10",
                              "flipper_length_mm": "no values"}


def test_quantile_search_rejects_inconsistent_counts(islands):
    spec = StatsSpec(quantiles={"body_mass_g": [0.5]})
    search = QuantileSearch.start(spec, {"body_mass_g": 342}, k=1)
    asked = search.thresholds()["body_mass_g"]
    counts = np.sum([count_le(DataFile(n.path), "body_mass_g", asked) for n in islands], axis=0)
    with pytest.raises(ValueError, match="not cumulative"):
        search.update({"body_mass_g": counts[::-1].tolist()})
    with pytest.raises(ValueError, match="data or membership changed"):
        search.update({"body_mass_g": (counts - (counts == counts[-1])).tolist()})
    search.update({"body_mass_g": (counts + 1e-7).tolist()})  # CKKS noise is fine
    assert search.rounds == 1 and not search.done


def test_count_le_counts_ties_and_skips_missing(islands, penguins):
    torgersen = penguins[penguins.island == "Torgersen"].body_mass_g
    ts = [3000.0, 3700.0, 3699.999, -1e300, 1e300]
    got = count_le(DataFile(islands[2].path), "body_mass_g", ts)
    assert got.tolist() == [(torgersen <= t).sum() for t in ts]


# -- errors ----------------------------------------------------------------------------------
def test_unknown_column_is_named(islands):
    with pytest.raises(UserError, match="unknown column 'wingspan'"):
        compute(DataFile(islands[0].path), StatsSpec(columns=["wingspan"]), {}, k=1)
    with pytest.raises(UserError, match="unknown column 'wingspan'"):
        count_le(DataFile(islands[0].path), "wingspan", [1.0])


def test_mean_of_a_string_column_is_refused(islands):
    with pytest.raises(UserError, match="column 'species' has type VARCHAR"):
        compute(DataFile(islands[0].path), StatsSpec(columns=["species"]), {}, k=1)


def test_corrupted_aggregate(islands):
    spec = StatsSpec(columns=["body_mass_g"], histograms={"body_mass_g": EDGES})
    total = np.sum([compute(DataFile(n.path), spec, {}, k=1) for n in islands], axis=0)
    noisy = total + np.random.default_rng(0).normal(scale=1e-7, size=total.size)
    assert decode(noisy, spec, {}, k=1)["histograms"] == decode(total, spec, {},
                                                                 k=1)["histograms"]
    total[Layout.build(spec, {}).histograms["body_mass_g"].start] += 0.3
    with pytest.raises(ValueError, match="corrupted aggregate"):
        decode(total, spec, {}, k=1)
    with pytest.raises(ValueError, match="layout needs"):
        decode(total[:-1], spec, {}, k=1)


# -- the job spec ----------------------------------------------------------------------------
JOB = """
study: penguin-morphology
type: stats
datasets:
  biscoe: penguins
  dream: urn:sdn:dream:ds:penguins
filter: "sex == 'female' and (body_mass_g > 3000 or species in ['Adelie'])"
stats:
  columns: [body_mass_g, flipper_length_mm]
  histograms: {body_mass_g: [2500, 3500, 4500, 5500, 6500]}
  quantiles: {body_mass_g: [0.25, 0.5, 0.75]}
  group_counts: [species, sex]
  correlation: [bill_length_mm, bill_depth_mm, body_mass_g]
"""


def test_job_spec_loads_and_names_nodes():
    spec = load_job(JOB, "job.yaml")
    assert spec.type == "stats" and spec.stats.measures == ["count", "sum", "mean",
                                                            "variance", "std"]
    assert datasets_by_node(spec) == {"biscoe": "penguins", "dream": "penguins"}
    listed = load_job(JOB.replace(
        "  biscoe: penguins\n  dream: urn:sdn:dream:ds:penguins",
        "  - urn:sdn:biscoe:ds:penguins\n  - urn:sdn:dream:ds:penguins-2"), "job.yaml")
    assert datasets_by_node(listed) == {"biscoe": "penguins", "dream": "penguins-2"}
    assert spec.referenced_columns() == ["body_mass_g", "flipper_length_mm", "species", "sex",
                                         "bill_length_mm", "bill_depth_mm"]


@pytest.mark.parametrize("change,needle", [
    ({"histograms": {"body_mass_g": [3000, 2000, 4000]}},
     "stats.histograms: body_mass_g: bin edges must be strictly increasing"),
    ({"quantiles": {"body_mass_g": [0.5, 1.5]}},
     "stats.quantiles: body_mass_g: probabilities must lie in [0, 1], got 1.5"),
    ({"correlation": ["body_mass_g"]}, "stats.correlation: list at least 2 columns"),
    ({"group_counts": ["sex", "sex"]}, "stats.group_counts: duplicate column: sex"),
    ({"columns": [""]}, "stats.columns.0: must not be empty"),
    ({"measures": ["median"]}, "stats.measures.0: Input should be"),
])
def test_job_spec_validation_names_the_problem(change, needle):
    text = JOB.split("stats:")[0] + "stats: " + json.dumps(change)
    with pytest.raises(UserError) as exc:
        load_job(text, "job.yaml")
    assert f"job.yaml: {needle}" in str(exc.value)


def test_job_spec_reports_every_problem_and_bad_ids():
    text = ("study: ''\ntype: summary\ndatasets: [urn:sdn:a:ds:x, 'penguins']\n"
            "stats: {columns: [x], histograms: {x: [1]}}\nextra: 1\n")
    with pytest.raises(UserError) as exc:
        load_job(text, "job.yaml")
    lines = str(exc.value).splitlines()
    *known, last = [f"'{n}'" for n in registry.names()]
    assert lines == [
        "job.yaml: study: must not be empty",
        f"job.yaml: type: Input should be {', '.join(known)} or {last}",
        "job.yaml: datasets: 'penguins' is not a catalog id of the form "
        "urn:sdn:{node}:ds:{slug}",
        "job.yaml: stats.histograms: x: at least 2 bin edges are needed",
        "job.yaml: extra: Extra inputs are not permitted",
    ]
    with pytest.raises(UserError, match="belongs to node 'dream', not 'biscoe'"):
        load_job(JOB.replace("biscoe: penguins", "biscoe: urn:sdn:dream:ds:penguins"), "j")
    with pytest.raises(UserError, match="a 'stats' job needs a 'stats:' section"):
        load_job("study: s\ntype: stats\ndatasets: {a: b}\n", "j")


def test_filter_with_a_function_call_is_refused(islands):
    with pytest.raises(UserError, match=r"filter: function calls are not allowed \(`open"):
        federate(islands, StatsSpec(columns=["body_mass_g"]), where="open('/etc/passwd') == 1")


def test_clipped_sums_leave_missing_values_out(islands, penguins):
    """Under DP the sums run over values clipped to the bounds; a missing value stays
    missing (it is neither a row of the sum nor moved to a bound). Ground truth: the
    pooled column, NaNs dropped, then clipped by numpy."""
    bounds = {"bill_length_mm": (35.0, 50.0), "body_mass_g": (3000.0, 5000.0)}
    spec = StatsSpec(columns=list(bounds), correlation=list(bounds))
    files = [DataFile(n.path) for n in islands]
    try:
        total = np.sum([compute(data, spec, {}, k=1, clip=bounds) for data in files], axis=0)
    finally:
        for data in files:
            data.close()
    layout = Layout.build(spec, {})
    assert penguins[list(bounds)].isna().any().all()  # the case in question is present
    for col, (lo, hi) in bounds.items():
        x = penguins[col].dropna().clip(lo, hi)
        count, missing, s, s2 = total[layout.columns[col]][:4]
        assert (count, missing) == (len(x), penguins[col].isna().sum())
        assert s == pytest.approx(x.sum(), rel=REL)
        assert s2 == pytest.approx((x * x).sum(), rel=REL)
    both = penguins[list(bounds)].dropna()
    x, y = (both[c].clip(*bounds[c]) for c in bounds)
    n, sx, sy, sxx, syy, sxy = total[layout.pairs[tuple(bounds)]][:6]
    assert n == len(both)
    np.testing.assert_allclose([sx, sy, sxx, syy, sxy],
                               [x.sum(), y.sum(), (x * x).sum(), (y * y).sum(), (x * y).sum()],
                               rtol=REL)
