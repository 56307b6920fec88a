"""``pca`` through the real pipeline (in-memory link: real driver, gate, release path,
BFV), each decomposition compared with scikit-learn's ``PCA`` (after ``StandardScaler``
for the correlation case) on the pooled complete rows, computed here.

Data shipped in PyPI packages, split across three nodes non-IID: the penguins by island
(the module's ``fed``), scikit-learn's ``wine`` and ``breast_cancer`` split by a quantile
of one column."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
from inmemory_cases import ISLANDS, attempt, build, job_yaml, require_dp, spent
from sklearn.datasets import load_breast_cancer, load_wine
from sklearn.decomposition import PCA
from sklearn.preprocessing import StandardScaler

from harness.inmemory import InMemoryFederation
from jobs.pca.release import signed
from jobs.views import load_result

REL = 1e-6
NODES = ("alpha", "beta", "gamma")
MEASURES = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"]


def pca(study: str, nodes, filter: str | None = None, **spec) -> str:
    job = {"study": study, "type": "pca", "datasets": {n: study for n in nodes}, "pca": spec}
    if filter:
        job["filter"] = filter
    return job_yaml(**job)


def reference(frame: pd.DataFrame, columns: list[str], standardize: bool,
              n_components: int | None = None) -> PCA:
    x = frame[columns].dropna().to_numpy(dtype=float)
    if standardize:
        x = StandardScaler().fit_transform(x)
    return PCA(n_components=n_components).fit(x)


def assert_matches(result: dict, ref: PCA, frame: pd.DataFrame, columns: list[str]) -> None:
    rows = frame[columns].dropna()
    assert result["n"] == len(rows)
    np.testing.assert_allclose(result["explained_variance"], ref.explained_variance_,
                               rtol=REL)
    np.testing.assert_allclose(result["explained_variance_ratio"],
                               ref.explained_variance_ratio_, rtol=REL)
    np.testing.assert_allclose(result["cumulative_ratio"],
                               np.cumsum(ref.explained_variance_ratio_), rtol=REL)
    # loadings up to sign: both put under the released rule (largest |entry| positive)
    ours = np.asarray(result["loadings"])
    theirs = signed(ref.components_.T).T
    np.testing.assert_allclose(ours, theirs, rtol=REL, atol=REL * np.abs(theirs).max())
    big = np.abs(ours).argmax(axis=1)
    assert np.all(ours[np.arange(len(ours)), big] > 0)
    np.testing.assert_allclose(result["means"], rows.mean().to_numpy(), rtol=1e-9)


@pytest.mark.parametrize("standardize", [False, True])
def test_penguins_equal_sklearn_on_the_pooled_rows(fed, penguins, standardize, tmp_path):
    _, result = fed.run(pca("penguins", ISLANDS, columns=MEASURES, standardize=standardize))
    assert_matches(result, reference(penguins, MEASURES, standardize), penguins, MEASURES)
    assert sorted(result["meta"]["contributors"]) == sorted(ISLANDS)
    assert result["matrix"] == ("correlation" if standardize else "covariance")
    rows = penguins[MEASURES].dropna()
    if standardize:
        np.testing.assert_allclose(result["stds"], rows.std().to_numpy(), rtol=1e-9)
    else:
        assert "stds" not in result
    # nothing per row: no list as long as the rows (no scores)
    assert not [v for v in result.values() if isinstance(v, list) and len(v) >= len(rows)]
    res = load_result(result)
    assert list(res.components.columns) == MEASURES
    assert list(res.explained.columns) == ["eigenvalue", "ratio", "cumulative"]
    written = {p.name for p in res.write(tmp_path / "out")}
    assert {"components.csv", "explained.csv", "columns.csv", "scree.png", "loadings.png",
            "result.json", "report.html"} <= written
    for name in ("scree.png", "loadings.png"):
        assert (tmp_path / "out" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    back = pd.read_csv(tmp_path / "out" / "explained.csv")
    np.testing.assert_allclose(back.eigenvalue, result["explained_variance"], rtol=1e-12)


def test_fewer_components_and_a_filter(fed, penguins):
    _, result = fed.run(pca("penguins", ISLANDS, filter="sex == 'female'",
                            columns=MEASURES, n_components=2))
    female = penguins[penguins.sex == "female"]
    ref = reference(female, MEASURES, False, 2)
    assert_matches(result, ref, female, MEASURES)
    assert result["components"] == ["PC1", "PC2"]
    assert len(result["loadings"]) == 2


# -- bad input: one clear message, nothing charged -----------------------------------------
@pytest.mark.parametrize(("spec", "filter", "message"), [
    ({"columns": ["bill_length_mm", "wingspan"]}, None, "unknown column 'wingspan'"),
    ({"columns": ["bill_length_mm", "species"]}, None, "species"),
    ({"columns": ["bill_length_mm"]}, None, "pca.columns: List should have at least 2"),
    ({"columns": MEASURES, "n_components": 5}, None, "n_components (5) exceeds"),
    ({"columns": ["bill_length_mm", "bill_length_mm"]}, None, "duplicate columns"),
    ({"columns": ["body_mass_g", "flipper_length_mm"]}, "body_mass_g > 5800",
     "pca: too few residual degrees of freedom"),
])
def test_bad_input_gets_one_clear_message_and_charges_nothing(fed, spec, filter, message):
    result, refusal = attempt(fed, pca("penguins", ISLANDS, filter=filter, **spec))
    assert result is None
    assert message in refusal, refusal
    assert spent(fed) == []


def test_a_constant_column_cannot_be_standardized(fed):
    result, refusal = attempt(fed, pca("penguins", ISLANDS, filter="year == 2008",
                                       columns=["bill_length_mm", "year"], standardize=True))
    assert result is None
    assert "column 'year' has no variance" in refusal, refusal


# -- wine and breast cancer, split non-IID by a column's tertiles --------------------------
def _frames() -> dict[str, pd.DataFrame]:
    wine = load_wine(as_frame=True).frame.drop(columns="target")
    cancer = load_breast_cancer(as_frame=True).frame.drop(columns="target")
    cancer.columns = [c.replace(" ", "_") for c in cancer.columns]
    return {"wine": wine, "cancer": cancer}


SPLITS = {"wine": "alcohol", "cancer": "mean_radius"}


@pytest.fixture(scope="module")
def frames() -> dict[str, pd.DataFrame]:
    return _frames()


@pytest.fixture(scope="module")
def sk_fed(tmp_path_factory, frames, penguins_meta):
    fed = InMemoryFederation(tmp_path_factory.mktemp("pca"), list(NODES)).__enter__()
    for name, frame in frames.items():
        part = pd.qcut(frame[SPLITS[name]].rank(method="first"), 3, labels=False)
        meta = copy.deepcopy(penguins_meta)
        meta.update({"title": {"en": name}, "description": {"en": f"{name} (scikit-learn)."},
                     "fields": {c: {"description": c} for c in frame.columns}})
        meta = {k: v for k, v in meta.items() if k not in ("targets", "annotation", "splits")}
        for i, node in enumerate(NODES):
            fed.add_dataset(node, frame[part == i], meta, name)
        fed.create_study(name, {n: name for n in NODES})
    yield fed
    fed.__exit__(None, None, None)


@pytest.mark.parametrize("standardize", [False, True])
@pytest.mark.parametrize("name", ["wine", "cancer"])
def test_sklearn_sets_equal_sklearn_on_the_pooled_rows(sk_fed, frames, name, standardize):
    frame = frames[name]
    columns = list(frame.columns)
    _, result = sk_fed.run(pca(name, NODES, columns=columns, standardize=standardize),
                           timeout=120)
    assert_matches(result, reference(frame, columns, standardize), frame, columns)


# -- policy: a node's k, and DP -------------------------------------------------------------
def test_a_node_under_its_k_refuses_without_saying_how_many_rows(tmp_path, penguins,
                                                                 penguins_meta):
    fed = build(tmp_path, penguins, penguins_meta)
    try:
        torgersen = fed.nodes["torgersen"]
        torgersen.gate.policies.set(torgersen.registry.get("penguins").record,
                                    "min_cell_count: 100\n", "k.yaml", "officer")
        result, refusal = attempt(fed, pca("penguins", ISLANDS, columns=MEASURES))
        assert "node torgersen: pca: fewer than k=100 complete rows here" in refusal, refusal
        held = penguins[penguins.island == "Torgersen"]
        for count in (len(held), len(held[MEASURES].dropna())):
            assert str(count) not in refusal
        assert spent(fed) == []
    finally:
        fed.__exit__(None, None, None)


def test_where_policy_requires_dp_each_node_noises_its_sums(tmp_path, penguins_meta):
    """Three nodes, 60,000 generated rows of three bounded, correlated columns: each
    node clips to the job's bounds, noises its n, Σx, XᵀX at its own ε (ε = 1 each) and
    is charged once. The noise moves a covariance entry by ~6e-4 (Laplace of scale
    10·B²/ε on sums of 20,000 rows): the eigenvalues stay within 0.01 of scikit-learn's
    on the pooled rows, and differ from them."""
    rng = np.random.default_rng(5)
    z = rng.uniform(0, 1, (60_000, 1))
    frame = pd.DataFrame(np.hstack([z, 0.6 * z + 0.4 * rng.uniform(0, 1, (60_000, 2))]),
                         columns=["a", "b", "c"])  # every value in [0, 1]
    meta = copy.deepcopy(penguins_meta)
    meta.update({"title": {"en": "Generated"}, "targets": [], "splits": None,
                 "annotation": None,
                 "fields": {c: {"description": c} for c in frame.columns}})
    meta = {k: v for k, v in meta.items() if v is not None}
    nodes = ("alpha", "beta", "gamma")
    fed = InMemoryFederation(tmp_path, list(nodes)).__enter__()
    try:
        for i, node in enumerate(nodes):
            fed.add_dataset(node, frame.iloc[i::3], meta, "gen")
        fed.create_study("gen", {n: "gen" for n in nodes})
        require_dp(fed, "gen")
        bounds = {c: [0.0, 1.0] for c in frame.columns}
        result, refusal = attempt(fed, pca("gen", nodes, columns=["a", "b", "c"],
                                           dp={"bounds": bounds}))
        assert result is not None, refusal
        assert sorted(result["privacy"]) == sorted(nodes)
        assert result["privacy"]["alpha"]["clipping_bounds"] == bounds
        assert "noise" in result["privacy_note"]
        assert sorted((s.dataset_id.split(":")[2], s.epsilon) for s in spent(fed)
                      if s.researcher is None) == [(n, 1.0) for n in nodes]
        ref = reference(frame, ["a", "b", "c"], False)
        got = np.array(result["explained_variance"])
        np.testing.assert_allclose(got, ref.explained_variance_, atol=0.01)
        assert not np.allclose(got, ref.explained_variance_, rtol=1e-9, atol=0)
        # without bounds (none declared either) the job is refused before a row is read
        result, refusal = attempt(fed, pca("gen", nodes, columns=["a", "b"], dp={}))
        assert result is None
        assert "pca.dp.bounds: differential privacy needs clipping bounds for 'a'" \
            in refusal, refusal
    finally:
        fed.__exit__(None, None, None)
