"""Catalog records as DCAT-3 (for other catalogs) and Croissant 1.0 + RAI (for ML loaders).

Both exports take the JSON form of a record, as the coordinator holds it, and add the
governance facts that neither standard has a term for in the `sdn:` namespace
(governance §1.1, §1.6).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from decimal import Decimal
from typing import Any, Literal
from urllib.parse import quote

import mlcroissant as mlc
from pydantic import ValidationError
from rdflib import BNode, Graph, Namespace, URIRef
from rdflib import Literal as RdfLiteral
from rdflib.namespace import DCAT, DCTERMS, FOAF, GEO, ORG, PROV, RDF, SKOS, XSD
from rdflib.term import Node

from scifed.errors import UserError
from scifed.record import Agent, CatalogRecord, validation_problems

SDN = Namespace("https://scifed.org/ns/sdn#")
# rdflib's closed DCAT namespace predates DCAT 3 and rejects terms such as dcat:version.
DCAT3 = Namespace("http://www.w3.org/ns/dcat#")
VCARD = Namespace("http://www.w3.org/2006/vcard/ns#")
SPDX = Namespace("http://spdx.org/rdf/terms#")
ACCESS_RIGHTS = Namespace("http://publications.europa.eu/resource/authority/access-right/")
FREQUENCY = Namespace("http://publications.europa.eu/resource/authority/frequency/")
DQV = Namespace("http://www.w3.org/ns/dqv#")
IANA_MEDIA_TYPES = "https://www.iana.org/assignments/media-types/"
CROISSANT_1_0 = "http://mlcommons.org/croissant/1.0"

_ACCESS_RIGHT = {"OPEN": "PUBLIC", "CONDITIONAL": "RESTRICTED", "CLOSED": "NON_PUBLIC"}
_PREFIXES = {
    "dcat": DCAT3, "dct": DCTERMS, "foaf": FOAF, "org": ORG, "vcard": VCARD, "skos": SKOS,
    "spdx": SPDX, "geo": GEO, "sdn": SDN, "xsd": XSD, "dqv": DQV, "prov": PROV,
}
_CROISSANT_TYPES = {
    "string": mlc.DataType.TEXT,
    "number": mlc.DataType.FLOAT,
    "integer": mlc.DataType.INTEGER,
    "boolean": mlc.DataType.BOOL,
    "date": mlc.DataType.DATE,
    "datetime": mlc.DataType.DATETIME,
    "time": mlc.DataType.TIME,
    "year": mlc.DataType.INTEGER,
}
RECORD_SET = "records"


def citation(record: dict[str, Any]) -> str | None:
    """The data citation of GB/T 35294 (creators. title[DS/OL]. version. publisher, year.
    identifier), from the record's JSON form; None for a stub without creators."""
    creators = [c["name"] for c in record.get("creators", [])]
    title = record.get("title") or {}
    if not creators or not (title.get("zh") or title.get("en")):
        return None
    names = ", ".join(creators[:3]) + (", et al" if len(creators) > 3 else "")
    parts = [f"{names}. {title.get('zh') or title.get('en')}[DS/OL]."]
    if record.get("version"):
        parts.append(f"Version {record['version']}.")
    if record.get("publisher") and record.get("issued"):
        parts.append(f"{record['publisher']['name']}, {str(record['issued'])[:4]}.")
    parts.append(f"{record['landing_page'] if record.get('landing_page') else record['id']}.")
    return " ".join(parts)


def quality_statement(quality: dict[str, Any]) -> str:
    """One paragraph on a quality summary or report, for readers of rai:dataLimitations."""
    if "gates" in quality:  # a full report
        failed = [name for name, gate in quality["gates"].items() if not gate["passed"]]
    else:
        failed = list(quality.get("failed_gates", []))
    gates = f"failed gates: {', '.join(failed)}" if failed else "all gates passed"
    text = (f"AI-readiness scorecard {quality.get('scorecard_version', '?')} "
            f"({str(quality.get('computed_at', ''))[:10]}): grade {quality['grade']}, score "
            f"{float(quality.get('score', 0.0)):.1f}/100; {gates}.")
    weak = {d: s for d, s in (quality.get("dimensions") or {}).items()
            if s is not None and s < 1}
    if weak:
        text += " Dimensions below full marks: " + ", ".join(
            f"{d} {s:.2f}" for d, s in weak.items()) + "."
    flagged = [f"{m} {r['status']}" for m, r in (quality.get("metrics") or {}).items()
               if r["status"] in ("warn", "fail")]
    if flagged:
        text += f" Metrics that warn or fail: {', '.join(flagged)}."
    return text


def license_url(license: str) -> str:
    """The licence as a URL: SPDX ids resolve at spdx.org, network licences at scifed.org."""
    if license.startswith(("http://", "https://")):
        return license
    if license.startswith("LicenseRef-SDN-"):
        return f"https://scifed.org/licenses/{license}"
    return f"http://spdx.org/licenses/{license}"


# -- DCAT-3 ---------------------------------------------------------------------------


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


# -- Croissant 1.0 + RAI --------------------------------------------------------------


def _agent(ctx: mlc.Context, agent: Agent) -> mlc.Person | mlc.Organization:
    if agent.type == "organization":
        return mlc.Organization(ctx=ctx, name=agent.name)
    url = f"https://orcid.org/{agent.orcid}" if agent.orcid else None
    return mlc.Person(ctx=ctx, name=agent.name, url=url)


def _pi_statement(record: CatalogRecord) -> str:
    pi = record.personal_info
    if pi.status == "none":
        return "No personal information."
    parts = [f"Personal information: {pi.status.replace('_', '-')}"]
    if pi.sensitive:
        parts.append(f"sensitive ({', '.join(pi.categories)})")
    if pi.subjects_count is not None:
        parts.append(f"{pi.subjects_count} data subjects")
    return "; ".join(parts) + "."


def _conditions(record: CatalogRecord) -> str:
    methods = ", ".join(record.delivery_methods) or "none"
    texts = [f"{c.text} [{c.code}]" for c in record.conditions_of_use]
    return " ".join([*texts, f"Delivery: {methods} (sharing category {record.sharing_category})."])


def _one(value: str | None) -> list[str] | None:
    return [value] if value else None


def _limitations(record: CatalogRecord) -> list[str] | None:
    texts = [record.limitations] if record.limitations else []
    if record.quality:
        texts.append(quality_statement(record.quality))
    return texts or None


def _metadata(record: CatalogRecord) -> mlc.Metadata:
    ctx = mlc.Context(conforms_to=CROISSANT_1_0)
    dist_ids = [d.dist_id for d in record.distributions]
    distribution = [
        mlc.FileObject(
            ctx=ctx,
            id=d.dist_id,
            name=d.title or d.dist_id,
            content_url=d.access_url,
            encoding_formats=[d.media_type],
            sha256=d.sha256,
            content_size=f"{d.byte_size} B",
        )
        for d in record.distributions
    ]
    fields = [
        mlc.Field(
            ctx=ctx,
            id=f"{RECORD_SET}/{quote(f.name, safe='')}",
            name=f.name,
            description=f.description or (f.title.text() if f.title else None),
            data_types=[_CROISSANT_TYPES.get(f.type, mlc.DataType.TEXT)],
            source=mlc.Source(
                ctx=ctx, file_object=dist_ids[0], extract=mlc.Extract(ctx=ctx, column=f.name)
            ),
        )
        for f in record.fields
    ]
    keys = [field.id for field, f in zip(fields, record.fields, strict=True) if f.role == "id"]
    processing, annotation = record.processing, record.annotation
    return mlc.Metadata(
        ctx=ctx,
        name=record.title.text(),
        description=record.description.zh or record.description.en,
        url=record.landing_page or record.id,
        license=[license_url(record.license)],
        creators=[_agent(ctx, a) for a in record.creators],
        publisher=[mlc.Organization(ctx=ctx, name=record.publisher.name)],
        date_published=record.issued,
        date_modified=record.modified,
        version=record.version,
        cite_as=citation(record.model_dump(mode="json")),
        keywords=record.keywords,
        in_language=record.languages or None,
        distribution=distribution,
        record_sets=[mlc.RecordSet(ctx=ctx, id=RECORD_SET, name=RECORD_SET, fields=fields,
                                   key=keys or None)],
        data_collection=" ".join(
            filter(None, [record.collection.method, record.collection.instruments])
        ),
        data_collection_type=[record.dataset_type],
        data_collection_timeframe=record.collection.timeframe.split("/"),
        personal_sensitive_information=[_pi_statement(record)],
        data_preprocessing_protocol=_one(processing and processing.preprocessing),
        data_imputation_protocol=processing and processing.imputation,
        data_manipulation_protocol=processing and processing.manipulation,
        data_annotation_protocol=_one(annotation and annotation.protocol),
        data_annotation_platform=_one(annotation and annotation.platform),
        annotations_per_item=annotation and annotation.per_item,
        annotator_demographics=_one(annotation and annotation.annotator_demographics),
        machine_annotation_tools=_one(annotation and annotation.tools),
        data_use_cases=_one(record.intended_uses),
        data_limitations=_limitations(record),
        data_biases=_one(record.biases),
        data_social_impact=record.social_impact,
        data_release_maintenance_plan=record.maintenance_plan,
    )


def _governance_keys(record: CatalogRecord, jsonld: dict[str, Any]) -> None:
    """Add what Croissant has no term for: schema.org access facts and `sdn:` keys."""
    jsonld["@context"]["sdn"] = str(SDN)
    if record.title.zh and record.title.en:
        jsonld["alternateName"] = record.title.en
    jsonld["isAccessibleForFree"] = record.sharing_category == "OPEN"
    jsonld["conditionsOfAccess"] = _conditions(record)
    jsonld["sdn:securityGrade"] = record.security_grade
    jsonld["sdn:sharingCategory"] = record.sharing_category
    jsonld["sdn:schemaHash"] = record.schema_hash
    jsonld["sdn:recordCount"] = record.record_count
    if record.targets:
        jsonld["sdn:targetField"] = [f"{RECORD_SET}/{quote(t, safe='')}" for t in record.targets]
    if record.quality:
        jsonld["sdn:qualityReport"] = record.quality
    units = {f.name: f.unit for f in record.fields if f.unit}
    for field in jsonld["recordSet"][0]["field"]:
        if field["name"] in units:
            field["sdn:unit"] = units[field["name"]]


def to_croissant(record: dict[str, Any]) -> dict[str, Any]:
    """Croissant 1.0 JSON-LD with RAI and `sdn:` keys, validated by mlcroissant.

    Only a fully published record can be exported: a loader needs the file digest and
    the columns, which stubs (CLOSED) and coarse records (G5) do not carry.
    """
    return croissant_with_warnings(record)[0]


def croissant_with_warnings(record: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """:func:`to_croissant` and the warnings mlcroissant's validation gave (Q7c)."""
    record_id = record.get("id", "?")
    if record.get("stub"):
        raise UserError(
            f"record {record_id} is a catalog stub (CLOSED dataset): Croissant needs its "
            "distribution and columns, which the node does not publish"
        )
    if not record.get("fields") or not record.get("distributions"):
        raise UserError(
            f"record {record_id} is published without its columns or distribution (G5 "
            "records are coarse): Croissant needs both"
        )
    try:
        parsed = CatalogRecord.model_validate(record)
    except ValidationError as exc:
        lines = "\n".join(f"  {line}" for line in validation_problems(exc))
        raise UserError(f"record {record_id} is not a valid catalog record:\n{lines}") from None
    try:
        jsonld = _metadata(parsed).to_json()
        _governance_keys(parsed, jsonld)
        dataset = mlc.Dataset(jsonld=jsonld)
    except mlc.ValidationError as exc:
        raise UserError(f"record {record_id}: Croissant validation failed:\n{exc}") from None
    return jsonld, sorted(dataset.metadata.ctx.issues.warnings)

