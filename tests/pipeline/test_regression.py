"""``regression`` through the real pipeline (in-memory link: real driver, gate, release
path, CKKS), each fit compared with statsmodels on the pooled rows computed here.

Data shipped in PyPI packages, split across three nodes non-IID: the penguins by island
(OLS with categoricals), statsmodels' ``fair`` (logistic: any affair, split by years
married) and ``randhie`` (Poisson: doctor visits, split by income)."""

from __future__ import annotations

import copy
import time

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
import statsmodels.datasets as sd
import statsmodels.formula.api as smf
from inmemory_cases import ISLANDS, attempt, job_yaml, spent

from harness.inmemory import InMemoryFederation
from jobs.views import load_result

REL = 1e-6  # the bar: coefficients and standard errors to 1e-6 relative
NODES = ("alpha", "beta", "gamma")
PENGUIN_TERMS = ["body_mass_g", "flipper_length_mm", "bill_length_mm", "bill_depth_mm",
                 "species", "sex"]


def regression(study: str, nodes, filter: str | None = None, **spec) -> str:
    job = {"study": study, "type": "regression", "datasets": {n: study for n in nodes},
           "regression": spec}
    if filter:
        job["filter"] = filter
    return job_yaml(**job)


def assert_matches(result: dict, ref) -> pd.DataFrame:
    """Coefficients and standard errors equal statsmodels' to REL, by term name."""
    res = load_result(result)
    coef = res.coefficients
    assert sorted(coef.index) == sorted(ref.params.index)
    est = coef.estimate.reindex(ref.params.index)
    se = coef.std_error.reindex(ref.params.index)
    np.testing.assert_allclose(est, ref.params, rtol=REL)
    np.testing.assert_allclose(se, ref.bse, rtol=REL)
    np.testing.assert_allclose(coef.p_value.reindex(ref.params.index), ref.pvalues,
                               rtol=1e-5, atol=1e-12)
    ci = ref.conf_int()
    np.testing.assert_allclose(coef.ci_low.reindex(ref.params.index), ci[0], rtol=1e-5)
    np.testing.assert_allclose(coef.ci_high.reindex(ref.params.index), ci[1], rtol=1e-5)
    assert result["fit"]["nobs"] == int(ref.nobs)
    assert result["fit"]["df_resid"] == pytest.approx(ref.df_resid)
    assert result["fit"]["log_likelihood"] == pytest.approx(ref.llf, rel=1e-8)
    assert result["fit"]["aic"] == pytest.approx(ref.aic, rel=1e-8)
    return coef


def _walk(value, key=""):
    yield key, value
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _walk(v, k)
    elif isinstance(value, list):
        for v in value:
            yield from _walk(v, key)


# -- OLS on the penguins (the module's federation: three islands) --------------------------
def test_ols_with_categoricals_equals_statsmodels_on_the_pooled_rows(fed, penguins,
                                                                      tmp_path):
    formula = ("body_mass_g ~ flipper_length_mm + bill_length_mm + bill_depth_mm"
               " + C(species) + C(sex)")
    _, result = fed.run(regression("penguins", ISLANDS, formula=formula))
    ref = smf.ols(formula, penguins.dropna(subset=PENGUIN_TERMS)).fit()
    assert_matches(result, ref)
    fit = result["fit"]
    assert fit["r_squared"] == pytest.approx(ref.rsquared, rel=1e-9)
    assert fit["r_squared_adj"] == pytest.approx(ref.rsquared_adj, rel=1e-9)
    assert fit["f_statistic"] == pytest.approx(ref.fvalue, rel=1e-7)
    assert fit["scale"] == pytest.approx(ref.scale, rel=1e-8)
    assert fit["bic"] == pytest.approx(ref.bic, rel=1e-8)
    assert result["model"]["reference_levels"] == {"species": "Adelie", "sex": "female"}
    assert set(result) >= {"coefficients", "fit", "model", "meta"}
    # nothing per row is released: no residuals, fitted values, or any per-row list
    assert not {"residuals", "fitted_values", "resid", "mu"} & set(result)
    assert not [k for k, v in _walk(result) if isinstance(v, list) and len(v) >= fit["nobs"]]
    # the researcher's files
    written = load_result(result).write(tmp_path / "out")
    names = {p.name for p in written}
    assert {"coefficients.csv", "fit.csv", "forest.png", "report.html"} <= names
    assert (tmp_path / "out" / "forest.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    back = pd.read_csv(tmp_path / "out" / "coefficients.csv").set_index("term")
    np.testing.assert_allclose(back.estimate.reindex(ref.params.index), ref.params, rtol=1e-9)


def test_ols_from_explicit_lists_without_intercept(fed, penguins):
    _, result = fed.run(regression("penguins", ISLANDS, y="body_mass_g",
                                   x=["flipper_length_mm", "C(species)"], intercept=False))
    ref = smf.ols("body_mass_g ~ flipper_length_mm + C(species) - 1",
                  penguins.dropna(subset=["body_mass_g", "flipper_length_mm"])).fit()
    assert_matches(result, ref)
    assert result["fit"]["r_squared"] == pytest.approx(ref.rsquared, rel=1e-9)


def test_ols_with_a_filter(fed, penguins):
    formula = "flipper_length_mm ~ body_mass_g + C(sex)"
    _, result = fed.run(regression("penguins", ISLANDS, filter="year >= 2008",
                                   formula=formula))
    ref = smf.ols(formula, penguins[penguins.year >= 2008].dropna(
        subset=["flipper_length_mm", "body_mass_g", "sex"])).fit()
    assert_matches(result, ref)


# -- bad input on the penguins: one clear message, nothing charged ---------------------------
@pytest.mark.parametrize(("spec", "message"), [
    ({"formula": "body_mass_g ~ wingspan"}, "unknown column 'wingspan'"),
    ({"formula": "body_mass_g ~ flipper_length_mm + species"},
     "predictor 'species' is not numeric; write C(species)"),
    ({"formula": "body_mass_g ~ flipper_length_mm * bill_length_mm"}, "interaction"),
    ({"formula": "body_mass_g ~ log(flipper_length_mm)"}, "not supported"),
    ({"formula": "body_mass_g ~ flipper_length_mm", "family": "binomial"},
     "binomial response must be 0 or 1"),
])
def test_bad_input_gets_one_clear_message_and_charges_nothing(fed, spec, message):
    result, refusal = attempt(fed, regression("penguins", ISLANDS, **spec))
    assert result is None
    assert message in refusal, refusal
    assert spent(fed) == []


def test_a_model_the_disclosure_rules_forbid_is_refused_at_the_node(fed):
    # Torgersen's 2007 penguins: too few rows for 7 parameters (saturation rule, 0.33)
    formula = ("body_mass_g ~ flipper_length_mm + bill_length_mm + bill_depth_mm"
               " + C(species) + C(sex)")
    result, refusal = attempt(fed, regression("penguins", ISLANDS, filter="year == 2007",
                                              formula=formula))
    assert result is None
    assert "node torgersen: regression: 7 parameters are too many" in refusal, refusal
    assert spent(fed) == []


# -- logistic and Poisson on statsmodels' data sets ------------------------------------------
def _meta(base: dict, title: str, columns: list[str]) -> dict:
    meta = copy.deepcopy(base)
    meta.update({"title": {"en": title}, "description": {"en": f"{title} (statsmodels)."},
                 "targets": [], "annotation": None, "splits": None,
                 "fields": {c: {"description": c} for c in columns}})
    return {k: v for k, v in meta.items() if v is not None}


@pytest.fixture(scope="module")
def glm_data() -> dict[str, pd.DataFrame]:
    fair = sd.fair.load_pandas().data
    fair["affair"] = (fair.affairs > 0).astype(float)
    fair["age_months"] = fair.age * 12  # aliased with age: a singular design
    randhie = sd.randhie.load_pandas().data
    return {"fair": fair, "randhie": randhie}


@pytest.fixture(scope="module")
def glm_fed(tmp_path_factory, glm_data, penguins_meta):
    """alpha, beta, gamma: fair split by years married, randhie by income (non-IID)."""
    fed = InMemoryFederation(tmp_path_factory.mktemp("glm"), list(NODES)).__enter__()
    splits = {"fair": "yrs_married", "randhie": "lpi"}
    for name, frame in glm_data.items():
        part = pd.qcut(frame[splits[name]].rank(method="first"), 3, labels=False)
        meta = _meta(penguins_meta, name, list(frame.columns))
        for i, node in enumerate(NODES):
            fed.add_dataset(node, frame[part == i], meta, name)
        fed.create_study(name, {n: name for n in NODES})
    yield fed
    fed.__exit__(None, None, None)


# statsmodels' IRLS stops at a deviance change of 1e-8 and reports the covariance of its
# last weighted least squares, i.e. at the iterate before its final coefficients: on
# `fair` its default standard errors sit 4.8e-6 (relative) from its own converged ones.
# The federated fit iterates to convergence, so it is compared with statsmodels run to
# convergence too (tol 1e-13; its coefficients change by 2e-10 only).
TIGHT = 1e-13
LOGIT = ("affair ~ rate_marriage + age + yrs_married + children + religious + educ"
         " + C(occupation)")
POISSON = "mdvis ~ lncoins + idp + lpi + fmde + physlm + disea + hlthg + hlthf + hlthp"


def test_logistic_equals_statsmodels_glm_on_the_pooled_rows(glm_fed, glm_data):
    t0 = time.monotonic()
    _, result = glm_fed.run(regression("fair", NODES, formula=LOGIT, family="binomial"),
                            timeout=300)
    ref = smf.glm(LOGIT, glm_data["fair"], family=sm.families.Binomial()).fit(tol=TIGHT)
    assert_matches(result, ref)
    fit = result["fit"]
    assert fit["deviance"] == pytest.approx(ref.deviance, rel=1e-8)
    assert fit["null_deviance"] == pytest.approx(ref.null_deviance, rel=1e-8)
    assert fit["pearson_chi2"] == pytest.approx(ref.pearson_chi2, rel=1e-6)
    assert 1 <= fit["iterations"] <= 25
    assert result["model"]["link"] == "logit"
    assert time.monotonic() - t0 < 300


def test_poisson_equals_statsmodels_glm_on_the_pooled_rows(glm_fed, glm_data):
    _, result = glm_fed.run(regression("randhie", NODES, formula=POISSON, family="poisson"),
                            timeout=300)
    ref = smf.glm(POISSON, glm_data["randhie"], family=sm.families.Poisson()).fit(tol=TIGHT)
    assert_matches(result, ref)
    assert result["fit"]["deviance"] == pytest.approx(ref.deviance, rel=1e-8)
    assert result["fit"]["null_deviance"] == pytest.approx(ref.null_deviance, rel=1e-8)


def test_perfect_separation_is_one_clear_message(glm_fed):
    result, refusal = attempt(glm_fed, regression("fair", NODES, formula="affair ~ affairs",
                                                  family="binomial"))
    assert result is None
    assert "perfect separation" in refusal, refusal
    assert spent(glm_fed) == []


def test_a_singular_design_names_the_aliased_column(glm_fed):
    result, refusal = attempt(glm_fed, regression("fair", NODES,
                                                  formula="affair ~ age + age_months"))
    assert result is None
    assert "the design is singular: age_months" in refusal, refusal
    assert spent(glm_fed) == []


def test_where_policy_requires_dp_the_node_refuses_and_charges_nothing(tmp_path, penguins,
                                                                       penguins_meta):
    """Noisy sufficient statistics are not implemented: a DP cell refuses, clearly."""
    fed = InMemoryFederation(tmp_path, list(ISLANDS)).__enter__()
    try:
        for node, island in ISLANDS.items():
            fed.add_dataset(node, penguins[penguins.island == island], penguins_meta,
                            "penguins")
            core = fed.nodes[node]
            core.gate.policies.set(core.registry.get("penguins").record,
                                   "dp: {required: true, epsilon_per_query: 1.0, "
                                   "annual_budget: 20}\n", "dp.yaml", "officer")
        fed.create_study("penguins", {n: "penguins" for n in ISLANDS},
                         min_nodes=len(ISLANDS))
        result, refusal = attempt(fed, regression(
            "penguins", ISLANDS, formula="body_mass_g ~ flipper_length_mm"))
        assert result is None
        assert "regression is not available where policy requires differential privacy" \
            in refusal, refusal
        assert spent(fed) == []
    finally:
        fed.__exit__(None, None, None)
