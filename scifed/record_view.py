"""Human-readable view of a catalog record (node `dataset show`, `catalog show`)."""

from __future__ import annotations

from scifed.console import console, print_table


def value_text(v) -> str:
    """A record value as one line: a bilingual string both ways, lists and mappings joined."""
    if isinstance(v, dict) and set(v) <= {"zh", "en"}:
        return " / ".join(x for x in (v.get("zh"), v.get("en")) if x)
    if isinstance(v, list):
        return ", ".join(value_text(x) for x in v)
    if isinstance(v, dict):
        return ", ".join(f"{k}={value_text(x)}" for k, x in v.items() if x not in (None, "", []))
    return "" if v is None else str(v)


SUMMARY_KEYS = ("id", "title", "description", "node_id", "platform_id", "security_grade",
                "sharing_category", "record_count", "keywords", "subjects", "license",
                "version", "issued", "modified", "publisher", "contact_point", "data_officer",
                "temporal_coverage", "spatial_coverage", "personal_info", "delivery_methods",
                "conditions_of_use", "schema_hash", "stub")


def print_record(record: dict) -> None:
    print_table(value_text(record.get("title")) or record.get("id", ""), ["field", "value"],
                [(k, value_text(record[k])) for k in SUMMARY_KEYS if k in record])
    fields = record.get("fields")
    if fields:
        print_table("columns", ["name", "type", "unit", "role", "missing", "min", "max", "mean"],
                    [(f.get("name"), f.get("type"), f.get("unit"), f.get("role"),
                      f.get("missing_count"), f.get("min"), f.get("max"),
                      None if f.get("mean") is None else f"{f['mean']:.6g}") for f in fields])
    elif record.get("stub"):
        console.print("[dim]catalog stub: the node publishes no description or columns "
                      "for this CLOSED dataset[/]")
