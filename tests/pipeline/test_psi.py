"""``psi`` through the real pipeline (in-memory link: real driver, gate, release path,
BFV, sealing), every released size compared with Python's own set intersection of the
same identifiers, computed here.

Data shipped in PyPI packages with an identifier per row: the Palmer penguins (a ring
number per bird) and statsmodels' ``fair`` (a respondent number), each spread over three
nodes non-IID: different sizes, different species / ages, some identifiers at all three
nodes, some at two, written differently at different nodes (case, spaces, zero-padding,
integer and text columns)."""

from __future__ import annotations

import copy
import re

import numpy as np
import pandas as pd
import pytest
import statsmodels.datasets as sd
import yaml
from inmemory_cases import attempt, job_yaml, spent

from harness.inmemory import InMemoryFederation
from jobs.views import load_result

NODES = ("biscoe", "dream", "torgersen")
# the chance that each node holds a bird, by species: the sets differ in size and mix
HOLDS = {"biscoe": {"Adelie": 0.9, "Chinstrap": 0.2, "Gentoo": 0.7},
         "dream": {"Adelie": 0.4, "Chinstrap": 0.9, "Gentoo": 0.6},
         "torgersen": {"Adelie": 0.7, "Chinstrap": 0.5, "Gentoo": 0.3}}


def psi_job(study: str, nodes=NODES, filter: str | None = None, **psi) -> str:
    job = {"study": study, "type": "psi", "datasets": {n: study for n in nodes}, "psi": psi}
    if filter:
        job["filter"] = filter
    return job_yaml(**job)


def id_meta(penguins_meta: dict, **columns: dict) -> dict:
    meta = copy.deepcopy(penguins_meta)
    for name, extra in columns.items():
        meta["fields"][name] = {"description": "Identifier of the record.", "role": "id",
                                **extra}
    return meta


def bird_tables(penguins: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Each node's birds (``bird`` is the true identity, kept for the test only: the
    nodes get ``ring``). Dream writes about half its rings in lower case with spaces
    around; torgersen holds some birds twice."""
    rng = np.random.default_rng(11)
    base = penguins.assign(ring=[f"P{i:04d}" for i in range(len(penguins))],
                           bird=np.arange(len(penguins)))
    tables = {}
    for node, holds in HOLDS.items():
        p = base.species.map(holds).to_numpy()
        t = base[rng.random(len(base)) < p].copy()
        if node == "dream":
            messy = rng.random(len(t)) < 0.5
            t.loc[messy, "ring"] = [f"  {r.lower()} " for r in t.ring[messy]]
        if node == "torgersen":
            t = pd.concat([t, t.sample(15, random_state=3)])
        tables[node] = t
    return tables


@pytest.fixture(scope="module")
def birds(tmp_path_factory, penguins, penguins_meta):
    tables = bird_tables(penguins)
    fed = InMemoryFederation(tmp_path_factory.mktemp("psi"), list(NODES)).__enter__()
    meta = id_meta(penguins_meta, ring={})
    for node, t in tables.items():
        fed.add_dataset(node, t.drop(columns="bird"), meta, "birds")
    fed.create_study("birds", {n: "birds" for n in NODES}, min_nodes=2)
    # a study where torgersen's table has no ring column
    for node, t in tables.items():
        bare = node == "torgersen"
        fed.add_dataset(node, t.drop(columns=["bird", "ring"] if bare else ["bird"]),
                        penguins_meta if bare else meta, "mixed")
    fed.create_study("mixed", {n: "mixed" for n in NODES})
    fed.tables = tables
    yield fed
    fed.__exit__(None, None, None)


def test_intersection_size_equals_python_sets(birds):
    t = birds.tables
    result, why = attempt(birds, psi_job("birds", on="ring", normalise=["strip", "upper"]))
    assert result is not None, why
    truth = set(t["biscoe"].bird) & set(t["dream"].bird) & set(t["torgersen"].bird)
    assert result["intersection"] == len(truth)
    # non-trivial: some birds at two nodes only, and more at all three than any k
    two = (set(t["biscoe"].bird) & set(t["dream"].bird)) - truth
    assert len(truth) > 20 and two
    assert sorted(result["meta"]["contributors"]) == sorted(NODES)
    assert result["noised_at"] == []
    res = load_result(result)
    assert res.intersection.loc[0, "intersection"] == len(truth)


def test_without_normalisation_only_equal_texts_match(birds):
    t = birds.tables
    result, why = attempt(birds, psi_job("birds", on="ring", normalise=[]))
    assert result is not None, why
    raw = set(t["biscoe"].ring) & set(t["dream"].ring) & set(t["torgersen"].ring)
    assert result["intersection"] == len(raw)
    normalised = set(t["biscoe"].bird) & set(t["dream"].bird) & set(t["torgersen"].bird)
    assert len(raw) < len(normalised)


def test_two_nodes_and_a_filter(birds):
    t = birds.tables
    result, why = attempt(birds, psi_job("birds", nodes=("biscoe", "dream"), on="ring",
                                         normalise=["strip", "upper"],
                                         filter="species != 'Gentoo'"))
    assert result is not None, why
    a, b = (t[n][t[n].species != "Gentoo"] for n in ("biscoe", "dream"))
    assert result["intersection"] == len(set(a.bird) & set(b.bird))
    assert sorted(result["meta"]["contributors"]) == ["biscoe", "dream"]


def test_the_view_writes_its_files(birds, tmp_path):
    result, why = attempt(birds, psi_job("birds", on="ring", normalise=["strip", "lower"]))
    assert result is not None, why
    res = load_result(result)
    written = res.write(tmp_path)
    assert {p.name for p in written} == {"intersection.csv", "intersection.png",
                                         "result.json", "report.html"}
    assert pd.read_csv(tmp_path / "intersection.csv").intersection[0] == res.size
    assert (tmp_path / "intersection.png").read_bytes()[:4] == b"\x89PNG"


def test_a_column_missing_at_one_node_is_refused_at_submission(birds):
    result, why = attempt(birds, psi_job("mixed", on="ring"))
    assert result is None
    assert "unknown column 'ring'" in why and "node torgersen" in why
    assert spent(birds) == []


def test_a_per_node_column_missing_there_is_refused_by_that_node(birds):
    result, why = attempt(birds, psi_job("birds", on={"biscoe": "ring", "dream": "ring",
                                                      "torgersen": "tag"}))
    assert result is None
    assert "node torgersen: psi.on: unknown column 'tag'" in why
    assert spent(birds) == []


def test_a_column_that_is_no_identifier_is_refused(birds):
    result, why = attempt(birds, psi_job("birds", on="species"))
    assert result is None
    assert "column 'species' is not marked as an identifier" in why
    assert spent(birds) == []


def test_a_non_member_node_and_a_bad_step_are_refused_at_submission(birds):
    job = yaml.safe_load(psi_job("birds", on="ring"))
    job["datasets"]["ghost"] = "birds"
    result, why = attempt(birds, yaml.safe_dump(job))
    assert result is None and "ghost" in why
    result, why = attempt(birds, psi_job("birds", on="ring", normalise=["shout"]))
    assert result is None and "psi.normalise" in why
    result, why = attempt(birds, psi_job("birds", nodes=("biscoe",), on="ring"))
    assert result is None and "needs at least 2" in why
    assert spent(birds) == []


# -- integers and texts: statsmodels' fair, a respondent number per row -----------------
@pytest.fixture(scope="module")
def fair(tmp_path_factory, penguins_meta):
    """6366 respondents over three nodes by age (overlapping bands: non-IID). alpha keeps
    the number as an integer column, beta as zero-padded text ("000123"), gamma as text
    with spaces."""
    df = sd.fair.load_pandas().data.reset_index(drop=True)
    df["respondent"] = np.arange(len(df))
    frames = {"alpha": df[df.age <= 32], "beta": df[df.age >= 22],
              "gamma": df[(df.age >= 27) | (df.respondent % 3 == 0)]}
    frames = {
        "alpha": frames["alpha"].assign(resp_no=frames["alpha"].respondent)[["resp_no", "age"]],
        "beta": frames["beta"].assign(code=[f"{i:06d}" for i in frames["beta"].respondent]
                                      )[["code", "age"]],
        "gamma": frames["gamma"].assign(code=[f" {i} " for i in frames["gamma"].respondent]
                                        )[["code", "age"]]}
    meta = copy.deepcopy(penguins_meta)
    meta.update({"title": {"en": "Survey respondents"}, "targets": [], "splits": None,
                 "annotation": None})
    meta = {k: v for k, v in meta.items() if v is not None}
    fields = {"age": {"description": "Age in years.", "unit": "a"},
              "resp_no": {"description": "Respondent number.", "role": "id"},
              "code": {"description": "Respondent code.", "role": "id"}}
    fed = InMemoryFederation(tmp_path_factory.mktemp("fair"), list(frames)).__enter__()
    for node, frame in frames.items():
        fed.add_dataset(node, frame, {**meta, "fields": {c: fields[c] for c in frame}},
                        "fair")
    fed.create_study("fair", {n: "fair" for n in frames}, min_nodes=2)
    fed.frames = frames
    yield fed
    fed.__exit__(None, None, None)


def test_integers_match_zero_padded_text_with_the_integers_step(fair):
    f = fair.frames
    on = {"alpha": "resp_no", "beta": "code", "gamma": "code"}
    result, why = attempt(fair, psi_job("fair", nodes=tuple(f), on=on,
                                        normalise=["strip", "integers"]))
    assert result is not None, why
    truth = (set(f["alpha"].resp_no) & {int(c) for c in f["beta"].code}
             & {int(c) for c in f["gamma"].code})
    assert result["intersection"] == len(truth) > 500
    # without it "000123" is not 123; with strip only, " 123 " is
    result, why = attempt(fair, psi_job("fair", nodes=("alpha", "gamma"),
                                        on={"alpha": "resp_no", "gamma": "code"}))
    assert result is not None, why
    assert result["intersection"] == len({str(i) for i in f["alpha"].resp_no}
                                         & {c.strip() for c in f["gamma"].code})
    result, why = attempt(fair, psi_job("fair", nodes=tuple(f), on=on, normalise=["strip"]))
    assert result is not None, why  # k = 1 here (G1 OPEN): a size of 0 is released
    assert result["intersection"] == len({str(i) for i in f["alpha"].resp_no}
                                         & set(f["beta"].code)
                                         & {c.strip() for c in f["gamma"].code}) == 0


# -- k and DP: federations of their own (policy changes must not leak) -------------------
def _own(tmp_path, penguins, penguins_meta) -> InMemoryFederation:
    tables = bird_tables(penguins)
    fed = InMemoryFederation(tmp_path, list(NODES)).__enter__()
    meta = id_meta(penguins_meta, ring={})
    for node, t in tables.items():
        fed.add_dataset(node, t.drop(columns="bird"), meta, "birds")
    fed.create_study("birds", {n: "birds" for n in NODES})
    fed.tables = tables
    return fed


def test_below_k_is_refused_without_its_size(tmp_path, penguins, penguins_meta):
    fed = _own(tmp_path, penguins, penguins_meta)
    try:
        biscoe = fed.nodes["biscoe"]
        record = biscoe.registry.get("birds").record
        biscoe.gate.policies.set(record, "min_cell_count: 5\n", "k.yaml", "officer")
        t = fed.tables
        common = sorted(set(t["biscoe"].bird) & set(t["dream"].bird) & set(t["torgersen"].bird))
        texts = []
        for keep in (common[:3], []):  # an intersection of 3, and of none
            others = [b for b in t["biscoe"].bird if b not in common][:10]
            rings = ", ".join(repr(f"P{b:04d}") for b in [*keep, *others])
            _, why = attempt(fed, psi_job("birds", on="ring", normalise=["strip", "upper"],
                                          filter=f"ring in [{rings}]"))
            texts.append(re.sub(r"job-[0-9a-f]{12}", "JOB", why))
        assert "the intersection is smaller than k=5" in texts[0]
        assert texts[0] == texts[1]  # 3 and 0 are refused alike
        assert spent(fed) == []
        result, why = attempt(fed, psi_job("birds", on="ring", normalise=["strip", "upper"]))
        assert result is not None and result["meta"]["k"] == 5, why
        assert result["intersection"] == len(common)
    finally:
        fed.__exit__(None, None, None)


def test_dp_noises_at_each_node_and_charges_its_budget(tmp_path, penguins, penguins_meta):
    fed = _own(tmp_path, penguins, penguins_meta)
    try:
        t = fed.tables
        truth = len(set(t["biscoe"].bird) & set(t["dream"].bird) & set(t["torgersen"].bird))
        result, why = attempt(fed, psi_job("birds", on="ring", normalise=["strip", "upper"],
                                           dp={"epsilon": 1.0}))
        assert result is not None, why
        assert result["noised_at"] == sorted(NODES)
        # the sum of three discrete Laplace(1) draws: sd ≈ 2.4
        assert abs(result["intersection"] - truth) <= 15
        charges = [c for c in spent(fed) if c.researcher is None]  # per dataset (not researcher)
        assert len(charges) == 3 and all(c.epsilon == pytest.approx(1.0) for c in charges)
        dp = result["provenance"]["dp"]
        assert sorted(dp) == sorted(NODES)
        assert all(d["mechanism"].startswith("discrete Laplace") for d in dp.values())
    finally:
        fed.__exit__(None, None, None)


# -- PSI as a filter: statistics of one node's columns over the intersection -----------
BOUNDS = {"body_mass_g": [2500, 6500], "bill_length_mm": [30, 60]}
RESOLUTION = {"bill_length_mm": 0.1}


def filter_job(study: str, node: str, columns, nodes=NODES, filter: str | None = None,
               bounds=None, resolution=None, **psi) -> str:
    values = {"node": node, "columns": list(columns),
              "bounds": bounds or {c: BOUNDS[c] for c in columns},
              "resolution": resolution or {c: RESOLUTION[c] for c in columns
                                           if c in RESOLUTION}}
    return psi_job(study, nodes=nodes, filter=filter, values=values, **psi)


def matched_rows(tables: dict, node: str, others) -> pd.DataFrame:
    """The values node's rows whose bird every other node holds (pandas, on the true
    identity the nodes never see)."""
    common = set.intersection(*(set(tables[o].bird) for o in others))
    a = tables[node]
    return a[a.bird.isin(common)]


def assert_moments(released: dict, x: pd.Series, rel: float) -> None:
    x = x.dropna()
    assert released["n"] == len(x)
    assert released["sum"] == pytest.approx(float(x.sum()), rel=rel)
    assert released["mean"] == pytest.approx(float(x.mean()), rel=rel)
    assert released["variance"] == pytest.approx(float(x.var(ddof=1)), rel=rel)
    assert released["std"] == pytest.approx(float(x.std(ddof=1)), rel=rel)


def test_filter_sums_a_column_over_the_rows_every_other_node_holds(birds):
    t = birds.tables
    result, why = attempt(birds, filter_job("birds", "biscoe", ["body_mass_g",
                                                                "bill_length_mm"],
                                            on="ring", normalise=["strip", "upper"]))
    assert result is not None, why
    rows = matched_rows(t, "biscoe", ("dream", "torgersen"))
    assert 20 < len(rows) < len(t["biscoe"])  # a real filter, and not everything
    assert result["intersection"] == rows.bird.nunique()
    cols = result["values"]["columns"]
    # grams are whole numbers (resolution 1): exact up to float64 rounding
    assert cols["body_mass_g"]["sum"] == float(rows.body_mass_g.sum())
    assert_moments(cols["body_mass_g"], rows.body_mass_g, 1e-12)
    # millimetres to 0.1: exact on that grid, so to float rounding of its steps
    assert_moments(cols["bill_length_mm"], rows.bill_length_mm, 1e-9)
    res = load_result(result)
    assert res.values.loc["body_mass_g", "n"] == rows.body_mass_g.count()
    assert res.values.loc["bill_length_mm", "resolution"] == 0.1


def test_filter_between_two_nodes_with_the_values_at_the_other(birds):
    """Two nodes, the values at the node that is not the release node or is (both
    orders), a filter, and a bird held twice at torgersen counted once per row."""
    t = birds.tables
    for node, other in (("dream", "torgersen"), ("torgersen", "dream")):
        result, why = attempt(birds, filter_job(
            "birds", node, ["body_mass_g"], nodes=(node, other),
            filter="species != 'Chinstrap'", on="ring", normalise=["strip", "upper"]))
        assert result is not None, why
        sel = {n: t[n][t[n].species != "Chinstrap"] for n in (node, other)}
        rows = matched_rows(sel, node, (other,))
        assert result["intersection"] == rows.bird.nunique()
        assert_moments(result["values"]["columns"]["body_mass_g"], rows.body_mass_g, 1e-12)
        assert sorted(result["meta"]["contributors"]) == sorted((node, other))
    assert rows.bird.duplicated().any()  # torgersen's repeated birds: every row counts


def test_the_filter_view_writes_its_files(birds, tmp_path):
    result, why = attempt(birds, filter_job("birds", "dream", ["bill_length_mm"],
                                            on="ring", normalise=["strip", "upper"]))
    assert result is not None, why
    written = load_result(result).write(tmp_path)
    assert {p.name for p in written} == {"intersection.csv", "intersection.png",
                                         "values.csv", "values.png", "result.json",
                                         "report.html"}
    rows = matched_rows(birds.tables, "dream", ("biscoe", "torgersen"))
    csv = pd.read_csv(tmp_path / "values.csv").set_index("column")
    assert csv.loc["bill_length_mm", "mean"] == pytest.approx(rows.bill_length_mm.mean())
    assert (tmp_path / "values.png").read_bytes()[:4] == b"\x89PNG"


def test_filter_over_integer_and_text_identifiers(fair):
    """statsmodels' fair: ages (in steps of 0.5) at beta over the respondents alpha
    and gamma hold too, the numbers written three ways."""
    f = fair.frames
    on = {"alpha": "resp_no", "beta": "code", "gamma": "code"}
    result, why = attempt(fair, filter_job("fair", "beta", ["age"], nodes=tuple(f), on=on,
                                           normalise=["strip", "integers"],
                                           bounds={"age": [15, 45]},
                                           resolution={"age": 0.5}))
    assert result is not None, why
    common = set(f["alpha"].resp_no) & {int(c) for c in f["gamma"].code}
    rows = f["beta"][f["beta"].code.astype(int).isin(common)]
    assert result["intersection"] == len(rows) > 500
    assert_moments(result["values"]["columns"]["age"], rows.age, 1e-12)


def test_filter_values_missing_or_not_numeric_are_refused(birds):
    result, why = attempt(birds, filter_job("birds", "biscoe", ["tail_mm"], on="ring",
                                            bounds={"tail_mm": [0, 1]}))
    assert result is None
    assert "node biscoe: psi.values.columns: unknown column 'tail_mm'" in why
    result, why = attempt(birds, filter_job("birds", "biscoe", ["species"], on="ring",
                                            bounds={"species": [0, 1]}))
    assert result is None
    assert "node biscoe: psi.values.columns" in why and "species" in why
    assert spent(birds) == []


def test_filter_at_a_node_outside_the_job_or_without_bounds_is_refused(birds):
    result, why = attempt(birds, filter_job("birds", "ghost", ["body_mass_g"], on="ring"))
    assert result is None
    assert "psi.values.node: 'ghost' is not a node of the job" in why
    job = yaml.safe_load(filter_job("birds", "biscoe", ["body_mass_g"], on="ring"))
    del job["psi"]["values"]["bounds"]
    result, why = attempt(birds, yaml.safe_dump(job))
    assert result is None and "psi.values.bounds" in why
    result, why = attempt(birds, filter_job("birds", "biscoe", ["body_mass_g"], on="ring",
                                            dp={"epsilon": 1.0}))
    assert result is None and "psi with values is exact only" in why
    result, why = attempt(birds, filter_job("birds", "biscoe", ["body_mass_g"], on="ring",
                                            resolution={"body_mass_g": 1e-4}))
    assert result is None and "coarsen the resolution" in why
    assert spent(birds) == []
