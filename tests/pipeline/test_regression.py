"""``regression`` through the real pipeline (in-memory link: real driver, gate, release
path, BFV), each fit compared with statsmodels on the pooled rows computed here.

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


# -- the cars, split by origin: the first example ---------------------------------
CARS = "Miles_per_Gallon ~ Weight_in_lbs + Horsepower + Displacement + C(Cylinders)"


def test_cars_split_by_origin_equal_statsmodels_on_the_pooled_cars(tmp_path, penguins_meta):
    """Three platforms (USA, Europe, Japan) hold their own cars; the cylinder counts
    differ by platform (8 only in the USA, 3 only in Japan, 5 only in Europe), so the
    vocabulary must be federated for the dummies to line up."""
    from vega_datasets import data as vega

    cars = vega.cars().drop(columns=["Name", "Year"])
    fed = InMemoryFederation(tmp_path, ["usa", "europe", "japan"]).__enter__()
    try:
        meta = _meta(penguins_meta, "cars", list(cars.columns))
        for node, origin in (("usa", "USA"), ("europe", "Europe"), ("japan", "Japan")):
            fed.add_dataset(node, cars[cars.Origin == origin], meta, "cars")
        fed.create_study("cars", {n: "cars" for n in ("usa", "europe", "japan")})
        _, result = fed.run(regression("cars", ("usa", "europe", "japan"), formula=CARS))
    finally:
        fed.__exit__(None, None, None)
    ref = smf.ols(CARS, cars).fit()
    assert_matches(result, ref)
    assert result["fit"]["r_squared"] == pytest.approx(ref.rsquared, rel=1e-9)
    assert result["model"]["reference_levels"] == {"Cylinders": "3"}


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
    fair["log_years"] = np.log(fair.yrs_married)
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


RATE = "affairs ~ rate_marriage + age + religious + C(occupation)"


def test_poisson_rates_with_an_exposure_equal_statsmodels(glm_fed, glm_data):
    """Affairs per year of marriage: the log of the exposure enters the linear predictor
    with coefficient 1 at each node (statsmodels' ``exposure=``)."""
    fair = glm_data["fair"]
    assert (fair.yrs_married > 0).all()
    _, result = glm_fed.run(regression("fair", NODES, formula=RATE, family="poisson",
                                       exposure="yrs_married"), timeout=300)
    ref = smf.glm(RATE, fair, family=sm.families.Poisson(),
                  exposure=fair.yrs_married).fit(tol=TIGHT)
    assert_matches(result, ref)
    assert result["fit"]["deviance"] == pytest.approx(ref.deviance, rel=1e-8)
    assert "null_deviance" not in result["fit"]  # the null fit with an offset: not made
    assert result["model"]["exposure"] == "yrs_married"
    # an offset column is the same model with log(exposure) precomputed
    _, again = glm_fed.run(regression("fair", NODES, formula=RATE, family="poisson",
                                      offset="log_years"), timeout=300)
    assert_matches(again, ref)


@pytest.mark.parametrize(("spec", "message"), [
    ({"formula": "affairs ~ age", "offset": "log_years"}, "offset and exposure apply to GLMs"),
    ({"formula": "affair ~ age", "family": "binomial", "exposure": "yrs_married"},
     "exposure needs a log link"),
    ({"formula": "affairs ~ age", "family": "poisson", "exposure": "age"},
     "'age' is both an offset and a model column"),
    ({"formula": "affairs ~ age", "family": "poisson", "exposure": "children"},
     "the exposure 'children' must be positive in every complete row"),
])
def test_bad_offsets_get_one_clear_message(glm_fed, spec, message):
    result, refusal = attempt(glm_fed, regression("fair", NODES, **spec))
    assert result is None
    assert message in refusal, refusal
    assert spent(glm_fed) == []


GAMMA = "body_mass_g ~ flipper_length_mm + bill_length_mm + C(species) + C(sex)"


def test_gamma_with_log_link_equals_statsmodels_glm_on_the_pooled_rows(fed, penguins):
    """A positive, skewed measurement: Gamma with the log link, its dispersion estimated
    (Pearson χ² / residual df), so the standard errors and the log-likelihood carry it."""
    _, result = fed.run(regression("penguins", ISLANDS, formula=GAMMA, family="gamma"),
                        timeout=300)
    family = sm.families.Gamma(link=sm.families.links.Log())
    ref = smf.glm(GAMMA, penguins.dropna(subset=PENGUIN_TERMS), family=family).fit(tol=TIGHT)
    assert_matches(result, ref)
    fit = result["fit"]
    assert fit["scale"] == pytest.approx(ref.scale, rel=1e-8)
    assert fit["deviance"] == pytest.approx(ref.deviance, rel=1e-8)
    assert fit["null_deviance"] == pytest.approx(ref.null_deviance, rel=1e-8)
    assert result["model"]["link"] == "log"


def test_a_gamma_response_that_is_not_positive_is_refused(glm_fed, glm_data):
    assert (glm_data["fair"].affairs == 0).any()  # most couples: no affair
    result, refusal = attempt(glm_fed, regression("fair", NODES, formula="affairs ~ age",
                                                  family="gamma"))
    assert result is None
    assert "a Gamma response must be positive in every row" in refusal, refusal
    assert spent(glm_fed) == []


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


def test_where_policy_requires_dp_the_nodes_answer_with_noise_at_their_own_epsilon(
        tmp_path, penguins, penguins_meta):
    """A DP cell answers with noisy sums at its own ε. On 333 penguins at ε = 1 the noise
    is of the order of the residual sum of squares, so the fit is often invalid: the
    release then says so (and the ε stays spent: the nodes released their noisy sums,
    and giving it back would tell what the noise hid); else it is a noisy fit with every
    node's mechanism report."""
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
            "penguins", ISLANDS, formula="body_mass_g ~ flipper_length_mm + C(sex)",
            dp={"bounds": {"body_mass_g": [2500, 6500], "flipper_length_mm": [170, 235]}}))
        if result is None:
            assert "the noisy sufficient statistics give no valid fit" in refusal, refusal
        else:
            assert sorted(result["privacy"]) == sorted(ISLANDS)
            assert result["fit"]["scale"] > 0
        assert sorted((s.dataset_id.split(":")[2], s.epsilon) for s in spent(fed)
                      if s.researcher is None) == [(n, 1.0) for n in sorted(ISLANDS)]
    finally:
        fed.__exit__(None, None, None)
