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

NEVER_FROM = "G5"
OUTPUT_CHECKED = {("G3", "CONDITIONAL"), ("G4", "CONDITIONAL")}


@dataclass(frozen=True)
class Admission:
    access: Access
    reason: str  # why refused, or what it waits for

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
        return Admission(Access.FORBIDDEN, f"{cell} data is never delivered ({grade} is "
                         "important or core data); federated jobs are its only use")
    if category == "CLOSED":
        return Admission(Access.FORBIDDEN, f"{cell} data is not delivered over the network; "
                         "where its cell allows it at all, the data officer arranges an "
                         "offline transfer")
    if method == "in_node_service" and (grade, category) in OUTPUT_CHECKED:
        return Admission(Access.FORBIDDEN, f"an in-node service on {cell} data needs the "
                         "officer to check every output before release, which the service "
                         "does not offer; use federated jobs")
    access = cell_policy(grade, category).delivery[method]  # type: ignore[index]
    if access is Access.FORBIDDEN:
        return Admission(access, f"{method} is forbidden for {cell} data (governance §2.6)")
    if method not in record.get("delivery_methods", []):
        return Admission(Access.FORBIDDEN, f"the data officer does not offer {method} for "
                         f"this dataset (its delivery methods: "
                         f"{', '.join(record.get('delivery_methods', [])) or 'none'})")
    embargo = record.get("embargo_until")
    if method == "download" and embargo and str(embargo) > today:
        return Admission(Access.FORBIDDEN, f"the dataset is under embargo until {embargo}")
    why = "automatic for " if access is Access.AUTO else "the data officer approves "
    return Admission(access, why + f"{method} of {cell} data")


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
        return Admission(Access.FORBIDDEN, f"{cell} data is never delivered, offline "
                         "included")
    if category == "CLOSED":
        if grade_rank(grade) <= 2:  # the cells of §2.6 that admit approved access (SVC R)
            return Admission(Access.APPROVAL, f"{cell}: an offline transfer recorded by the "
                             "officer is its only delivery")
        return Admission(Access.FORBIDDEN, f"{cell} data admits no delivery (governance §2.6)")
    access = cell_policy(grade, category).delivery["offline_transfer"]
    if access is Access.FORBIDDEN:
        return Admission(access, f"offline_transfer is forbidden for {cell} data "
                         "(governance §2.6)")
    if "offline_transfer" not in record.get("delivery_methods", []):
        return Admission(Access.FORBIDDEN, "the data officer does not offer offline_transfer "
                         "for this dataset")
    return Admission(Access.APPROVAL, f"offline transfer of {cell} data, recorded by the "
                     "officer")
