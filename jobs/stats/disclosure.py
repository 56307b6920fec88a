"""Disclosure rules of ``stats`` that depend on the column dictionary: which columns may
be grouped, which labels may reach a researcher, and how quantiles are bounded.

Group counts release category *labels*, and a label can itself be a person's value (an
id, a zip code, a salary). So a column is grouped only if it is a category: not numeric
(unless its values are a declared enumeration), not an identifier (role ``id``, or a
direct or quasi identifier in the dictionary), with at most :data:`MAX_LEVELS` levels at
a node and no more than :data:`MAX_DENSITY` levels per row (DataSHIELD's ``levels.max``
and ``levels.density``). A label then reaches the researcher only if the dictionary
declares it or at least k rows hold it across the federation; under differential
privacy, labels come only from the declared enumeration, never from the data.

Quantiles are order statistics, so each is one person's value unless bounded: a
probability must lie in [a, 1 − a] with a = k / N (N the pooled count), so at least k
values lie at or beyond it on each side; at G2 and above the minimum and maximum
(p = 0, 1) are never released; and the value released is rounded to the finest of a
1-2-5 ladder of steps for which at least k pooled values fall within half a step of it.
"""

from __future__ import annotations

import math

from jobs.stats import labels
from jobs.stats.spec import MAX_PROBABILITIES, StatsSpec
from scifed.errors import UserError
from scifed.grading import grade_rank
from scifed.record import NUMERIC_TYPES

MAX_LEVELS = 40
MAX_DENSITY = 0.33
_IDENTIFIER_KINDS = {"direct_identifier", "quasi_identifier"}


def _fields(record: dict) -> dict[str, dict]:
    return {f["name"]: f for f in record.get("fields", [])}


def declared_levels(record: dict, column: str) -> list[str] | None:
    """The column dictionary's enumeration of ``column``, as text (None: none)."""
    enum = ((_fields(record).get(column) or {}).get("constraints") or {}).get("enum")
    return None if not enum else [str(v) for v in enum]


def identifies(record: dict, column: str) -> bool:
    """Whether the column dictionary marks ``column`` as identifying people or records
    (role ``id``, or a direct or quasi identifier)."""
    f = _fields(record).get(column) or {}
    return f.get("role") == "id" or f.get("pi_kind") in _IDENTIFIER_KINDS


def check_groupable(spec: StatsSpec, record: dict, *, dp: bool) -> None:
    """Refuse grouping a column whose labels could be a person's value."""
    check_groupable_columns(spec.group_counts, record, dp=dp, field="stats.group_counts",
                            advice="use a histogram")


def check_groupable_columns(columns: list[str], record: dict, *, dp: bool, field: str,
                            advice: str) -> None:
    """The rule of :func:`check_groupable` for any job's categorical ``columns``, named
    by the spec ``field`` they come from (``advice``: what to do with a numeric one)."""
    fields = _fields(record)
    for col in columns:
        f = fields.get(col)
        if f is None:
            continue  # the data check names unknown columns
        declared = declared_levels(record, col) is not None
        if identifies(record, col):
            raise UserError(f"{field}: column {col!r} identifies people or records "
                            "and cannot be grouped")
        if f.get("type") in NUMERIC_TYPES and not declared:
            raise UserError(f"{field}: column {col!r} is numeric and cannot be "
                            f"grouped; {advice}")
        if dp and not declared:
            raise UserError(f"{field}: under differential privacy only columns "
                            f"with a declared enumeration can be grouped; {col!r} has none")


def check_levels(column: str, levels: int, rows: int,
                 field: str = "stats.group_counts") -> None:
    """A node's own levels of a grouped column: few, and not nearly one per row."""
    if levels > MAX_LEVELS:
        raise UserError(f"{field}: column {column!r} has more than {MAX_LEVELS} "
                        "levels and cannot be grouped")
    if rows and levels / rows > MAX_DENSITY:
        raise UserError(f"{field}: column {column!r} has too many levels for its "
                        f"rows (more than {MAX_DENSITY:.0%}) and cannot be grouped")


def withhold_rare_labels(result: dict, record: dict) -> None:
    """Drop from the released groups every undeclared label held by fewer than k rows
    (its cell is already withheld); say how many levels were dropped, not which."""
    for col, g in result.get("groups", {}).items():
        declared = set(declared_levels(record, col) or ())
        # a pooled 0 of a label some node holds means every holder suppressed it
        keep = [i for i, (v, c) in enumerate(zip(g["values"], g["counts"], strict=True))
                if v in declared or (c is not None and c > 0 and not labels.is_tag(v))]
        dropped = len(g["values"]) - len(keep)
        for key in ("values", "counts", "suppressed"):
            g[key] = [g[key][i] for i in keep]
        if dropped:
            g["withheld_levels"] = dropped
            notes = result.setdefault("suppression", {}).setdefault("notes", [])
            notes.append(f"groups.{col}: {dropped} undeclared level(s) held by fewer than "
                         "k rows are not named")


def check_probabilities(spec: StatsSpec, grade: str) -> None:
    """Before any data is read: no minimum or maximum at G2 and above, few probabilities
    (the coordinator refuses too many at submission already; a node checks again)."""
    for col, probs in spec.quantiles.items():
        if len(probs) > MAX_PROBABILITIES:
            raise UserError(f"stats.quantiles.{col}: at most {MAX_PROBABILITIES} "
                            "probabilities per column")
        if grade_rank(grade) >= grade_rank("G2") and any(p in (0.0, 1.0) for p in probs):
            raise UserError(f"stats.quantiles.{col}: the minimum and maximum (p = 0, 1) are "
                            "individual values and are not released at G2 and above")


def quantile_margin(p: float, n: int, k: int) -> bool:
    """Whether at least k of the n pooled values lie at or beyond quantile p on each side."""
    a = k / n if n else 1.0
    return k <= 1 or a <= p <= 1 - a


LADDER = sorted(m * 10.0 ** e for e in range(-3, 10) for m in (1, 2, 5))


def bucket(index: int, step: float) -> tuple[float, float]:
    """Count thresholds (lo, hi) of the ladder bucket centred on ``index · step``: the
    values within half a step of the centre (both ends included) are those in (lo, hi]."""
    centre = index * step
    return math.nextafter(centre - step / 2, -math.inf), centre + step / 2


def rounding_thresholds(value: float) -> list[float]:
    """Count thresholds for the rounding ladder around ``value``: for each step, the
    bucket of the rounded value (:func:`bucket`)."""
    return [t for step in LADDER for t in bucket(round(value / step), step)]


def round_to_k_rows(value: float, counts_le: list[int], k: int) -> tuple[float, float]:
    """(released value, step) at the finest ladder step whose bucket holds ≥ k values."""
    for i, step in enumerate(LADDER):
        lo, hi = counts_le[2 * i], counts_le[2 * i + 1]
        if hi - lo >= k:
            return round(value / step) * step, step
    return math.nan, math.inf
