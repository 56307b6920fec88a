"""``survival`` through the real pipeline (in-memory link: real driver, gate, release path,
BFV), each curve and test compared with scikit-survival on the pooled rows computed
here, binned to the grid the job released (each time replaced by the right edge of its
released bin, a time beyond the last edge censored there).

Data bundled with scikit-survival, split across three nodes non-IID: GBSG2 (breast
cancer recurrence, split by age), the veterans' lung cancer trial (split by Karnofsky
score) and WHAS500 (heart attack survival, split by age). The
nodes' policy sets k = 10, so the release node merges bins.

The Cox models are compared with statsmodels' ``PHReg(ties="breslow")`` (coefficients,
standard errors, log partial likelihood) and scikit-survival's
``CoxPHSurvivalAnalysis(ties="breslow")`` (coefficients), fitted here on the pooled rows
with each time replaced by its released bin's right edge, so the ties are the job's."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
from inmemory_cases import ISLANDS, attempt, build, job_yaml, require_dp, spent
from sksurv.compare import compare_survival
from sksurv.datasets import load_gbsg2, load_veterans_lung_cancer, load_whas500
from sksurv.linear_model import CoxPHSurvivalAnalysis
from sksurv.nonparametric import kaplan_meier_estimator
from statsmodels.duration.hazard_regression import PHReg

from harness.inmemory import InMemoryFederation
from jobs.views import load_result

NODES = ("alpha", "beta", "gamma")
K = 10
TOL = 1e-9


def survival(study: str, nodes=NODES, filter: str | None = None, **spec) -> str:
    """A survival job over ``nodes`` (``filter`` is the job's, the rest its section)."""
    job = {"study": study, "type": "survival", "datasets": {n: study for n in nodes},
           "survival": spec}
    if filter:
        job["filter"] = filter
    return job_yaml(**job)


# -- the data -----------------------------------------------------------------------------
def _frame(loader, time: str, event: str, split: str) -> pd.DataFrame:
    x, y = loader()
    df = x.copy()
    for col in df.columns:
        if isinstance(df[col].dtype, pd.CategoricalDtype):
            df[col] = df[col].astype(str)
    df[time] = y[y.dtype.names[1]]
    df[event] = y[y.dtype.names[0]].astype(int)
    df["part"] = pd.qcut(df[split].rank(method="first"), 3, labels=False)
    return df


@pytest.fixture(scope="module")
def data() -> dict[str, pd.DataFrame]:
    whas = _frame(load_whas500, "lenfol", "fstat", "age")
    gbsg2 = _frame(load_gbsg2, "time", "cens", "age")
    gbsg2["age_months"] = gbsg2.age * 12  # a covariate aliased with age
    return {"gbsg2": gbsg2,
            "veteran": _frame(load_veterans_lung_cancer, "days", "died", "Karnofsky_score"),
            "whas500": whas}


RANGES = {"gbsg2": ("time", 0, 2700), "veteran": ("days", 0, 1000),
          "whas500": ("lenfol", 0, 2400)}


ENUMS = {"gbsg2": {"menostat": ["Pre", "Post"], "tgrade": ["I", "II", "III"]},
         "veteran": {"Celltype": ["adeno", "large", "smallcell", "squamous"],
                     "Treatment": ["standard", "test"]},
         "whas500": {"gender": [0, 1]}}


def _meta(base: dict, title: str, frame: pd.DataFrame) -> dict:
    meta = copy.deepcopy(base)
    time, lo, hi = RANGES[title]
    fields = {c: {"description": c} for c in frame.columns if c != "part"}
    for col, levels in ENUMS[title].items():  # the declared categories
        fields[col]["constraints"] = {"enum": levels}
    fields[time] = {"description": "days to the event or to censoring", "unit": "d",
                    "constraints": {"minimum": lo, "maximum": hi}}
    meta.update({"title": {"en": title}, "description": {"en": f"{title} (scikit-survival)."},
                 "targets": [], "annotation": None, "splits": None, "fields": fields})
    return {k: v for k, v in meta.items() if v is not None}


@pytest.fixture(scope="module")
def sfed(tmp_path_factory, data, penguins_meta):
    """alpha, beta, gamma: each data set split into thirds by its split column; k = 10."""
    fed = InMemoryFederation(tmp_path_factory.mktemp("survival"), list(NODES)).__enter__()
    for name, frame in data.items():
        meta = _meta(penguins_meta, name, frame)
        for i, node in enumerate(NODES):
            fed.add_dataset(node, frame[frame.part == i].drop(columns="part"), meta, name)
            core = fed.nodes[node]
            core.gate.policies.set(core.registry.get(name).record, f"min_cell_count: {K}\n",
                                   "k.yaml", "officer")
        fed.create_study(name, {n: name for n in NODES})
    yield fed
    fed.__exit__(None, None, None)


# -- the pooled reference, on the released grid -------------------------------------------
def binned(result: dict, time: np.ndarray, event: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each time as the right edge of its released bin; beyond the last edge: censored."""
    right = np.asarray(result["model"]["edges"][1:])
    idx = np.minimum(np.searchsorted(right, time, side="left"), right.size - 1)
    return right[idx], event.astype(bool) & (time <= right[-1])


def assert_curve(curve: pd.DataFrame, time: np.ndarray, event: np.ndarray, level: float):
    """The released curve equals scikit-survival's on the binned rows, at every released
    time (between the library's times the step holds its value)."""
    t, s, ci = kaplan_meier_estimator(event, time, conf_type="log-log", conf_level=level)
    at = np.searchsorted(t, curve.time.to_numpy(), side="right") - 1
    ref_s = np.where(at >= 0, s[np.maximum(at, 0)], 1.0)
    np.testing.assert_allclose(curve.survival, ref_s, rtol=TOL, atol=TOL)
    for i, col in enumerate(("ci_low", "ci_high")):
        ref = np.where(at >= 0, ci[i][np.maximum(at, 0)], 1.0)
        np.testing.assert_allclose(curve[col], ref, rtol=TOL, atol=TOL)
    times = curve.time.to_numpy()
    np.testing.assert_array_equal(curve.at_risk, [(time >= x).sum() for x in times])
    np.testing.assert_array_equal(curve.events, [(event & (time == x)).sum() for x in times])
    np.testing.assert_array_equal(curve.censored, [(~event & (time == x)).sum() for x in times])
    below = np.flatnonzero(s <= 0.5)
    return float(t[below[0]]) if below.size else None


def assert_rule(curve: pd.DataFrame, k: int) -> None:
    for col in ("events", "censored"):
        assert ((curve[col] == 0) | (curve[col] >= k)).all(), curve


def assert_matches(result: dict, frame: pd.DataFrame, time: str, event: str | None,
                   groups: str | None) -> None:
    res = load_result(result)
    ev = frame[event].to_numpy() if event else np.ones(len(frame), dtype=bool)
    t, e = binned(result, frame[time].to_numpy(dtype=float), ev)
    level = result["model"]["confidence"]
    medians = res.medians.set_index("group")["median"].astype(object)
    medians = medians.where(medians.notna(), None)  # not reached
    overall = res.curve[res.curve.group == "(all)"]
    assert overall.at_risk.iloc[0] == len(frame)
    assert medians["(all)"] == assert_curve(overall, t, e, level)
    assert_rule(res.curve, result["meta"]["k"])
    if groups is None:
        assert res.groups == ["(all)"] and res.logrank.empty
        return
    # the node reads a column of yes / no as boolean: its labels are true / false
    g = frame[groups].astype(str).replace({"yes": "true", "no": "false"}).to_numpy()
    for level_name in sorted(set(g)):
        mask = g == level_name
        ref_median = assert_curve(res.curve[res.curve.group == level_name], t[mask], e[mask],
                                  level)
        assert res.groups.count(level_name) == 1
        assert medians[level_name] == ref_median
    y = np.array(list(zip(e, t, strict=True)), dtype=[("event", bool), ("time", float)])
    chisq, p = compare_survival(y, g)
    assert res.logrank.statistic.iloc[0] == pytest.approx(chisq, rel=TOL)
    assert res.logrank.p_value.iloc[0] == pytest.approx(p, rel=TOL, abs=1e-300)
    assert res.logrank.df.iloc[0] == len(set(g)) - 1


def assert_written(result: dict, out, tables: set[str], plot: str,
                   column: tuple[str, str]) -> None:
    """``scifed job result --out`` writes the tables, the plot (a PNG), result.json and
    report.html; a column read back from its CSV equals the view's."""
    res = load_result(result)
    assert tables | {plot, "result.json", "report.html"} <= {p.name for p in res.write(out)}
    assert (out / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table, name = column
    np.testing.assert_allclose(pd.read_csv(out / f"{table}.csv")[name],
                               res.tables()[table][name], rtol=1e-12)


# -- Kaplan-Meier and log-rank ------------------------------------------------------------
def test_gbsg2_by_hormone_therapy_equals_scikit_survival_on_the_released_grid(sfed, data,
                                                                              tmp_path):
    edges = list(range(0, 2701, 100))
    _, result = sfed.run(survival("gbsg2", time="time", event="cens", groups="horTh",
                                  bins=edges), timeout=120)
    assert_matches(result, data["gbsg2"], "time", "cens", "horTh")
    released = result["model"]["edges"]
    assert set(released) <= set(edges) and released[0] == 0 and released[-1] == 2700
    assert len(released) < len(edges)  # k = 10 merged some of the 27 declared bins
    assert result["meta"]["k"] == K
    assert sorted(result["meta"]["contributors"]) == sorted(NODES)
    # nothing per row: no list as long as the rows
    assert all(len(c["time"]) < len(released) + 1 for c in result["curves"])
    assert_written(result, tmp_path / "out", {"curve.csv", "medians.csv", "logrank.csv"},
                   "kaplan_meier.png", ("curve", "survival"))


def test_gbsg2_by_tumour_grade_three_groups_two_degrees_of_freedom(sfed, data):
    _, result = sfed.run(survival("gbsg2", time="time", event="cens", groups="tgrade",
                                  bins=list(range(0, 2701, 50)), confidence=0.9),
                         timeout=120)
    assert_matches(result, data["gbsg2"], "time", "cens", "tgrade")
    assert result["logrank"]["df"] == 2


def test_whas500_by_gender(sfed, data):
    _, result = sfed.run(survival("whas500", time="lenfol", event="fstat", groups="gender",
                                  bins=list(range(0, 2401, 30))), timeout=120)
    assert_matches(result, data["whas500"], "lenfol", "fstat", "gender")


def test_whas500_overall_on_bins_from_the_declared_range(sfed, data):
    _, result = sfed.run(survival("whas500", time="lenfol", event="fstat", bins=24),
                         timeout=120)
    assert result["model"]["declared_edges"] == [float(x) for x in range(0, 2401, 100)]
    assert_matches(result, data["whas500"], "lenfol", "fstat", None)


def test_a_filter_narrows_the_rows(sfed, data):
    _, result = sfed.run(survival("gbsg2", filter="menostat == 'Post'", time="time",
                                  event="cens", groups="horTh",
                                  bins=list(range(0, 2701, 100))), timeout=120)
    frame = data["gbsg2"]
    assert_matches(result, frame[frame.menostat == "Post"], "time", "cens", "horTh")


def test_without_an_event_column_every_row_is_an_event(fed, penguins):
    """The demo data (penguins by island, k = 1): body mass as the 'time', per species."""
    _, result = fed.run(job_yaml(study="penguins", type="survival",
                                 datasets={n: "penguins" for n in ISLANDS},
                                 survival={"time": "body_mass_g", "groups": "species",
                                           "bins": list(range(2500, 6501, 250))}))
    assert_matches(result, penguins.dropna(subset=["body_mass_g", "species"]),
                   "body_mass_g", None, "species")


# -- bad input: one clear message, nothing charged ------------------------------------------
@pytest.mark.parametrize(("spec", "message"), [
    ({"time": "survival_days", "event": "cens"}, "unknown column 'survival_days'"),
    ({"time": "tgrade", "event": "cens"}, "survival.time: column 'tgrade' has type"),
    ({"time": "time", "event": "pnodes", "bins": [0, 1000, 2700]},
     "survival.event: column 'pnodes' must be 1 (event) or 0 (censored)"),
    ({"time": "time", "event": "cens", "groups": "age"},
     "survival.groups: column 'age' is numeric without a declared enumeration"),
    ({"time": "time", "event": "cens", "bins": [0, 500, 400]}, "the edges must increase"),
    ({"time": "time", "event": "time"}, "three different columns"),
    ({"time": "age", "event": "cens"}, "survival.bins: give the bin edges, or declare"),
])
def test_bad_input_gets_one_clear_message_and_charges_nothing(sfed, spec, message):
    result, refusal = attempt(sfed, survival("gbsg2", **spec))
    assert result is None
    assert message in refusal, refusal
    assert spent(sfed) == []


@pytest.mark.parametrize(("study", "spec"), [
    # the premenopausal under 40: tumour grade I holds fewer than 10 events there
    ("gbsg2", {"time": "time", "event": "cens", "groups": "tgrade", "bins": [0, 1000, 2700],
               "filter": "age < 40"}),
    # nearly every veteran died: a cell type holds between 1 and 9 censorings
    ("veteran", {"time": "days", "event": "died", "groups": "Celltype",
                 "bins": list(range(0, 1001, 100))}),
])
def test_a_group_no_merge_can_protect_is_refused_without_naming_it(sfed, data, study, spec):
    result, refusal = attempt(sfed, survival(study, **spec))
    assert result is None
    assert "no merge of the declared bins meets the disclosure rules" in refusal, refusal
    for level in ENUMS[study][spec["groups"]]:
        assert level not in refusal.replace("groups", "")
    assert spent(sfed) == []


DP_EDGES = [2500, 3500, 4500, 5500, 6500]


def test_where_policy_requires_dp_each_node_noises_its_counts(tmp_path, penguins,
                                                              penguins_meta):
    """Body mass as the time, by species, under DP at ε = 1 per node: the groups are the
    declared ones, each node adds discrete Laplace noise (scale 1) to every cell and is
    charged once, and the curves are released on the declared grid. Each group's rows
    stay within the noise of the pooled count (8 cells × 3 nodes of scale 1, and the
    reading of a negative count as 0), and every curve is a survival curve. A Cox model
    needs exact rounds: refused, as is a group column without declared values."""
    meta = copy.deepcopy(penguins_meta)  # sex with its values undeclared
    del meta["fields"]["sex"]["constraints"]["enum"]
    fed = build(tmp_path, penguins, meta)
    try:
        require_dp(fed)
        spec = {"time": "body_mass_g", "groups": "species", "bins": DP_EDGES, "dp": {}}
        result, refusal = attempt(fed, job_yaml(
            study="penguins", type="survival", datasets={n: "penguins" for n in ISLANDS},
            survival=spec))
        assert result is not None, refusal
        assert sorted(result["privacy"]) == sorted(ISLANDS)
        assert result["model"]["edges"] == DP_EDGES  # not widened: the noise covers it
        truth = penguins.dropna(subset=["body_mass_g"]).species.value_counts()
        for curve in result["curves"][1:]:
            assert abs(curve["rows"] - truth[curve["group"]]) < 50, curve
            s = np.array(curve["survival"])
            assert np.all((0 <= s) & (s <= 1)) and np.all(np.diff(s) <= 1e-12)
        assert sorted((x.dataset_id.split(":")[2], x.epsilon) for x in spent(fed)
                      if x.researcher is None) == [(n, 1.0) for n in sorted(ISLANDS)]
        for extra, message in (({"cox": ["bill_length_mm"]}, "a Cox model is not available"),
                               ({"groups": "sex"}, "the groups must be the column's "
                                                   "declared values")):
            result, refusal = attempt(fed, job_yaml(
                study="penguins", type="survival", datasets={n: "penguins" for n in ISLANDS},
                survival={**spec, **extra}))
            assert result is None and message in refusal, refusal
    finally:
        fed.__exit__(None, None, None)


# -- Cox proportional hazards ---------------------------------------------------------------
COX_TOL = 1e-6


def _levels(values: pd.Series) -> list[str]:
    """A categorical's labels as the node reads them (yes / no as boolean: true / false),
    sorted as pandas sorts the column (numerically where every label is a number)."""
    labels = sorted(set(values))
    try:
        return sorted(labels, key=float)
    except ValueError:
        return labels


def cox_design(frame: pd.DataFrame, covariates: list[str]) -> tuple[np.ndarray, list[str]]:
    """The pooled design in treatment coding (reference: the first level), built here."""
    columns, names = [], []
    for term in covariates:
        if term.startswith("C("):
            col = term[2:-1]
            labels = frame[col].astype(str).replace({"yes": "true", "no": "false"})
            for level in _levels(labels)[1:]:
                columns.append((labels == level).to_numpy(dtype=float))
                names.append(f"C({col})[T.{level}]")
        else:
            columns.append(frame[term].to_numpy(dtype=float))
            names.append(term)
    return np.column_stack(columns), names


def assert_cox_matches(result: dict, frame: pd.DataFrame, time: str, event: str,
                       covariates: list[str]) -> None:
    t, e = binned(result, frame[time].to_numpy(dtype=float), frame[event].to_numpy())
    x, names = cox_design(frame, covariates)
    ref = PHReg(t, x, status=e.astype(float), ties="breslow").fit()
    res = load_result(result)
    coef = res.cox
    assert list(coef.index) == names
    np.testing.assert_allclose(coef.estimate, ref.params, rtol=COX_TOL)
    np.testing.assert_allclose(coef.std_error, ref.bse, rtol=COX_TOL)
    np.testing.assert_allclose(coef.statistic, ref.tvalues, rtol=COX_TOL)
    np.testing.assert_allclose(coef.p_value, ref.pvalues, rtol=COX_TOL, atol=1e-300)
    level = result["cox"]["model"]["confidence"]
    ci = ref.conf_int(alpha=1 - level)
    np.testing.assert_allclose(coef[["ci_low", "ci_high"]], ci, rtol=COX_TOL)
    np.testing.assert_allclose(coef.hazard_ratio, np.exp(ref.params), rtol=COX_TOL)
    np.testing.assert_allclose(coef[["hr_ci_low", "hr_ci_high"]], np.exp(ci), rtol=COX_TOL)
    fit = res.cox_fit
    assert fit["log_likelihood"] == pytest.approx(ref.llf, rel=1e-9)
    assert fit["null_log_likelihood"] == pytest.approx(
        ref.model.loglike(np.zeros(len(names))), rel=1e-9)
    assert fit["nobs"] == len(frame) and fit["events"] == int(e.sum())
    assert 1 <= fit["iterations"] <= 25
    y = np.array(list(zip(e, t, strict=True)), dtype=[("event", bool), ("time", float)])
    sk = CoxPHSurvivalAnalysis(ties="breslow", tol=1e-12, n_iter=200).fit(x, y)
    np.testing.assert_allclose(coef.estimate, sk.coef_, rtol=COX_TOL)


GBSG2_COX = ["age", "tsize", "C(horTh)", "C(tgrade)"]


def test_gbsg2_cox_equals_statsmodels_and_scikit_survival_on_the_released_grid(sfed, data,
                                                                               tmp_path):
    _, result = sfed.run(survival("gbsg2", time="time", event="cens", cox=GBSG2_COX,
                                  bins=list(range(0, 2701, 50))), timeout=180)
    assert_cox_matches(result, data["gbsg2"], "time", "cens", GBSG2_COX)
    assert_matches(result, data["gbsg2"], "time", "cens", None)  # the curve alongside
    assert result["cox"]["model"]["reference_levels"] == {"horTh": "false", "tgrade": "I"}
    # nothing per row: no residuals, no linear predictors
    assert set(result["cox"]) == {"model", "coefficients", "fit"}
    assert_written(result, tmp_path / "out", {"cox.csv", "cox_fit.csv", "curve.csv"},
                   "hazard_ratios.png", ("cox", "hazard_ratio"))
    assert "hazard ratio" in (tmp_path / "out" / "report.html").read_text()


def test_whas500_cox_with_groups_and_a_numeric_coded_categorical(sfed, data):
    covariates = ["age", "bmi", "C(gender)"]
    _, result = sfed.run(survival("whas500", time="lenfol", event="fstat", groups="gender",
                                  cox=covariates, bins=list(range(0, 2401, 30)),
                                  confidence=0.9), timeout=180)
    assert_cox_matches(result, data["whas500"], "lenfol", "fstat", covariates)
    assert_matches(result, data["whas500"], "lenfol", "fstat", "gender")


@pytest.mark.parametrize(("cox", "message"), [
    (["age", "nodes_count"], "unknown column 'nodes_count'"),
    (["age", "menostat"], "survival.cox: predictor 'menostat' is not numeric; write "
                          "C(menostat)"),
    (["age", "age_months"], "survival: the Cox design is singular: age_months is a linear "
                            "combination"),
    (["age", "log(tsize)"], "cox: 'log(tsize)' is not a column name or C(column)"),
    (["time"], "cox: the time column 'time' is also a covariate"),
])
def test_bad_cox_input_gets_one_clear_message_and_charges_nothing(sfed, cox, message):
    result, refusal = attempt(sfed, survival("gbsg2", time="time", event="cens", cox=cox,
                                             bins=list(range(0, 2701, 100))))
    assert result is None
    assert message in refusal, refusal
    assert spent(sfed) == []
