"""A node's identifier set: the distinct identifiers of its selected rows, normalised so
that two platforms that write the same identifier differently still match.

Rules (the same at every node, documented for the researcher in docs/job-types.md):

* a missing value, or a text that is empty after normalisation, is no identifier;
* an ``integer`` column is rendered in decimal (``7``), a ``number`` column as an integer
  where the value is whole (``7.0`` → ``7``), else as Python's shortest round-trip repr
  (``7.5``); so the same number matches across integer and number columns;
* a text column goes through the job's ``normalise`` steps in order: ``strip`` (leading
  and trailing whitespace), ``lower`` / ``upper`` (Unicode case), ``nfkc`` (Unicode
  compatibility form: full-width digits become ASCII), ``collapse_spaces`` (runs of
  whitespace become one space), ``integers`` (a text that reads as a decimal integer is
  rendered as one: ``"007"`` → ``7``, so it matches a numeric 7). Without ``integers``
  ``"007"`` and ``7`` are different identifiers.

Each identifier is then UTF-8 encoded; only its blinded hash leaves the node.
"""

from __future__ import annotations

import re
import unicodedata

from jobs.base import Table
from scifed.errors import UserError

_INTEGER = re.compile(r"[+-]?[0-9]+")
_SPACES = re.compile(r"\s+")


def _text(value: str, steps: list[str]) -> str:
    for step in steps:
        if step == "strip":
            value = value.strip()
        elif step == "lower":
            value = value.lower()
        elif step == "upper":
            value = value.upper()
        elif step == "nfkc":
            value = unicodedata.normalize("NFKC", value)
        elif step == "collapse_spaces":
            value = _SPACES.sub(" ", value)
        elif step == "integers" and _INTEGER.fullmatch(value.strip()):
            value = str(int(value.strip()))
    return value


def _number(text: str) -> str:
    x = float(text)
    return str(int(x)) if x.is_integer() and abs(x) < 2**63 else repr(x)


def canonical(value: str, column_type: str, steps: list[str]) -> str:
    """One identifier as it is hashed ("" for none)."""
    if column_type == "integer":
        return str(int(value))
    if column_type == "number":
        return "" if value.lower() == "nan" else _number(value)
    return _text(value, steps)


def identifier_set(table: Table, column: str, column_type: str,
                   steps: list[str]) -> set[bytes]:
    """The distinct normalised identifiers of the selected rows."""
    try:
        rows = table.query([table.category(column)],
                           "SELECT DISTINCT c0 FROM d WHERE c0 IS NOT NULL")
        out = {canonical(str(v), column_type, steps) for (v,) in rows}
    except ValueError as exc:
        raise UserError(f"psi.on: column {column!r} holds a value that is not a "
                        f"{column_type}: {exc}") from None
    out.discard("")
    return {v.encode() for v in out}
