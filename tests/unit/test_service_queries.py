"""In-node service answers (node/delivery/service.py) against pandas on the same rows:
the aggregate plan, the k rule on groups and on each aggregated column's values, and
answers of every column type as JSON carries them."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from node.delivery import service
from scifed.errors import UserError


def test_aggregates_equal_pandas_and_small_groups_are_withheld(penguins):
    got = service.run(penguins, "SELECT island, sex, count(*) AS n, avg(body_mass_g) AS m, "
                      "stddev(body_mass_g) AS s FROM data GROUP BY island, sex",
                      rows_allowed=False, k=10)
    frame = pd.DataFrame(got["rows"], columns=got["columns"])
    truth = penguins.groupby(["island", "sex"], dropna=False).body_mass_g.agg(
        ["size", "count", "mean", "std"]).reset_index()
    kept = truth[(truth["size"] >= 10) & (truth["count"] >= 10)]
    assert got["withheld"] == len(truth) - len(kept) > 0  # the NaN-sex groups are small
    merged = frame.merge(kept, on=["island", "sex"])
    assert len(merged) == len(kept) == len(frame)
    assert (merged.n == merged["size"]).all()
    assert (merged.m - merged["mean"]).abs().max() < 1e-9
    assert (merged.s - merged["std"]).abs().max() < 1e-9


def test_a_group_with_enough_rows_but_few_values_of_the_column_is_withheld():
    frame = pd.DataFrame({"g": ["a"] * 6 + ["b"] * 6,
                          "x": [1.0, None, None, None, None, None] + [2.0] * 6})
    got = service.run(frame, "SELECT g, sum(x) FROM data GROUP BY g", rows_allowed=False,
                      k=5)
    assert got["rows"] == [["b", 12.0]] and got["withheld"] == 1


@pytest.mark.parametrize("sql", ["SELECT g, x FROM data", "SELECT g, median(x) FROM data "
                                 "GROUP BY g", "SELECT g, sum(x) FROM data GROUP BY ALL",
                                 "SELECT g, sum(x) FROM data GROUP BY ROLLUP (g)",
                                 "SELECT g, sum(x) FILTER (WHERE x > 1) FROM data GROUP BY g",
                                 "SELECT g, sum(x) OVER () FROM data"])
def test_what_is_not_a_plain_aggregate_is_refused(sql):
    frame = pd.DataFrame({"g": ["a"] * 6, "x": [1.0] * 6})
    with pytest.raises(UserError, match="in-node service"):
        service.run(frame, sql, rows_allowed=False, k=5)


def test_rows_of_every_type_travel_as_json():
    frame = pd.DataFrame({"d": pd.to_datetime(["2020-01-01", "2020-01-02"]),
                          "x": [1.5, float("nan")], "s": ["a", None]})
    got = service.run(frame, "SELECT d, d::DATE AS day, x, s, 1.25::DECIMAL(5,2) AS c "
                      "FROM data ORDER BY d", rows_allowed=True, k=1)
    assert json.loads(json.dumps(got, allow_nan=False))["rows"] == [
        ["2020-01-01T00:00:00", "2020-01-01", 1.5, "a", 1.25],
        ["2020-01-02T00:00:00", "2020-01-02", None, None, 1.25]]
