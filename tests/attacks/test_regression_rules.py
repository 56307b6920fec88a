"""The `regression` type's disclosure rules at G2 / CONDITIONAL (k = 5, query auditing):
a factor level fewer than k rows hold at a node stops that node, without naming the
level; a model the rules admit is released and equals statsmodels on the pooled rows."""

from __future__ import annotations

import numpy as np
import pytest
import statsmodels.formula.api as smf
import yaml
from staff import NODES, attempt

from jobs.views import load_result
from scifed.errors import UserError


def regression(formula: str) -> str:
    return yaml.safe_dump({"study": "staff", "type": "regression",
                           "datasets": {n: "staff" for n in NODES},
                           "regression": {"formula": formula}}, sort_keys=False)


def test_a_level_fewer_than_k_rows_hold_stops_its_node_and_is_not_named(staff):
    """One person holds the title "director" (at alpha): a regression on C(title) would
    give that person's salary its own coefficient. Alpha refuses at the vocabulary,
    before its levels leave it; the two others alone are too few to release an exact
    result; no message names the level."""
    job_id = staff.submit(regression("salary ~ age + C(title)"))
    view = staff.wait(job_id, 60)
    assert view.status == "failed", view
    with pytest.raises(UserError, match="has no result"):
        staff.result_json(job_id)
    details = " | ".join([view.error, *(t.detail for t in view.tasks)])
    assert "node alpha: regression: a level of C(title) is held by fewer than k=5 rows " \
           "here" in details, details
    assert "director" not in details
    assert not [s for core in staff.nodes.values() for s in core.gate.ledger.spent()]


def test_a_model_the_rules_admit_equals_statsmodels_on_the_pooled_rows(staff):
    result, why = attempt(staff, regression("salary ~ age + C(department)"))
    assert result is not None, why
    ref = smf.ols("salary ~ age + C(department)", staff.table).fit()
    coef = load_result(result).coefficients
    np.testing.assert_allclose(coef.estimate.reindex(ref.params.index), ref.params,
                               rtol=1e-6)
    np.testing.assert_allclose(coef.std_error.reindex(ref.params.index), ref.bse,
                               rtol=1e-6)
