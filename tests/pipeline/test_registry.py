"""A job type defined here, in the test suite, runs through the real pipeline (driver,
gate, release path, sealing) with no change to `node/` or `coordinator/`: the registry is
the only seam."""

from __future__ import annotations

import numpy as np
import pytest
from inmemory_cases import ISLANDS, job_yaml
from pydantic import Field

from jobs import registry
from jobs.aggregate import AggregateJob
from jobs.base import Limits, Pooled, Released, Table
from jobs.fields import Name, Strict
from scifed.errors import UserError
from scifed.states import JobStatus


class SumSquaresSpec(Strict):
    column: Name
    power: int = Field(default=2, ge=1, le=4)

    def referenced_columns(self) -> list[str]:
        return [self.column]


class SumPowersJob(AggregateJob):
    """Σ x^p and the count of a column: one vector of two numbers per node."""

    name = "sumpowers"
    Spec = SumSquaresSpec

    def compute(self, params: SumSquaresSpec, table: Table, vocab: dict,
                limits: Limits) -> np.ndarray:
        table.require([params.column], "sumpowers.column", numeric=True)
        x = table.number(params.column)
        (n, s), = table.query([x], f"SELECT count(c0), fsum(pow(c0, {params.power})) FROM d")
        return np.array([float(n), float(s or 0.0)])

    def release(self, params: SumSquaresSpec, pooled: Pooled) -> Released:
        n, s = pooled.totals["sum"]
        return Released({"n": round(float(n)), "sum_of_powers": float(s)})

    def view(self, result: dict) -> dict:
        return result


@pytest.fixture
def custom_type():
    job = registry.register(SumPowersJob())
    yield job
    registry.unregister(job.name)


def test_a_job_type_from_the_test_suite_runs_through_the_real_pipeline(fed, custom_type,
                                                                         penguins):
    view, result = fed.run(job_yaml(study="penguins", type="sumpowers",
                                    datasets={n: "penguins" for n in ISLANDS},
                                    sumpowers={"column": "flipper_length_mm", "power": 3}))
    x = penguins.flipper_length_mm.dropna()
    assert result["type"] == "sumpowers" and result["n"] == len(x)
    assert result["sum_of_powers"] == pytest.approx(float((x ** 3).sum()), rel=1e-9)
    assert sorted(result["meta"]["contributors"]) == sorted(ISLANDS)
    assert view.status == JobStatus.DONE
    # the node's policy learned the type from the registry: an officer can tighten it
    pol = fed.nodes["biscoe"].gate.policies.effective(
        fed.nodes["biscoe"].registry.get("penguins").record)
    assert "sumpowers" in pol.job_types


def test_its_spec_is_validated_by_its_own_model(fed, custom_type):
    with pytest.raises(UserError, match=r"sumpowers.power: Input should be less than"):
        fed.submit(job_yaml(study="penguins", type="sumpowers", datasets={"biscoe": "penguins"},
                            sumpowers={"column": "flipper_length_mm", "power": 9}))


def test_an_unregistered_type_is_refused_naming_the_known_ones(fed):
    with pytest.raises(UserError, match=r"type: Input should be 'stats', 'quality', 'train', "
                                        r"'regression' or 'survival'"):
        fed.submit(job_yaml(study="penguins", type="sumpowers", datasets={"biscoe": "penguins"},
                            sumpowers={"column": "x"}))
