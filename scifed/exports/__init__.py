"""Catalog records as DCAT-3 (for other catalogs) and Croissant 1.0 + RAI (for ML loaders).

Both exports take the JSON form of a record, as the coordinator holds it, and add the
governance facts that neither standard has a term for in the `sdn:` namespace
(governance §1.1, §1.6).
"""

from __future__ import annotations

from scifed.exports.croissant import (
    CROISSANT_1_0,
    RECORD_SET,
    croissant_with_warnings,
    quality_statement,
    to_croissant,
)
from scifed.exports.dcat import (
    ACCESS_RIGHTS,
    DCAT3,
    DQV,
    FREQUENCY,
    IANA_MEDIA_TYPES,
    SPDX,
    VCARD,
    to_dcat,
)
from scifed.exports.vocab import SDN, citation, license_url

__all__ = [
    "ACCESS_RIGHTS", "CROISSANT_1_0", "DCAT3", "DQV", "FREQUENCY", "IANA_MEDIA_TYPES",
    "RECORD_SET", "SDN", "SPDX", "VCARD", "citation", "croissant_with_warnings",
    "license_url", "quality_statement", "to_croissant", "to_dcat",
]
