"""Helpers of the pipeline tests (the fixtures are in conftest.py)."""

from __future__ import annotations

import yaml

from harness.inmemory import InMemoryFederation
from scifed.errors import UserError

ISLANDS = {"biscoe": "Biscoe", "dream": "Dream", "torgersen": "Torgersen"}


def job_yaml(**spec) -> str:
    return yaml.safe_dump(spec, sort_keys=False)


def stats_job(study: str = "penguins", nodes=tuple(ISLANDS), **stats) -> str:
    return job_yaml(study=study, type="stats", datasets={n: "penguins" for n in nodes},
                    stats=stats)


def build(root, penguins, penguins_meta, accept_violations: bool = False,
          **options) -> InMemoryFederation:
    """``accept_violations``: register rows that break the column dictionary anyway (an
    attack's planted row), as an officer may with ``--accept-violations``."""
    fed = InMemoryFederation(root, list(ISLANDS), **options).__enter__()
    for node, island in ISLANDS.items():
        fed.add_dataset(node, penguins[penguins.island == island], penguins_meta, "penguins",
                        accept_violations=accept_violations)
    fed.create_study("penguins", {n: "penguins" for n in ISLANDS})
    return fed


def attempt(fed: InMemoryFederation, spec_yaml: str) -> tuple[dict | None, str]:
    """(the released result or None, every refusal text: submission, job, tasks)."""
    try:
        job_id = fed.submit(spec_yaml)
    except UserError as exc:
        return None, str(exc)
    view = fed.wait(job_id, 120)
    if view.status == "done":
        return fed.result_json(job_id), ""
    return None, " | ".join([str(view.error), *(t.detail for t in view.tasks if t.detail)])


def spent(fed: InMemoryFederation) -> list:
    return [s for core in fed.nodes.values() for s in core.gate.ledger.spent()]


def require_dp(fed: InMemoryFederation, dataset: str = "penguins") -> None:
    """Every node's officer requires DP for ``dataset`` (ε 1 per query, budget 20)."""
    for core in fed.nodes.values():
        core.gate.policies.set(core.registry.get(dataset).record,
                               "dp: {required: true, epsilon_per_query: 1.0, "
                               "annual_budget: 20}\n", "dp.yaml", "officer")
