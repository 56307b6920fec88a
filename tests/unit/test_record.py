"""Catalog records from the real penguins metadata and data: validation, build, publication."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from node.profiling import ColumnProfile, DataProfile
from scifed import grading
from scifed.errors import UserError
from scifed.record import (
    CatalogRecord,
    FieldMeta,
    MetadataInput,
    build_record,
    load_metadata,
    published_form,
    schema_hash,
)

REPO = Path(__file__).resolve().parents[2]
GRADE_ASSESSMENT = {
    "factors": {"domain": "ecology", "scale": "three breeding seasons"},
    "impact_object": "organization_rights",
    "impact_degree": "general",
    "rationale": "unpublished field data of the platform",
    "assessed_by": "data officer",
    "assessed_on": "2026-01-15",
    "next_review": "2027-01-14",
}
APPROVALS = [{"type": "ethics", "ref": "IRB-1", "date": "2026-01-10"}]
SENSITIVE_PI = {"status": "identifiable", "sensitive": True, "categories": ["medical_health"]}


def pandas_profile(df: pd.DataFrame) -> DataProfile:
    """The node's profile of a CSV, computed here with pandas on the same data."""
    data = df.to_csv(index=False, na_rep="NA").encode()
    columns = []
    for name in df.columns:
        series = df[name]
        kind = {"i": "integer", "f": "number", "b": "boolean"}.get(series.dtype.kind, "string")
        numeric = kind in ("integer", "number")
        columns.append(
            ColumnProfile(
                name=name,
                type=kind,
                missing=int(series.isna().sum()),
                distinct=int(series.nunique()),
                min=float(series.min()) if numeric else None,
                max=float(series.max()) if numeric else None,
                mean=float(series.mean()) if numeric else None,
                std=float(series.std()) if numeric else None,
            )
        )
    return DataProfile("text/csv", len(data), hashlib.sha256(data).hexdigest(), len(df), columns)


def meta_text(base: dict[str, Any], **changes: Any) -> str:
    """The metadata YAML with some keys changed; a None value removes the key."""
    merged = {k: v for k, v in {**base, **changes}.items() if v is not None}
    return yaml.safe_dump(merged, allow_unicode=True, sort_keys=False)


def penguins_record(meta: dict[str, Any], df: pd.DataFrame, **changes: Any) -> CatalogRecord:
    parsed = load_metadata(meta_text(meta, **changes), "penguins.yaml")
    return build_record(parsed, pandas_profile(df), node_id="alpha", platform_id="Alpha Lab",
                        slug="penguins")


def refusal(meta: dict[str, Any], **changes: Any) -> str:
    with pytest.raises(UserError) as exc:
        load_metadata(meta_text(meta, **changes), "bad.yaml")
    return str(exc.value)


def test_penguins_metadata_builds_a_record(penguins, penguins_meta):
    record = penguins_record(penguins_meta, penguins)
    assert record.id == "urn:sdn:alpha:ds:penguins"
    assert (record.node_id, record.platform_id, record.record_count) == ("alpha", "Alpha Lab", 344)
    assert [f.name for f in record.fields] == list(penguins.columns)
    by_name = {f.name: f for f in record.fields}
    assert by_name["species"].role == "target" and record.targets == ["species"]
    assert by_name["island"].role == "partition"
    assert (by_name["year"].role, by_name["year"].unit, by_name["year"].type) == (
        "time", "a", "integer")
    assert by_name["bill_length_mm"].unit == "mm" and by_name["body_mass_g"].unit == "g"
    assert by_name["sex"].missing_count == 11 and by_name["body_mass_g"].missing_count == 2
    assert by_name["body_mass_g"].mean == pytest.approx(4201.754, abs=1e-3)
    assert record.delivery_methods == list(grading.DELIVERY_METHODS)  # G1 OPEN allows all
    (dist,) = record.distributions
    assert dist.sha256 == pandas_profile(penguins).sha256
    assert dist.access_url == "sdn://alpha/datasets/penguins"
    assert len(record.schema_hash) == 64
    # A record survives its own JSON form, as the node stores and the coordinator reads it.
    assert CatalogRecord.model_validate(record.model_dump(mode="json")) == record


def test_columns_without_an_entry_are_plain_features(penguins, penguins_meta):
    fields = {k: v for k, v in penguins_meta["fields"].items() if k != "sex"}
    record = penguins_record(penguins_meta, penguins, fields=fields)
    sex = next(f for f in record.fields if f.name == "sex")
    assert (sex.role, sex.pi_kind, sex.description) == ("feature", "none", None)


def test_contraception_example_is_valid_sensitive_metadata():
    meta = load_metadata((REPO / "configs/datasets/contraception.yaml").read_text(),
                         "contraception.yaml")
    assert (meta.security_grade, meta.sharing_category) == ("G4", "CONDITIONAL")
    assert meta.personal_info.sensitive and meta.personal_info.categories == ["medical_health"]
    assert meta.delivery_methods == ["metadata_only", "in_node_service"]
    assert meta.targets == ["use"] and meta.fields["woman"].pi_kind == "direct_identifier"


def test_defaults_follow_the_cell_and_english_alone_is_a_title(penguins_meta):
    meta = load_metadata(
        meta_text(penguins_meta, title={"en": "Penguins"}, sharing_category="CLOSED",
                  security_grade="G2"),
        "m.yaml",
    )
    assert meta.title.zh is None and meta.title.text() == "Penguins"
    assert meta.delivery_methods == ["metadata_only", "in_node_service"]


BAD_METADATA = [
    ("missing licence", {"license": None}, "license: required field is missing"),
    ("unknown key", {"colour": "blue"}, "colour: unknown key"),
    ("invalid pair", {"security_grade": "G3", "grade_assessment": GRADE_ASSESSMENT},
     "sharing_category: OPEN is not allowed for G3"),
    ("below the PI floor",
     {"security_grade": "G2", "personal_info": SENSITIVE_PI, "approvals": APPROVALS},
     "security_grade: G2 is below the floor G4 required by sensitive personal information "
     "(governance §2.3)"),
    ("forbidden delivery method",
     {"sharing_category": "CLOSED", "delivery_methods": ["metadata_only", "download"]},
     "delivery_methods: download is forbidden for G1 CLOSED data"),
    ("CONDITIONAL without conditions", {"sharing_category": "CONDITIONAL"},
     "conditions_of_use: required when sharing_category is CONDITIONAL"),
    ("G3 without an assessment", {"security_grade": "G3", "sharing_category": "CLOSED"},
     "grade_assessment: required for G3"),
    ("PI without approvals",
     {"security_grade": "G3", "sharing_category": "CLOSED", "grade_assessment": GRADE_ASSESSMENT,
      "personal_info": {"status": "de_identified"}},
     "approvals: required because personal_info.status is de_identified"),
    ("derived without sources", {"dataset_type": "derived"}, "derived_from: required"),
    ("column graded above the dataset",
     {"fields": {"sex": {"description": "Sex", "field_grade": "G2"}}},
     "security_grade: G1 is below G2, the field_grade of column sex"),
    ("target declared with another role",
     {"fields": {"species": {"description": "Species", "role": "feature"}}},
     "fields.species.role: is feature, but the column is listed in targets"),
    ("sensitive categories not flagged",
     {"personal_info": {"status": "identifiable", "categories": ["genetic"]}},
     "personal_info.sensitive: must be true"),
    ("no title text", {"title": {"zh": "", "en": " "}}, "title: give the text in zh or en"),
    ("too few keywords", {"keywords": ["penguins"]}, "keywords: needs at least 3 items, got 1"),
    ("bad version", {"version": 1.0}, "version: '1.0' is not a MAJOR.MINOR.PATCH version"),
    ("licence of no known form", {"license": "free for all"}, "license: 'free for all' is not"),
    ("unregistered licence ref", {"license": "LicenseRef-mine"},
     "license: 'LicenseRef-mine': only LicenseRef-SDN-*"),
    ("ORCID check digit",
     {"creators": [{"name": "K. Gorman", "affiliation": "LTER", "orcid": "0000-0002-0258-9265"}]},
     "creators[0].orcid: '0000-0002-0258-9265' has a wrong check digit"),
    ("unknown grade", {"security_grade": "G7"}, "security_grade: Input should be 'G1'"),
    ("interval backwards", {"collection": {"method": "m", "timeframe": "2009/2007"}},
     "collection.timeframe: '2009/2007' ends before it starts"),
]


@pytest.mark.parametrize("changes,expected", [c[1:] for c in BAD_METADATA],
                         ids=[c[0] for c in BAD_METADATA])
def test_each_bad_metadata_gives_one_message_naming_the_field(penguins_meta, changes, expected):
    message = refusal(penguins_meta, **changes)
    assert message.startswith("bad.yaml: 1 problem\n"), message
    assert expected in message
    assert "pydantic" not in message and "Traceback" not in message


def test_all_problems_are_listed_one_per_line(penguins_meta):
    message = refusal(penguins_meta, license=None, colour="blue", keywords=["a"])
    assert message.splitlines() == [
        "bad.yaml: 3 problems",
        "  keywords: needs at least 3 items, got 1",
        "  license: required field is missing",
        "  colour: unknown key (not a field of the dataset metadata; check the spelling)",
    ]


@pytest.mark.parametrize(
    "text,expected",
    [
        ("title: {zh: x\n", "m.yaml: not valid YAML at line 2, column 1"),
        ("- a\n- b\n", "m.yaml: expected a YAML mapping of metadata fields, got a list"),
        ("", "m.yaml: empty"),
    ],
    ids=["malformed", "list", "empty"],
)
def test_unreadable_yaml_is_one_clear_message(text, expected):
    with pytest.raises(UserError) as exc:
        load_metadata(text, "m.yaml")
    assert str(exc.value).startswith(expected)


def test_metadata_must_match_the_data(penguins, penguins_meta):
    fields = {**penguins_meta["fields"], "beak_colour": {"description": "Colour of the beak"}}
    with pytest.raises(UserError) as exc:
        penguins_record(penguins_meta, penguins, fields=fields)
    assert "fields.beak_colour: no such column in the data" in str(exc.value)
    with pytest.raises(UserError) as exc:
        penguins_record(penguins_meta, penguins, targets=["weight"],
                        fields={k: v for k, v in penguins_meta["fields"].items() if k != "species"})
    assert "targets: 'weight' is not a column of the data" in str(exc.value)


def test_publication_follows_grade_and_category(penguins, penguins_meta):
    g6 = penguins_record(penguins_meta, penguins, security_grade="G6", sharing_category="CLOSED",
                         grade_assessment=GRADE_ASSESSMENT, approvals=APPROVALS)
    assert published_form(g6) is None

    closed = penguins_record(penguins_meta, penguins, sharing_category="CLOSED")
    stub = published_form(closed)
    assert stub == {
        "id": "urn:sdn:alpha:ds:penguins",
        "title": penguins_meta["title"],
        "node_id": "alpha",
        "platform_id": "Alpha Lab",
        "subjects": penguins_meta["subjects"],
        "security_grade": "G1",
        "sharing_category": "CLOSED",
        "stub": True,
    }

    conditions = [{"code": "domestic_only", "text": "Network members in China only."}]
    g5 = penguins_record(penguins_meta, penguins, security_grade="G5",
                         sharing_category="CONDITIONAL", conditions_of_use=conditions,
                         grade_assessment=GRADE_ASSESSMENT, approvals=APPROVALS)
    coarse = published_form(g5)
    assert "fields" not in coarse and coarse["stub"] is False
    assert coarse["record_count"] == 344 and coarse["delivery_methods"] == [
        "metadata_only", "in_node_service"]

    full = published_form(penguins_record(penguins_meta, penguins))
    assert full["fields"][0]["name"] == "species" and full["fields"][0]["type"] == "string"
    assert {"id", "title", "description", "keywords", "subjects", "node_id", "platform_id",
            "security_grade", "sharing_category", "fields", "record_count", "stub",
            "quality"} <= set(full)
    json.dumps(full)  # JSON-able as it is
    mass = next(f for f in full["fields"] if f["name"] == "body_mass_g")
    assert mass["min"] == 2700 and mass["max"] == 6300


def test_column_statistics_are_not_published_above_g2(penguins, penguins_meta):
    conditions = [{"code": "research_only", "text": "Research use only."}]
    g3 = penguins_record(penguins_meta, penguins, security_grade="G3",
                         sharing_category="CONDITIONAL", conditions_of_use=conditions,
                         grade_assessment=GRADE_ASSESSMENT)
    form = published_form(g3)
    mass = next(f for f in form["fields"] if f["name"] == "body_mass_g")
    assert (mass["type"], mass["missing_count"]) == ("number", 2)
    assert all(mass[k] is None for k in ("min", "max", "mean", "std", "distinct_count"))
    # The node keeps them for its own use.
    assert next(f for f in g3.fields if f.name == "body_mass_g").max == 6300


def test_schema_hash_is_stable_and_sensitive_to_types(penguins, penguins_meta):
    record = penguins_record(penguins_meta, penguins)
    again = penguins_record(penguins_meta, penguins[list(reversed(penguins.columns))])
    assert again.schema_hash == record.schema_hash  # same columns, another order
    shard = penguins_record(penguins_meta, penguins[penguins.island == "Dream"])
    assert shard.schema_hash == record.schema_hash  # shards of one dataset are compatible
    year_as_number = [
        f.model_copy(update={"type": "number"}) if f.name == "year" else f for f in record.fields
    ]
    assert schema_hash(year_as_number) != record.schema_hash


def test_a_tampered_record_is_refused(penguins, penguins_meta):
    data = penguins_record(penguins_meta, penguins).model_dump(mode="json")
    data["fields"][7]["type"] = "number"
    with pytest.raises(ValueError, match="schema_hash: does not match the field list"):
        CatalogRecord.model_validate(data)



def test_every_problem_is_reported_in_one_pass(penguins_meta):
    """Field errors, nested rules and dataset-level rules all in one refusal: pydantic alone
    runs a model's rules only once its fields are valid, so each fix met a new round."""
    fields = {**penguins_meta["fields"]}
    fields["species"] = {**fields["species"], "role": "feature"}  # rule over targets
    fields["sex"] = {**fields["sex"], "pi_kind": "nonsense"}  # a column field error
    fields["year"] = {**fields["year"], "field_grade": "G3"}  # rule over the dataset grade
    creators = [{"name": "A. Person", "orcid": "0000-0002-0258-9265"},  # bad digit, no affil.
                *penguins_meta["creators"][1:]]
    message = refusal(
        penguins_meta, dataset_type=None, collection=None, classification=None,
        lifecycle_stage=None, creators=creators, sharing_category="CONDITIONAL",
        personal_info={"status": "none", "sensitive": True, "subjects_count": -1},
        temporal_coverage={"start": "2009-01-01", "end": "2007-01-01"}, fields=fields)
    lines = [line.strip() for line in message.splitlines()[1:]]
    assert set(lines) == {
        "dataset_type: required field is missing",
        "collection: required field is missing",
        "classification: required field is missing",
        "lifecycle_stage: required field is missing",
        "creators[0].orcid: '0000-0002-0258-9265' has a wrong check digit (ISO 7064 MOD 11-2)",
        "creators[0].affiliation: required for a person",
        "personal_info.subjects_count: Input should be greater than or equal to 0",
        "personal_info.sensitive: must be false when status is none",
        "temporal_coverage.end: is before start",
        "fields.sex.pi_kind: Input should be 'none', 'direct_identifier', 'quasi_identifier' "
        "or 'sensitive_attribute', got 'nonsense'",
        "conditions_of_use: required when sharing_category is CONDITIONAL (governance §1.3 #34)",
        "security_grade: G1 is below G3, the field_grade of column year: a dataset takes its "
        "highest column grade (就高从严, governance §2.3)",
        "fields.species.role: is feature, but the column is listed in targets",
    }
    assert message.splitlines()[0] == f"bad.yaml: {len(lines)} problems"


def _readme_list(label: str) -> list[str]:
    """The backquoted names of the README's list item that starts with ``label``
    (up to its first parenthesis or colon after the label: the names in between are
    its fields; nested mentions such as the constraints' keys are left out)."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    match = re.search(rf"^- {re.escape(label)}(.*?)(?=^- |^$)", readme, re.M | re.S)
    assert match, f"README.md has no list item starting with {label!r}"
    text = re.sub(r"\([^)]*\)", "", match.group(1).replace("\n", " "))
    return re.findall(r"`([a-z_]+)`", text)


def test_the_readme_lists_exactly_the_models_fields():
    """The README's field lists against the record model: required, optional, column."""
    fields = MetadataInput.model_fields
    assert _readme_list("Required fields:") == [n for n, f in fields.items() if f.is_required()]
    assert _readme_list("Optional fields") == [n for n, f in fields.items()
                                              if not f.is_required()]
    column = FieldMeta.model_fields
    listed = _readme_list("Column fields")
    required = [n for n, f in column.items() if f.is_required()]
    assert listed[:len(required)] == required
    assert sorted(listed[len(required):]) == sorted(n for n, f in column.items()
                                                    if not f.is_required())
