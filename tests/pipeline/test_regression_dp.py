"""``regression`` where the nodes' policy requires DP, through the real pipeline (in-memory
link: real driver, gate, release path, BFV, OpenDP): noisy sufficient statistics for a
linear model, refusals for what DP cannot cover, and what the noise must hide.

The data is made here: three nodes with different predictor distributions (non-IID),
75,000 rows, so that the noise at ε = 1 is small beside the sums and the noisy fit can
be held to statsmodels' on the pooled (clipped) rows within a bound the noise scale
gives."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf
import yaml
from inmemory_cases import attempt, job_yaml

from harness.inmemory import InMemoryFederation
from jobs.regression import dp
from jobs.regression.design import Layout
from jobs.regression.formula import parse_formula
from jobs.views import load_result

NODES = ("alpha", "beta", "gamma")
SIZES = (20_000, 30_000, 25_000)
GROUPS = ["a", "b", "c"]
K = 5  # G2 / CONDITIONAL
EPSILON = 1.0
DP_POLICY = f"dp: {{required: true, epsilon_per_query: {EPSILON}, annual_budget: 20}}\n"
FORMULA = "y ~ x1 + x2 + C(grp)"
BOUNDS = {"y": [-2.0, 5.0], "x1": [0.0, 1.0], "x2": [0.0, 1.0]}


def table(seed: int = 11) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    parts = []
    for i, (node, n) in enumerate(zip(NODES, SIZES, strict=True)):
        x1 = rng.beta(2 + 2 * i, 2, n)          # shifted towards 1 at later nodes
        x2 = rng.uniform(0, 1, n)
        grp = rng.choice(GROUPS, n, p=np.roll([0.6, 0.3, 0.1], i))
        y = 1 + 2 * x1 - x2 + 0.5 * (grp == "b") - 0.8 * (grp == "c") \
            + rng.normal(0, 0.3, n)
        parts.append(pd.DataFrame({"x1": x1, "x2": x2, "grp": grp, "y": y, "node": node}))
    return pd.concat(parts, ignore_index=True)


def meta(penguins_meta: dict, *, enum: bool = True) -> dict:
    m = copy.deepcopy(penguins_meta)
    m.update({"title": {"en": "Synthetic measurements"}, "security_grade": "G2",
              "sharing_category": "CONDITIONAL",
              "conditions_of_use": [{"code": "no_reidentification",
                                     "text": "Aggregate analyses inside studies only."}],
              "description": {"en": "Two predictors, a group and a response."},
              "targets": [], "splits": None, "annotation": None,
              "fields": {"x1": {"description": "x1"}, "x2": {"description": "x2"},
                         "grp": {"description": "group",
                                 **({"constraints": {"enum": GROUPS}} if enum else {})},
                         "y": {"description": "response"}, "node": {"description": "n"}}})
    return {k: v for k, v in m.items() if v is not None}


def federation(root, frame: pd.DataFrame, metadata: dict,
               accept_violations: bool = False) -> InMemoryFederation:
    """``accept_violations``: a planted undeclared level is registered anyway, as an
    officer may with ``--accept-violations``; the release must still ignore it."""
    fed = InMemoryFederation(root, list(NODES)).__enter__()
    for node in NODES:
        fed.add_dataset(node, frame[frame.node == node], metadata, "synth",
                        accept_violations=accept_violations)
        core = fed.nodes[node]
        core.gate.policies.set(core.registry.get("synth").record, DP_POLICY, "dp.yaml",
                               "officer")
    fed.create_study("synth", {n: "synth" for n in NODES}, min_nodes=len(NODES))
    return fed


def job(**spec) -> str:
    spec.setdefault("formula", FORMULA)
    return job_yaml(study="synth", type="regression", datasets={n: "synth" for n in NODES},
                    regression=spec)


def charged(fed: InMemoryFederation) -> dict[str, float]:
    return {n: sum(s.epsilon for s in core.gate.ledger.spent() if s.researcher is None)
            for n, core in fed.nodes.items()}


def noisy_fit_spread(clipped: pd.DataFrame, blocks, nodes: int, draws: int = 400):
    """The standard deviation of each OLS coefficient fitted from the pooled sufficient
    statistics with every block's Laplace noise added at each node, by term."""
    x = np.column_stack([np.ones(len(clipped)), clipped.x1, clipped.x2,
                         clipped.grp == "b", clipped.grp == "c"]).astype(float)
    y = clipped.y.to_numpy()
    p = x.shape[1]
    upper = np.triu_indices(p)
    scales = np.array([b.sensitivity * len(blocks) / EPSILON for b in blocks])
    rng = np.random.default_rng(3)
    fits = []
    for _ in range(draws):
        noise = rng.laplace(0, scales, (nodes, scales.size)).sum(axis=0)
        xtx = np.zeros((p, p))
        xtx[upper] = (x.T @ x)[upper] + noise[3:3 + len(upper[0])]
        xtx = xtx + np.triu(xtx, 1).T
        fits.append(np.linalg.solve(xtx, x.T @ y + noise[3 + len(upper[0]):]))
    return pd.Series(np.std(fits, axis=0),
                     index=["Intercept", "x1", "x2", "C(grp)[T.b]", "C(grp)[T.c]"])


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return table()


@pytest.fixture(scope="module")
def dpfed(tmp_path_factory, frame, penguins_meta):
    fed = federation(tmp_path_factory.mktemp("regdp"), frame, meta(penguins_meta))
    yield fed
    fed.__exit__(None, None, None)


def test_dp_ols_is_statsmodels_on_the_pooled_clipped_rows_within_the_noise(dpfed, frame):
    before = charged(dpfed)
    result, refusal = attempt(dpfed, job(dp={"bounds": BOUNDS}))
    assert result is not None, refusal
    after = charged(dpfed)
    assert {n: after[n] - before[n] for n in NODES} == pytest.approx(
        {n: EPSILON for n in NODES})  # each node's own per-query ε, charged once
    assert sorted(result["privacy"]) == sorted(NODES)  # every node added its own noise
    report = result["privacy"]["alpha"]
    model = parse_formula(FORMULA)
    layout = Layout.build(model, {"grp": GROUPS})
    blocks = dp.blocks(model, layout, {c: tuple(b) for c, b in BOUNDS.items()})
    assert report["epsilon"] == EPSILON and len(report["blocks"]) == len(blocks)
    assert report["clipping_bounds"] == BOUNDS
    assert "noise" in result["privacy_note"]

    clipped = frame.assign(**{c: frame[c].clip(*b) for c, b in BOUNDS.items()})
    ref = smf.ols(FORMULA, clipped).fit()
    coef = load_result(result).coefficients.reindex(ref.params.index)
    # how far the noise moves each coefficient: the same Laplace scales (sensitivity ·
    # blocks / ε, at each of the three nodes) drawn 400 times on the pooled sums here
    spread = noisy_fit_spread(clipped, blocks, len(NODES)).reindex(ref.params.index)
    assert ((coef.estimate - ref.params).abs() < 6 * spread).all(), (coef.estimate,
                                                                      ref.params, spread)
    assert not np.allclose(coef.estimate, ref.params, rtol=1e-9, atol=0)  # it is noisy
    assert abs(result["fit"]["nobs"] - ref.nobs) < 200  # the count is noisy too


def test_glm_under_dp_is_refused_in_the_spec_and_at_the_node(dpfed):
    before = charged(dpfed)
    result, refusal = attempt(dpfed, job(formula="y ~ x1", family="poisson",
                                         dp={"bounds": BOUNDS}))
    assert result is None
    assert "differential privacy is available for gaussian models only" in refusal
    # without a dp section the nodes' policy still requires DP: each refuses
    result, refusal = attempt(dpfed, job(formula="y ~ x1", family="poisson"))
    assert result is None and refusal, refusal
    assert charged(dpfed) == before


@pytest.mark.parametrize(("spec", "message"), [
    ({"dp": {}}, "regression.dp.bounds: differential privacy needs clipping bounds for 'y'"),
    ({"dp": {"bounds": {"y": [1, 0], "x1": [0, 1], "x2": [0, 1]}}},
     "regression.dp.bounds.y: minimum must be below maximum"),
])
def test_dp_without_usable_bounds_gets_one_message_and_charges_nothing(dpfed, spec, message):
    before = charged(dpfed)
    result, refusal = attempt(dpfed, job(**spec))
    assert result is None
    assert message in refusal, refusal
    assert charged(dpfed) == before


def test_under_dp_levels_are_the_declared_ones_whatever_the_rows_hold(tmp_path, frame,
                                                                       penguins_meta):
    """An undeclared level planted at one node (one person's value) must change nothing
    in the released layout: no term, no refusal, no count of it."""
    planted = frame.copy()
    planted.loc[planted.index[planted.node == "beta"][7], "grp"] = "zeta"
    fed = federation(tmp_path, planted, meta(penguins_meta), accept_violations=True)
    try:
        result, refusal = attempt(fed, job(dp={"bounds": BOUNDS}))
    finally:
        fed.__exit__(None, None, None)
    assert result is not None, refusal
    terms = [c["term"] for c in result["coefficients"]]
    assert terms == ["Intercept", "x1", "x2", "C(grp)[T.b]", "C(grp)[T.c]"]
    assert "zeta" not in yaml.safe_dump(result)


def test_a_categorical_without_declared_levels_is_refused_under_dp(tmp_path, frame,
                                                                     penguins_meta):
    fed = federation(tmp_path, frame, meta(penguins_meta, enum=False))
    try:
        result, refusal = attempt(fed, job(dp={"bounds": BOUNDS}))
        assert result is None
        assert "C(grp) under differential privacy needs the column's levels declared" \
            in refusal, refusal
        assert charged(fed) == {n: 0 for n in NODES}
    finally:
        fed.__exit__(None, None, None)


def test_under_dp_a_node_with_few_rows_does_not_refuse_on_its_count(tmp_path, frame,
                                                                     penguins_meta):
    """Exact regression refuses at a node with 0 < n < k rows: a refusal that depends on
    the rows. Under DP whether a node answers must not depend on them: a filter leaving
    beta fewer than k rows changes only the noisy sums."""
    beta = frame[frame.node == "beta"]
    cut = next(t / 100 for t in range(1, 40) if 0 < (beta.x1 < t / 100).sum() < K)
    spec = yaml.safe_load(job(formula="y ~ x1 + x2", dp={"bounds": BOUNDS}))
    spec["filter"] = f"x1 < {cut}"
    # a federation of its own: the researcher's refusals above opened an alert (a run of
    # refused queries goes to the officer), which would hold this job for approval
    fed = federation(tmp_path, frame, meta(penguins_meta))
    try:
        result, refusal = attempt(fed, yaml.safe_dump(spec))
    finally:
        fed.__exit__(None, None, None)
    assert "fewer than k" not in refusal, refusal
    assert result is not None or "noisy sufficient statistics" in refusal, refusal
