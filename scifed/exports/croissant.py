"""A catalog record as Croissant 1.0 JSON-LD with the Responsible AI (RAI) vocabulary,
validated by mlcroissant."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import mlcroissant as mlc
from pydantic import ValidationError

from scifed.errors import UserError
from scifed.exports.vocab import SDN, citation, license_url
from scifed.record import Agent, CatalogRecord, validation_problems

CROISSANT_1_0 = "http://mlcommons.org/croissant/1.0"

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


def _published_report(quality: dict[str, Any]) -> dict[str, Any]:
    """A quality report as the export carries it: without each metric's ``said`` (the
    key and fields of its texts, kept for the node console's language), which is no part
    of the report a reader of the JSON-LD needs and which JSON-LD tools would walk."""
    metrics = quality.get("metrics")
    if not isinstance(metrics, dict):
        return quality
    return {**quality, "metrics": {
        m: {k: v for k, v in r.items() if k != "said"} if isinstance(r, dict) else r
        for m, r in metrics.items()}}


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
        jsonld["sdn:qualityReport"] = _published_report(record.quality)
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
