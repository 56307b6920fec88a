"""A stats job may ask for any one kind of statistic alone: these once failed with
"internal error at the coordinator" because the spec's defaults did not survive the trip
through the coordinator's database."""

from __future__ import annotations

import numpy as np
import pytest
from inmemory_cases import stats_job


@pytest.mark.parametrize("section", ["histograms", "quantiles", "group_counts", "correlation"])
def test_a_stats_job_with_one_kind_of_statistic(fed, penguins, section):
    spec = {"histograms": {"histograms": {"body_mass_g": [2500, 4000, 6500]}},
            "quantiles": {"quantiles": {"body_mass_g": [0.5]}},
            "group_counts": {"group_counts": ["species"]},
            "correlation": {"correlation": ["body_mass_g", "flipper_length_mm"]}}[section]
    _, res = fed.run(stats_job(**spec))
    x = penguins.body_mass_g.dropna()
    if section == "histograms":
        assert res["histograms"]["body_mass_g"]["counts"] == \
            np.histogram(x, bins=[2500, 4000, 6500])[0].tolist()
    elif section == "quantiles":
        assert res["quantiles"]["body_mass_g"]["0.5"] == x.median()
        assert 1 <= res["quantile_rounds"] <= 4  # grid rounds (the bisection took 10)
    elif section == "group_counts":
        assert dict(zip(res["groups"]["species"]["values"], res["groups"]["species"]["counts"],
                        strict=True)) == penguins.species.value_counts().to_dict()
    else:
        r = penguins[["body_mass_g", "flipper_length_mm"]].corr().iloc[0, 1]
        assert res["correlation"]["matrix"][0][1] == pytest.approx(r, rel=1e-9)
    assert "columns" not in res


def test_a_stats_result_states_its_conventions_and_keeps_them(fed, penguins):
    """The result says which variance and which bin edges it uses, and its numbers follow
    what it says: ddof = 1, and a value on an inner edge counted in the bin to its right,
    one on the last edge in the last bin (values sit on 3500, 4500 and 5500 here)."""
    edges = [2500, 3500, 4500, 5500]
    x = penguins.body_mass_g.dropna()
    assert {3500, 4500, 5500} <= set(x)  # so the edges decide where rows fall
    _, res = fed.run(stats_job(columns=["body_mass_g"], histograms={"body_mass_g": edges}))
    conventions = res["meta"]["conventions"]
    assert "ddof = 1" in conventions["variance"]
    assert conventions["histogram_bins"].startswith("[a, b)") and "last" in \
        conventions["histogram_bins"]
    assert res["columns"]["body_mass_g"]["variance"] == pytest.approx(x.var(ddof=1))
    assert res["columns"]["body_mass_g"]["variance"] != pytest.approx(x.var(ddof=0))
    right_open = [int(((x >= a) & (x < b)).sum()) for a, b in zip(edges[:-1], edges[1:],
                                                                   strict=True)]
    right_open[-1] += int((x == edges[-1]).sum())
    assert res["histograms"]["body_mass_g"]["counts"] == right_open
