"""Which delivery a dataset admits: the §2.6 cell, narrowed by the officer's record.

One function decides every request, manifest, chunk and query again, so a grant never
outlives a tightened record, a raised grade or a new embargo. Beyond the cell's A / R /
— it applies the rules that make delivery safe whatever the request says:

* G5 and G6 are never delivered (important and core data leave no node);
* CLOSED data goes over no wire: its only delivery is an offline transfer the officer
  records (``offline_access``), and only where the cell admits approved access at all
  (G1, G2); G3 and G4 CLOSED admit none;
* an in-node service whose cell asks the officer to check outputs (§2.6: G3 service,
  all of G4) is refused: each answer would need the officer's review before release,
  which the service does not offer, so it is not a way round it;
* download waits for ``embargo_until``;
* the method must be among the record's ``delivery_methods``, which the officer may
  narrow (never widen: the record validator refuses that).
"""

from __future__ import annotations

from dataclasses import dataclass

from scifed.grading import Access, cell_policy, grade_rank
from scifed.sentences import Said, say

NEVER_FROM = "G5"
OUTPUT_CHECKED = {("G3", "CONDITIONAL"), ("G4", "CONDITIONAL")}


@dataclass(frozen=True)
class Admission:
    access: Access
    reason: Said  # why refused, or what it waits for

    @property
    def refused(self) -> bool:
        return self.access is Access.FORBIDDEN


def _cell(record: dict) -> tuple[str, str]:
    return str(record["security_grade"]), str(record["sharing_category"])


def online_access(record: dict, method: str, today: str) -> Admission:
    """May ``method`` (download, in_node_service) deliver this dataset over the network:
    automatically, after the officer's approval, or not at all (with the reason)."""
    grade, category = _cell(record)
    cell = f"{grade} {category}"
    if grade_rank(grade) >= grade_rank(NEVER_FROM):
        return Admission(Access.FORBIDDEN, say("rule.never", cell=cell, grade=grade))
    if category == "CLOSED":
        return Admission(Access.FORBIDDEN, say("rule.closed", cell=cell))
    if method == "in_node_service" and (grade, category) in OUTPUT_CHECKED:
        return Admission(Access.FORBIDDEN, say("rule.service_checked", cell=cell))
    access = cell_policy(grade, category).delivery[method]  # type: ignore[index]
    if access is Access.FORBIDDEN:
        return Admission(access, say("rule.forbidden", method=method, cell=cell))
    if method not in record.get("delivery_methods", []):
        return Admission(Access.FORBIDDEN, say(
            "rule.not_offered", method=method,
            methods=", ".join(record.get("delivery_methods", [])) or "none"))
    embargo = record.get("embargo_until")
    if method == "download" and embargo and str(embargo) > today:
        return Admission(Access.FORBIDDEN, say("rule.embargo", embargo=str(embargo)))
    return Admission(access, say("rule.auto" if access is Access.AUTO else "rule.approves",
                                 method=method, cell=cell))


def rows_allowed(record: dict, today: str) -> bool:
    """May a service answer hold rows? Only where the same researcher could download the
    data without anyone's approval; elsewhere answers are aggregates of at least k rows,
    or a service query would be a way round the cell's download rule."""
    return online_access(record, "download", today).access is Access.AUTO


def offline_access(record: dict) -> Admission:
    """May the officer record an offline transfer of this dataset?"""
    grade, category = _cell(record)
    cell = f"{grade} {category}"
    if grade_rank(grade) >= grade_rank(NEVER_FROM):
        return Admission(Access.FORBIDDEN, say("rule.offline_never", cell=cell))
    if category == "CLOSED":
        if grade_rank(grade) <= 2:  # the cells of §2.6 that admit approved access (SVC R)
            return Admission(Access.APPROVAL, say("rule.offline_only", cell=cell))
        return Admission(Access.FORBIDDEN, say("rule.no_delivery", cell=cell))
    access = cell_policy(grade, category).delivery["offline_transfer"]
    if access is Access.FORBIDDEN:
        return Admission(access, say("rule.offline_forbidden", cell=cell))
    if "offline_transfer" not in record.get("delivery_methods", []):
        return Admission(Access.FORBIDDEN, say("rule.offline_not_offered"))
    return Admission(Access.APPROVAL, say("rule.offline", cell=cell))
