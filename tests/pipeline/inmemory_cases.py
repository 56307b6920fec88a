"""Helpers of the pipeline tests (the fixtures are in conftest.py)."""

from __future__ import annotations

import yaml

from harness.inmemory import InMemoryFederation

ISLANDS = {"biscoe": "Biscoe", "dream": "Dream", "torgersen": "Torgersen"}


def job_yaml(**spec) -> str:
    return yaml.safe_dump(spec, sort_keys=False)


def stats_job(study: str = "penguins", nodes=tuple(ISLANDS), **stats) -> str:
    return job_yaml(study=study, type="stats", datasets={n: "penguins" for n in nodes},
                    stats=stats)


def build(root, penguins, penguins_meta, **options) -> InMemoryFederation:
    fed = InMemoryFederation(root, list(ISLANDS), **options).__enter__()
    for node, island in ISLANDS.items():
        fed.add_dataset(node, penguins[penguins.island == island], penguins_meta, "penguins")
    fed.create_study("penguins", {n: "penguins" for n in ISLANDS})
    return fed
