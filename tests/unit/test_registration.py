"""Registration checks the column dictionary against the data, on a real node store:
penguins and vega_datasets' cars with constraints their rows break, counted against
pandas on the same data; nothing is written when it refuses."""

from __future__ import annotations

import copy
import re

import pandas as pd
import pytest
import yaml
from vega_datasets import data as vega

from node.audit import AuditLog
from node.datasets import DatasetRegistry
from node.store import NodeStore
from scifed.errors import UserError
from scifed.record import CatalogRecord, published_form


@pytest.fixture
def registry(tmp_path) -> DatasetRegistry:
    data = tmp_path / "data"
    data.mkdir()
    return DatasetRegistry(NodeStore(tmp_path / "node.db"), node_name="alpha",
                           platform="Alpha Lab", data_dir=data)


def cars_meta(penguins_meta: dict, **origin_constraints) -> dict:
    """The penguins record's dataset-level fields over the cars table, Origin declared."""
    meta = {k: v for k, v in penguins_meta.items() if k not in ("fields", "targets", "splits",
                                                                   "annotation")}
    meta |= {"title": {"en": "Cars"}, "description": {"en": "Cars (vega_datasets)."}}
    meta["fields"] = {
        "Origin": {"description": "Region of manufacture.",
                   "constraints": {"required": True, **origin_constraints}},
        "Name": {"description": "Make and model.", "type": "string"},
        "Horsepower": {"description": "Engine power.", "unit": "[HP]", "type": "number"},
    }
    return meta


def add(registry: DatasetRegistry, frame: pd.DataFrame, meta: dict, name: str,
        **kwargs) -> CatalogRecord:
    frame.to_csv(registry.data_dir / f"{name}.csv", index=False)
    row = registry.add(f"{name}.csv", yaml.safe_dump(meta, allow_unicode=True),
                       f"{name}.yaml", **kwargs)
    return CatalogRecord.model_validate(row.record)


def refused(registry: DatasetRegistry, frame: pd.DataFrame, meta: dict, name: str) -> str:
    with pytest.raises(UserError) as exc:
        add(registry, frame, meta, name)
    assert registry.list() == [] and AuditLog(registry.store).entries() == []
    return str(exc.value)


def test_a_good_dataset_registers(registry, penguins, penguins_meta):
    record = add(registry, penguins, penguins_meta, "penguins")
    assert record.record_count == 344 and record.constraint_violations == []
    cars = vega.cars()
    record = add(registry, cars, cars_meta(penguins_meta, enum=["Europe", "Japan", "USA"]),
                 "cars")
    assert record.constraint_violations == [] and len(registry.list()) == 2


def test_an_enumeration_every_row_breaks_is_refused_with_its_count(registry, penguins_meta):
    cars = vega.cars()
    message = refused(registry, cars, cars_meta(penguins_meta, enum=["EU", "JP", "US"]), "cars")
    assert f"column Origin: {len(cars)} of {len(cars)} rows break constraints.enum" in message
    assert "--accept-violations" in message
    assert not any(value in message for value in ("USA", "Japan", "Europe"))  # counts only


def test_ranges_patterns_and_required_are_counted_in_one_refusal(registry, penguins,
                                                                  penguins_meta):
    meta = copy.deepcopy(penguins_meta)
    meta["fields"]["body_mass_g"]["constraints"] = {"minimum": 3000, "maximum": 5500}
    meta["fields"]["species"]["constraints"]["pattern"] = "[A-C][a-z]+"  # not Gentoo
    meta["fields"]["sex"]["constraints"]["required"] = True
    meta["fields"]["island"]["missing_values"] = ["Dream"]  # read as missing: required
    message = refused(registry, penguins, meta, "penguins")
    mass = penguins.body_mass_g.dropna()
    expected = {
        f"column body_mass_g: {(mass < 3000).sum()} of {len(mass)} rows break "
        "constraints.minimum",
        f"column body_mass_g: {(mass > 5500).sum()} of {len(mass)} rows break "
        "constraints.maximum",
        f"column species: {(~penguins.species.str.fullmatch('[A-C][a-z]+')).sum()} of 344 "
        "rows break constraints.pattern",
        f"column sex: {penguins.sex.isna().sum()} of 344 rows break constraints.required",
        f"column island: {(penguins.island == 'Dream').sum()} of 344 rows break "
        "constraints.required",
    }
    lines = {line.strip() for line in message.splitlines()}
    assert expected <= lines, message
    assert message.startswith(f"penguins.csv breaks {len(expected)} constraints")
    assert all(n > 0 for n in map(int, re.findall(r": (\d+) of", message)))


def test_registered_anyway_the_violations_are_recorded_and_audited(registry, penguins_meta):
    cars = vega.cars()
    meta = cars_meta(penguins_meta, enum=["EU", "JP", "US"])
    record = add(registry, cars, meta, "cars", accept_violations=True)
    (violation,) = record.constraint_violations
    assert (violation.column, violation.constraint, violation.rows, violation.of) == (
        "Origin", "enum", 406, 406)
    (entry,) = AuditLog(registry.store).entries()
    assert entry.details["constraint_violations"] == [violation.model_dump()]
    # Published at G1 with the counts; above G1 a count is an unchecked aggregate.
    assert published_form(record)["constraint_violations"][0]["rows"] == 406
    g2 = record.model_copy(update={"security_grade": "G2"})
    assert published_form(g2)["constraint_violations"] == [
        {"column": "Origin", "constraint": "enum", "rows": None, "of": None}]


def test_a_declared_type_the_data_does_not_have_is_refused(registry, penguins_meta):
    meta = cars_meta(penguins_meta)
    meta["fields"]["Name"]["type"] = "integer"
    message = refused(registry, vega.cars(), meta, "cars")
    assert "fields.Name.type: declared integer, but the data's column reads as string" in message


def test_a_bound_that_cannot_apply_to_the_column_is_a_metadata_problem(registry,
                                                                        penguins_meta):
    meta = cars_meta(penguins_meta)
    meta["fields"]["Horsepower"]["constraints"] = {"minimum": "lots"}
    message = refused(registry, vega.cars(), meta, "cars")
    assert "fields.Horsepower.constraints.minimum: 'lots' is not a bound" in message


def test_the_scorecard_counts_with_the_same_check(registry, penguins, penguins_meta):
    """Q2a and registration are one check: a file read differently since registration
    (years with a fraction) breaks the record's type, counted as registration counts."""
    from node.constraints import check_constraints
    from node.scorecard.data import _validity

    record = add(registry, penguins, penguins_meta, "penguins")
    changed = penguins.astype({"year": float})
    changed.loc[[0, 5, 9], "year"] = 2007.5
    path = registry.data_dir / "changed.csv"
    changed.to_csv(path, index=False)
    check = check_constraints(path, record.fields)
    assert [(v.column, v.constraint, v.rows) for v in check.violations] == [("year", "type", 3)]
    q2a = _validity(path, record)
    assert q2a.value == pytest.approx(1 - 3 / int(penguins.notna().to_numpy().sum()))
    assert q2a.detail.endswith(": year 3")


def test_metadata_data_and_dictionary_problems_come_in_one_refusal(registry, penguins_meta):
    """A metadata problem, a column the data lacks and rows breaking a valid column's
    enumeration: all in the one message, so the officer fixes them in one round."""
    meta = cars_meta(penguins_meta, enum=["EU", "JP", "US"])
    meta["lifecycle_stage"] = None
    meta["fields"]["Colour"] = {"description": "Paint."}
    meta["fields"]["Horsepower"]["pi_kind"] = "nonsense"  # this entry is not checked
    message = refused(registry, vega.cars(), {k: v for k, v in meta.items() if v is not None},
                      "cars")
    lines = [line.strip() for line in message.splitlines()]
    assert lines[0] == "cars.yaml: 3 problems"
    assert "lifecycle_stage: required field is missing" in lines
    assert any(line.startswith("fields.Colour: no such column in the data") for line in lines)
    assert any(line.startswith("fields.Horsepower.pi_kind:") for line in lines)
    assert "column Origin: 406 of 406 rows break constraints.enum" in lines


def test_a_value_of_another_type_breaks_the_type_only(registry, penguins, penguins_meta):
    """Text in a numeric column (the file replaced since registration) is a type error,
    counted once, and the column's range check still counts the numbers."""
    from node.constraints import check_constraints

    record = add(registry, penguins, penguins_meta, "penguins")
    changed = penguins.astype({"body_mass_g": object})
    changed.loc[[1, 2], "body_mass_g"] = "heavy"
    changed.loc[[3], "body_mass_g"] = 9000.0  # above the declared maximum of 7000
    path = registry.data_dir / "changed.csv"
    changed.to_csv(path, index=False)
    check = check_constraints(path, record.fields)
    assert sorted((v.column, v.constraint, v.rows) for v in check.violations) == [
        ("body_mass_g", "maximum", 1), ("body_mass_g", "type", 2)]
    assert check.bad_cells["body_mass_g"] == 3
