"""What the DCAT-3 and Croissant exports share: the `sdn:` namespace for the governance
facts neither standard has a term for, the licence as a URL and the data citation."""

from __future__ import annotations

from typing import Any

from rdflib import Namespace

SDN = Namespace("https://scifed.org/ns/sdn#")


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


def license_url(license: str) -> str:
    """The licence as a URL: SPDX ids resolve at spdx.org, network licences at scifed.org."""
    if license.startswith(("http://", "https://")):
        return license
    if license.startswith("LicenseRef-SDN-"):
        return f"https://scifed.org/licenses/{license}"
    return f"http://spdx.org/licenses/{license}"
