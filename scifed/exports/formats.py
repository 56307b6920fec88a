"""The export formats a researcher can ask for by name (`scifed catalog export --format`,
the researcher console's download links): one record as text, with its media type and
file suffix, so the command line and the console give the same file."""

from __future__ import annotations

import json
from dataclasses import dataclass

from scifed.errors import UserError


@dataclass(frozen=True)
class ExportFormat:
    name: str
    media_type: str
    suffix: str  # of the downloaded file's name


FORMATS: dict[str, ExportFormat] = {f.name: f for f in (
    ExportFormat("dcat", "text/turtle", "dcat.ttl"),
    ExportFormat("dcat-jsonld", "application/ld+json", "dcat.jsonld"),
    ExportFormat("croissant", "application/ld+json", "croissant.json"),
)}


def export_format(name: str) -> ExportFormat:
    try:
        return FORMATS[name]
    except KeyError:
        raise UserError(f"--format {name}: choose {', '.join(FORMATS)}") from None


def export_record(record: dict, name: str) -> str:
    """A catalog record (its JSON form) as DCAT-3 Turtle, DCAT-3 JSON-LD (rdflib) or
    Croissant JSON-LD (validated by mlcroissant)."""
    from scifed.exports.croissant import to_croissant
    from scifed.exports.dcat import to_dcat

    fmt = export_format(name)
    if fmt.name == "croissant":
        return json.dumps(to_croissant(record), indent=2, ensure_ascii=False)
    return to_dcat([record], "turtle" if fmt.name == "dcat" else "json-ld")
