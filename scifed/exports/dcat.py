"""Catalog records as a DCAT-3 catalog (Turtle or JSON-LD), with the scorecard as DQV
quality measurements."""

from __future__ import annotations

import re
from collections.abc import Iterable
from decimal import Decimal
from typing import Any, Literal

from rdflib import BNode, Graph, Namespace, URIRef
from rdflib import Literal as RdfLiteral
from rdflib.namespace import DCAT, DCTERMS, FOAF, GEO, ORG, PROV, RDF, SKOS, XSD
from rdflib.term import Node

from scifed.errors import UserError
from scifed.exports.vocab import SDN, citation, license_url

# rdflib's closed DCAT namespace predates DCAT 3 and rejects terms such as dcat:version.
DCAT3 = Namespace("http://www.w3.org/ns/dcat#")
VCARD = Namespace("http://www.w3.org/2006/vcard/ns#")
SPDX = Namespace("http://spdx.org/rdf/terms#")
ACCESS_RIGHTS = Namespace("http://publications.europa.eu/resource/authority/access-right/")
FREQUENCY = Namespace("http://publications.europa.eu/resource/authority/frequency/")
DQV = Namespace("http://www.w3.org/ns/dqv#")
IANA_MEDIA_TYPES = "https://www.iana.org/assignments/media-types/"

_ACCESS_RIGHT = {"OPEN": "PUBLIC", "CONDITIONAL": "RESTRICTED", "CLOSED": "NON_PUBLIC"}
_PREFIXES = {
    "dcat": DCAT3, "dct": DCTERMS, "foaf": FOAF, "org": ORG, "vcard": VCARD, "skos": SKOS,
    "spdx": SPDX, "geo": GEO, "sdn": SDN, "xsd": XSD, "dqv": DQV, "prov": PROV,
}


def _add_lang(g: Graph, subject: Node, predicate: URIRef, text: dict[str, Any] | None) -> None:
    for lang, value in (text or {}).items():
        if value:
            g.add((subject, predicate, RdfLiteral(value, lang=lang)))


def _date(value: str) -> RdfLiteral:
    return RdfLiteral(value, datatype=XSD.dateTime if "T" in value else XSD.date)


def _theme(g: Graph, subject: str) -> Node:
    """A subject as a skos:Concept: a URI as is, a GB/T 13745 code as notation, else a label."""
    if subject.startswith(("http://", "https://")):
        return URIRef(subject)
    concept = BNode()
    g.add((concept, RDF.type, SKOS.Concept))
    if re.fullmatch(r"\d{3}(\.?\d+)*", subject):
        g.add((concept, SKOS.notation, RdfLiteral(subject)))
    else:
        g.add((concept, SKOS.prefLabel, RdfLiteral(subject)))
    return concept


def _organization(g: Graph, name: str) -> BNode:
    node = BNode()
    g.add((node, RDF.type, FOAF.Organization))
    g.add((node, FOAF.name, RdfLiteral(name)))
    return node


def _creator(g: Graph, agent: dict[str, Any]) -> Node:
    if agent.get("type") == "organization":
        return _organization(g, agent["name"])
    person: Node = URIRef(f"https://orcid.org/{agent['orcid']}") if agent.get("orcid") else BNode()
    g.add((person, RDF.type, FOAF.Person))
    g.add((person, FOAF.name, RdfLiteral(agent["name"])))
    if agent.get("affiliation"):
        g.add((person, ORG.memberOf, _organization(g, agent["affiliation"])))
    return person


def _contact(g: Graph, contact: dict[str, Any]) -> BNode:
    node = BNode()
    g.add((node, RDF.type, VCARD.Kind))
    g.add((node, VCARD.fn, RdfLiteral(contact["name"])))
    g.add((node, VCARD.hasEmail, URIRef(f"mailto:{contact['email']}")))
    if contact.get("phone"):
        g.add((node, VCARD.hasTelephone, URIRef("tel:" + re.sub(r"[^\d+]", "", contact["phone"]))))
    return node


def _period(g: Graph, coverage: dict[str, Any]) -> BNode:
    node = BNode()
    g.add((node, RDF.type, DCTERMS.PeriodOfTime))
    g.add((node, DCAT.startDate, _date(coverage["start"])))
    if coverage.get("end"):
        g.add((node, DCAT.endDate, _date(coverage["end"])))
    return node


def _location(g: Graph, coverage: dict[str, Any]) -> BNode:
    node = BNode()
    g.add((node, RDF.type, DCTERMS.Location))
    g.add((node, SKOS.prefLabel, RdfLiteral(coverage["place_name"])))
    if coverage.get("admin_code"):
        g.add((node, DCTERMS.identifier, RdfLiteral(coverage["admin_code"])))
    if coverage.get("bbox_wkt"):
        g.add((node, DCAT.bbox, RdfLiteral(coverage["bbox_wkt"], datatype=GEO.wktLiteral)))
    return node


def _personal_info(g: Graph, info: dict[str, Any]) -> BNode:
    node = BNode()
    g.add((node, SDN.status, RdfLiteral(info["status"])))
    g.add((node, SDN.sensitive, RdfLiteral(bool(info.get("sensitive")))))
    for category in info.get("categories", []):
        g.add((node, SDN.category, RdfLiteral(category)))
    return node


def _measurement(g: Graph, ds: Node, metric: URIRef, value: Any, when: RdfLiteral | None,
                 status: str | None = None) -> None:
    node = BNode()
    g.add((ds, DQV.hasQualityMeasurement, node))
    g.add((node, RDF.type, DQV.QualityMeasurement))
    g.add((node, DQV.computedOn, ds))
    g.add((node, DQV.isMeasurementOf, metric))
    if isinstance(value, bool):
        g.add((node, DQV.value, RdfLiteral(value, datatype=XSD.boolean)))
    elif isinstance(value, int | float):
        # xsd:decimal keeps every digit; rdflib writes xsd:double to Turtle with 7.
        g.add((node, DQV.value, RdfLiteral(Decimal(repr(float(value))), datatype=XSD.decimal)))
    else:
        g.add((node, DQV.value, RdfLiteral(value)))
    if when is not None:
        g.add((node, PROV.generatedAtTime, when))
    if status is not None:
        g.add((node, SDN.status, RdfLiteral(status)))


def _metric(g: Graph, name: str, label: str, dimension: str | None) -> URIRef:
    metric = SDN[f"metric-{name}"]
    g.add((metric, RDF.type, DQV.Metric))
    g.add((metric, SKOS.prefLabel, RdfLiteral(label, lang="en")))
    if dimension is not None:
        dim = SDN[f"dimension-{dimension}"]
        g.add((dim, RDF.type, DQV.Dimension))
        g.add((dim, SKOS.prefLabel, RdfLiteral(dimension.replace("_", " "), lang="en")))
        g.add((metric, DQV.inDimension, dim))
    return metric


def _quality(g: Graph, ds: Node, quality: dict[str, Any]) -> None:
    """The scorecard as dqv:QualityMeasurements: one per metric that has a value when the
    full report is published, else the summary's grade, score, gates and dimensions."""
    when = _date(quality["computed_at"]) if quality.get("computed_at") else None
    g.add((ds, SDN.qualityGrade, RdfLiteral(quality["grade"])))
    _measurement(g, ds, _metric(g, "grade", "AI-readiness grade (A-D)", None),
                 quality["grade"], when)
    if quality.get("score") is not None:
        _measurement(g, ds, _metric(g, "score", "AI-readiness score (0-100)", None),
                     quality["score"], when)
    for dimension, score in (quality.get("dimensions") or {}).items():
        if score is not None:
            metric = _metric(g, f"{dimension}-score", f"{dimension} score (0-1)", dimension)
            _measurement(g, ds, metric, score, when)
    if "metrics" in quality:
        for name, result in quality["metrics"].items():
            if result.get("value") is not None:
                metric = _metric(g, name, f"{name} {result.get('title', '')}".strip(),
                                 result.get("dimension"))
                _measurement(g, ds, metric, result["value"], when, result["status"])
    else:
        _measurement(g, ds, _metric(g, "gates-passed", "all quality gates passed", None),
                     bool(quality.get("gates_passed")), when)


def _distribution(g: Graph, dist: dict[str, Any]) -> BNode:
    node = BNode()
    g.add((node, RDF.type, DCAT.Distribution))
    g.add((node, DCTERMS.identifier, RdfLiteral(dist["dist_id"])))
    if dist.get("title"):
        g.add((node, DCTERMS.title, RdfLiteral(dist["title"])))
    g.add((node, DCAT.mediaType, URIRef(IANA_MEDIA_TYPES + dist["media_type"])))
    g.add((node, DCAT.byteSize, RdfLiteral(dist["byte_size"], datatype=XSD.nonNegativeInteger)))
    checksum = BNode()
    g.add((node, SPDX.checksum, checksum))
    g.add((checksum, RDF.type, SPDX.Checksum))
    g.add((checksum, SPDX.algorithm, SPDX.checksumAlgorithm_sha256))
    g.add((checksum, SPDX.checksumValue, RdfLiteral(dist["sha256"], datatype=XSD.hexBinary)))
    g.add((node, DCAT.accessURL, URIRef(dist["access_url"])))
    return node


def _add_dataset(g: Graph, catalog: Node, rec: dict[str, Any]) -> None:
    """One dcat:Dataset from whatever the record carries (a stub carries little)."""
    ds = URIRef(rec["id"])
    g.add((catalog, DCAT.dataset, ds))
    g.add((ds, RDF.type, DCAT.Dataset))
    g.add((ds, DCTERMS.identifier, RdfLiteral(rec["id"])))
    _add_lang(g, ds, DCTERMS.title, rec.get("title"))
    _add_lang(g, ds, DCTERMS.description, rec.get("description"))
    for keyword in rec.get("keywords", []):
        g.add((ds, DCAT.keyword, RdfLiteral(keyword)))
    for subject in rec.get("subjects", []):
        g.add((ds, DCAT.theme, _theme(g, subject)))
    for key, predicate in (("issued", DCTERMS.issued), ("modified", DCTERMS.modified)):
        if rec.get(key):
            g.add((ds, predicate, _date(rec[key])))
    if rec.get("publisher"):
        publisher = _organization(g, rec["publisher"]["name"])
        if rec["publisher"].get("uscc"):
            g.add((publisher, DCTERMS.identifier, RdfLiteral(rec["publisher"]["uscc"])))
        g.add((ds, DCTERMS.publisher, publisher))
    for agent in rec.get("creators", []):
        g.add((ds, DCTERMS.creator, _creator(g, agent)))
    if rec.get("contact_point"):
        g.add((ds, DCAT.contactPoint, _contact(g, rec["contact_point"])))
    if rec.get("temporal_coverage"):
        g.add((ds, DCTERMS.temporal, _period(g, rec["temporal_coverage"])))
    if rec.get("spatial_coverage"):
        g.add((ds, DCTERMS.spatial, _location(g, rec["spatial_coverage"])))
    if rec.get("license"):
        licence = URIRef(license_url(rec["license"]))
        g.add((licence, RDF.type, DCTERMS.LicenseDocument))
        g.add((ds, DCTERMS.license, licence))
    if rec.get("sharing_category"):
        g.add((ds, DCTERMS.accessRights, ACCESS_RIGHTS[_ACCESS_RIGHT[rec["sharing_category"]]]))
        g.add((ds, SDN.sharingCategory, RdfLiteral(rec["sharing_category"])))
    if rec.get("version"):
        g.add((ds, DCAT3.version, RdfLiteral(rec["version"])))
    if rec.get("landing_page"):
        g.add((ds, DCAT.landingPage, URIRef(rec["landing_page"])))
    if rec.get("update_frequency"):
        g.add((ds, DCTERMS.accrualPeriodicity, FREQUENCY[rec["update_frequency"]]))
    if rec.get("security_grade"):
        g.add((ds, SDN.securityGrade, RdfLiteral(rec["security_grade"])))
    if rec.get("record_count") is not None:
        g.add((ds, SDN.recordCount, RdfLiteral(rec["record_count"], datatype=XSD.integer)))
    if rec.get("schema_hash"):
        g.add((ds, SDN.schemaHash, RdfLiteral(rec["schema_hash"])))
    if rec.get("personal_info"):
        g.add((ds, SDN.personalInformation, _personal_info(g, rec["personal_info"])))
    for dist in rec.get("distributions", []):
        g.add((ds, DCAT.distribution, _distribution(g, dist)))
    if cite := citation(rec):
        g.add((ds, DCTERMS.bibliographicCitation, RdfLiteral(cite)))
    if rec.get("quality"):
        _quality(g, ds, rec["quality"])


def to_dcat(
    records: Iterable[dict[str, Any]],
    fmt: Literal["turtle", "json-ld"],
    catalog_title: str | None = None,
) -> str:
    """A dcat:Catalog of the given records (their published JSON form), as Turtle or JSON-LD."""
    if fmt not in ("turtle", "json-ld"):
        raise UserError(f"DCAT format {fmt!r}: choose turtle or json-ld")
    g = Graph()
    for prefix, namespace in _PREFIXES.items():
        g.bind(prefix, namespace)
    catalog = BNode()
    g.add((catalog, RDF.type, DCAT.Catalog))
    if catalog_title:
        g.add((catalog, DCTERMS.title, RdfLiteral(catalog_title)))
    for record in records:
        _add_dataset(g, catalog, record)
    if fmt == "json-ld":
        context = {prefix: str(namespace) for prefix, namespace in _PREFIXES.items()}
        return g.serialize(format="json-ld", context=context, indent=2)
    return g.serialize(format="turtle")
