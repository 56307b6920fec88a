"""Attacks on the `crosstab` type, through the real pipeline on the in-memory link.

A survey at three nodes: smoking (smoker / nonsmoker) × region (north / south) and an age. One
young northern smoker lives at alpha; every other young cell is 0 or large.

* margins: a 2×2 table of the young where that person's cell is 1. Suppressing the 1
  alone leaves it as its row total minus the other cell; secondary suppression must
  leave no suppressed cell that the released cells and margins determine.
* differencing with a filter, at G2 (k = 5, query auditing): the table of everyone
  minus the table of those aged 30 or more is the table of the young, whose smoker
  cell in the north is that one person. The node's query auditor refuses the second
  table, since the job's row sets list every cell's rows.
* a rare level stops its node without being named; an identifier is never tabulated."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from staff import staff_meta

from harness.inmemory import InMemoryFederation

NODES = ("alpha", "beta", "gamma")
REPO = Path(__file__).resolve().parents[2]


def _rows(smoker: str, region: str, age: int, n: int) -> list[dict]:
    return [{"smoker": smoker, "region": region, "age": age}] * n


def survey() -> dict[str, pd.DataFrame]:
    young, old = 25, 40
    parts = {
        "alpha": [*_rows("smoker", "north", young, 1), *_rows("smoker", "north", old, 5),
                  *_rows("smoker", "south", old, 10), *_rows("nonsmoker", "north", young, 10),
                  *_rows("nonsmoker", "north", old, 10), *_rows("nonsmoker", "south", young, 12),
                  *_rows("nonsmoker", "south", old, 12)],
        "beta": [*_rows("smoker", "north", old, 6), *_rows("smoker", "south", young, 6),
                 *_rows("smoker", "south", old, 6), *_rows("nonsmoker", "north", young, 10),
                 *_rows("nonsmoker", "north", old, 10), *_rows("nonsmoker", "south", young, 12),
                 *_rows("nonsmoker", "south", old, 10)],
        "gamma": [*_rows("smoker", "north", old, 7), *_rows("smoker", "south", old, 8),
                  *_rows("nonsmoker", "north", young, 10), *_rows("nonsmoker", "north", old, 12),
                  *_rows("nonsmoker", "south", young, 12), *_rows("nonsmoker", "south", old, 11)],
    }
    out = {}
    start = 1
    for node, rows in parts.items():
        df = pd.DataFrame(rows)
        df.insert(0, "person_id", range(start, start + len(df)))
        start += len(df)
        out[node] = df
    return out


def survey_meta(grade: str, category: str) -> dict:
    meta = copy.deepcopy(staff_meta(grade, category))
    meta["title"] = {"en": "Survey"}
    meta["fields"] = {
        "person_id": {"description": "Respondent number.", "role": "id", "resolution": 1},
        "smoker": {"description": "Smokes.", "constraints": {"enum": ["nonsmoker", "smoker"]}},
        "region": {"description": "Region.", "constraints": {"enum": ["north", "south"]}},
        "age": {"description": "Age.", "unit": "a", "resolution": 10,
                "constraints": {"minimum": 18, "maximum": 90}},
    }
    return meta


@pytest.fixture
def federation(tmp_path):
    made = []

    def make(grade: str, category: str, k: dict[str, int] | None = None,
             smoker_as: dict[str, str] | None = None):
        """``smoker_as``: the smoker column written with other labels (e.g. yes / no)."""
        fed = InMemoryFederation(tmp_path / f"f{len(made)}", list(NODES)).__enter__()
        made.append(fed)
        parts = survey()
        meta = survey_meta(grade, category)
        if smoker_as:
            parts = {n: df.assign(smoker=df.smoker.map(smoker_as)) for n, df in parts.items()}
            del meta["fields"]["smoker"]["constraints"]
        for node in NODES:
            fed.add_dataset(node, parts[node], meta, "survey")
            if k and node in k:
                core = fed.nodes[node]
                core.gate.policies.set(core.registry.get("survey").record,
                                       f"min_cell_count: {k[node]}\n", "k.yaml", "officer")
        fed.create_study("survey", {n: "survey" for n in NODES})
        fed.table = pd.concat(parts.values(), ignore_index=True)
        return fed

    yield make
    for fed in made:
        fed.__exit__(None, None, None)


def crosstab(filter: str | None = None, rows: str = "smoker", columns: str = "region") -> str:
    job = {"study": "survey", "type": "crosstab", "datasets": {n: "survey" for n in NODES},
           "crosstab": {"rows": rows, "columns": columns}}
    if filter:
        job["filter"] = filter
    return yaml.safe_dump(job, sort_keys=False)


def attempt(fed, spec: str) -> tuple[dict | None, str]:
    job_id = fed.submit(spec)
    view = fed.wait(job_id, 60)
    if view.status == "done":
        return fed.result_json(job_id), ""
    return None, " | ".join([str(view.error), *(t.detail for t in view.tasks if t.detail)])


def solvable(table: dict) -> list[tuple[int, int]]:
    """Suppressed cells that the released cells and margins fix (exactly, by the
    equations: the cell's unit vector in the row space of the system's matrix)."""
    counts = np.array([[np.nan if v is None else v for v in row] for row in table["counts"]],
                      dtype=float)
    n_r, n_c = counts.shape
    unknown = [(r, c) for r in range(n_r) for c in range(n_c) if np.isnan(counts[r, c])]
    rows_u = [r for r in range(n_r) if table["row_totals"][r] is None]
    cols_u = [c for c in range(n_c) if table["column_totals"][c] is None]
    size = len(unknown) + len(rows_u) + len(cols_u) + (table["total"] is None)
    a = []
    for r in range(n_r):
        eq = np.zeros(size)
        for i, u in enumerate(unknown):
            eq[i] = u[0] == r
        if r in rows_u:
            eq[len(unknown) + rows_u.index(r)] = -1
        a.append(eq)
    for c in range(n_c):
        eq = np.zeros(size)
        for i, u in enumerate(unknown):
            eq[i] = u[1] == c
        if c in cols_u:
            eq[len(unknown) + len(rows_u) + cols_u.index(c)] = -1
        a.append(eq)
    m = np.array(a)
    rank = np.linalg.matrix_rank(m)
    return [u for i, u in enumerate(unknown)
            if np.linalg.matrix_rank(np.vstack([m, np.eye(size)[i]])) == rank]


def test_a_cell_of_one_cannot_be_read_from_the_margins(federation):
    """G1 OPEN (k = 1) at alpha and beta, gamma's officer raised k to 5: the pooled k is
    5, and alpha sends its young northern smoker (a cell of 1) as it is. The release
    suppresses it, and enough others that no equation gives it back."""
    fed = federation("G1", "OPEN", k={"gamma": 5})
    result, why = attempt(fed, crosstab(filter="age < 30"))
    assert result is not None, why
    (table,) = result["tables"]
    assert result["row_levels"] == ["nonsmoker", "smoker"]
    assert table["counts"][1][0] is None               # the one young northern smoker
    assert solvable(table) == []
    young = fed.table[fed.table.age < 30]
    ref = pd.crosstab(young.smoker, young.region)
    for r, row in enumerate(table["counts"]):          # released cells are the truth
        for c, v in enumerate(row):
            assert v is None or v == ref.iat[r, c]
    # the statistic of the full table would be one more equation in the cell
    assert table["test"] is None
    # primary suppression alone would not do: row total minus the other cell is 1
    only_primary = {**table, "counts": [[v if (r, c) == (1, 0) else int(ref.iat[r, c])
                                         for c, v in enumerate(row)]
                                        for r, row in enumerate(table["counts"])],
                    "row_totals": ref.sum(axis=1).tolist(),
                    "column_totals": ref.sum(axis=0).tolist(), "total": int(ref.sum().sum())}
    assert solvable(only_primary) == [(1, 0)]


@pytest.mark.parametrize("smoker_as", [None, {"smoker": "yes", "nonsmoker": "no"}],
                         ids=["labels", "yes-no"])
def test_differencing_two_tables_through_a_filter_is_refused_at_g2(federation, smoker_as):
    """With yes / no in the file, DuckDB reads a boolean column; a plain cast to text
    could give the file's 'yes' in the released labels and 'true' in the auditor's row
    sets, so that the auditor saw every cell empty and let the difference through."""
    fed = federation("G2", "CONDITIONAL", smoker_as=smoker_as)
    everyone, why = attempt(fed, crosstab())
    assert everyone is not None, why
    (table,) = everyone["tables"]
    ref = pd.crosstab(fed.table.smoker, fed.table.region)
    assert table["counts"] == ref.to_numpy().tolist()
    if smoker_as:
        assert everyone["row_levels"] == ["false", "true"]  # no before yes, as boolean
    older, why = attempt(fed, crosstab(filter="age >= 30"))
    assert older is None, "everyone minus the older is the young: one smoker in the north"
    assert "alpha" in why, why
    assert " 1 row" not in why


def test_a_rare_level_stops_its_node_without_being_named(federation):
    fed = federation("G2", "CONDITIONAL")
    fed_meta = survey_meta("G2", "CONDITIONAL")
    assert "enum" in fed_meta["fields"]["smoker"]["constraints"]
    # age as a level: numeric without a declared enumeration is refused before any row
    result, why = attempt(fed, crosstab(rows="smoker", columns="age"))
    assert result is None
    assert "crosstab: column 'age' is numeric and cannot be grouped" in why, why


def test_an_identifier_is_never_tabulated(federation):
    fed = federation("G2", "CONDITIONAL")
    result, why = attempt(fed, crosstab(rows="person_id", columns="region"))
    assert result is None
    assert "crosstab: column 'person_id' identifies people or records" in why, why
