"""DCAT-3 and Croissant exports of the real penguins record, read back by rdflib/mlcroissant."""

from __future__ import annotations

import mlcroissant as mlc
import pytest
import rdflib
from rdflib import Literal, URIRef
from rdflib import namespace as ns
from rdflib.compare import isomorphic
from test_record import APPROVALS, GRADE_ASSESSMENT, penguins_record

from scifed.errors import UserError
from scifed.exports import ACCESS_RIGHTS, CROISSANT_1_0, DCAT3, SDN, SPDX, to_croissant, to_dcat
from scifed.record import published_form

DATASET = URIRef("urn:sdn:alpha:ds:penguins")


@pytest.fixture(scope="module")
def record(penguins, penguins_meta):
    return published_form(penguins_record(penguins_meta, penguins))


@pytest.fixture(scope="module")
def stub(penguins, penguins_meta):
    return published_form(penguins_record(penguins_meta, penguins, sharing_category="CLOSED"))


def test_dcat_turtle_parses_back_with_the_record(record):
    g = rdflib.Graph().parse(data=to_dcat([record], "turtle", "Alpha catalog"), format="turtle")
    assert (None, ns.DCAT.dataset, DATASET) in g
    assert set(g.objects(DATASET, ns.DCTERMS.title)) == {
        Literal(record["title"]["zh"], lang="zh"), Literal(record["title"]["en"], lang="en")}
    assert g.value(DATASET, ns.DCTERMS.identifier) == Literal("urn:sdn:alpha:ds:penguins")
    assert g.value(DATASET, ns.DCTERMS.license) == URIRef("http://spdx.org/licenses/CC0-1.0")
    publisher = g.value(DATASET, ns.DCTERMS.publisher)
    assert str(g.value(publisher, ns.FOAF.name)) == record["publisher"]["name"]
    assert Literal("morphometrics") in set(g.objects(DATASET, ns.DCAT.keyword))
    themes = list(g.objects(DATASET, ns.DCAT.theme))
    assert {str(g.value(t, ns.SKOS.notation) or g.value(t, ns.SKOS.prefLabel)) for t in themes} == {
        "180", "Ecology"}
    assert g.value(DATASET, ns.DCTERMS.accessRights) == ACCESS_RIGHTS.PUBLIC
    assert g.value(DATASET, DCAT3.version) == Literal("1.0.0")
    assert g.value(DATASET, ns.DCTERMS.issued) == Literal("2020-07-16", datatype=ns.XSD.date)
    assert str(g.value(DATASET, SDN.securityGrade)) == "G1"
    assert g.value(DATASET, SDN.recordCount).toPython() == 344
    assert str(g.value(DATASET, SDN.schemaHash)) == record["schema_hash"]
    period = g.value(DATASET, ns.DCTERMS.temporal)
    assert str(g.value(period, ns.DCAT.startDate)) == "2007-11-01"
    dist = g.value(DATASET, ns.DCAT.distribution)
    checksum = g.value(dist, SPDX.checksum)
    assert str(g.value(checksum, SPDX.checksumValue)) == record["distributions"][0]["sha256"]
    assert g.value(checksum, SPDX.algorithm) == SPDX.checksumAlgorithm_sha256
    assert g.value(dist, ns.DCAT.byteSize).toPython() == record["distributions"][0]["byte_size"]
    assert g.value(dist, ns.DCAT.accessURL) == URIRef("sdn://alpha/datasets/penguins")
    creators = {str(g.value(c, ns.FOAF.name)) for c in g.objects(DATASET, ns.DCTERMS.creator)}
    assert creators == {"Kristen B. Gorman", "Tony D. Williams", "William R. Fraser"}


def test_dcat_json_ld_is_the_same_graph(record, stub):
    records = [record, {**stub, "id": "urn:sdn:alpha:ds:dream"}]
    turtle = rdflib.Graph().parse(data=to_dcat(records, "turtle"), format="turtle")
    jsonld = rdflib.Graph().parse(data=to_dcat(records, "json-ld"), format="json-ld")
    assert isomorphic(turtle, jsonld)


def test_dcat_of_a_stub_holds_only_what_is_published(stub):
    g = rdflib.Graph().parse(data=to_dcat([stub], "turtle"), format="turtle")
    assert g.value(DATASET, ns.DCTERMS.accessRights) == ACCESS_RIGHTS.NON_PUBLIC
    assert str(g.value(DATASET, SDN.securityGrade)) == "G1"
    assert len(set(g.objects(DATASET, ns.DCTERMS.title))) == 2
    absent = (ns.DCTERMS.description, ns.DCAT.distribution, ns.DCAT.keyword, ns.DCTERMS.license)
    for predicate in absent:
        assert g.value(DATASET, predicate) is None


def test_dcat_format_must_be_known(record):
    with pytest.raises(UserError, match="choose turtle or json-ld"):
        to_dcat([record], "xml")


def test_croissant_validates_and_keeps_governance_keys(record):
    jsonld = to_croissant(record)
    dataset = mlc.Dataset(jsonld=jsonld)
    assert dataset.metadata.ctx.issues.errors == set()
    assert jsonld["conformsTo"] == CROISSANT_1_0
    assert jsonld["sdn:securityGrade"] == "G1" and jsonld["sdn:sharingCategory"] == "OPEN"
    assert jsonld["sdn:schemaHash"] == record["schema_hash"]
    assert jsonld["sdn:recordCount"] == 344
    assert jsonld["@context"]["sdn"] == str(SDN)
    (file_object,) = jsonld["distribution"]
    assert file_object["sha256"] == record["distributions"][0]["sha256"]
    assert file_object["contentUrl"] == "sdn://alpha/datasets/penguins"
    fields = {f["name"]: f for f in jsonld["recordSet"][0]["field"]}
    assert list(fields) == [f["name"] for f in record["fields"]]
    assert fields["body_mass_g"]["dataType"] == "sc:Float"
    assert fields["body_mass_g"]["sdn:unit"] == "g"
    assert jsonld["sdn:targetField"] == ["records/species"]
    assert jsonld["rai:dataCollectionType"] == "observational"
    assert jsonld["rai:personalSensitiveInformation"] == "No personal information."
    assert jsonld["isAccessibleForFree"] is True
    # The extension keys survive mlcroissant's own round trip.
    assert dataset.metadata.to_json()["sdn:securityGrade"] == "G1"


def test_croissant_of_a_stub_or_coarse_record_is_refused(stub, penguins, penguins_meta):
    with pytest.raises(UserError, match="is a catalog stub \\(CLOSED dataset\\)"):
        to_croissant(stub)
    coarse = published_form(penguins_record(
        penguins_meta, penguins, security_grade="G5", sharing_category="CONDITIONAL",
        conditions_of_use=[{"code": "domestic_only", "text": "Members in China only."}],
        grade_assessment=GRADE_ASSESSMENT, approvals=APPROVALS))
    with pytest.raises(UserError, match="without its columns"):
        to_croissant(coarse)


def test_croissant_refuses_an_invalid_record(record):
    with pytest.raises(UserError, match="security_grade: G1 is below the floor"):
        to_croissant({**record, "personal_info": {"status": "identifiable"}})
