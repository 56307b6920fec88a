"""Governance rules as data: grades, sharing categories, PI floors, the policy matrix.

Everything a node decides about a dataset starts from its (grade, category) cell
(governance §2.3–2.6). The rules live here as plain tables so that one file answers
"what does G3 CONDITIONAL allow?": delivery methods (`POLICY_MATRIX`) and jobs, k, node
counts, DP budgets and refusal allowances (`CELL_DEFAULTS`). The policy engine
(`node/policy.py`) reads them and adds only the officer's overrides.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal, get_args

Grade = Literal["G1", "G2", "G3", "G4", "G5", "G6"]
Category = Literal["OPEN", "CONDITIONAL", "CLOSED"]
DeliveryMethod = Literal["metadata_only", "download", "offline_transfer", "in_node_service"]
PIStatus = Literal["none", "anonymized", "de_identified", "identifiable"]
PICategory = Literal[
    "biometric",
    "religion",
    "specific_identity",
    "medical_health",
    "financial_account",
    "location_track",
    "minor_under_14",
    "genetic",
]
PublicationMode = Literal["none", "stub", "coarse", "full"]

GRADES: tuple[Grade, ...] = get_args(Grade)
CATEGORIES: tuple[Category, ...] = get_args(Category)
DELIVERY_METHODS: tuple[DeliveryMethod, ...] = get_args(DeliveryMethod)


class Access(StrEnum):
    """How a cell admits a method: automatically, after approval, or not at all (§2.6)."""

    AUTO = "A"
    APPROVAL = "R"
    FORBIDDEN = "-"


@dataclass(frozen=True)
class CellPolicy:
    """Defaults of one (grade, category) cell; an officer may only narrow them."""

    delivery: Mapping[DeliveryMethod, Access]


@dataclass(frozen=True)
class GradeFloor:
    """The lowest grade a dataset may carry, and the rule that sets it."""

    grade: Grade
    reason: str


A, R, X = Access.AUTO, Access.APPROVAL, Access.FORBIDDEN

# Governance §2.6, delivery rows. Columns follow DELIVERY_METHODS:
#   metadata_only, download, offline_transfer, in_node_service.
# A pair missing from this table is invalid (§2.4).
_DELIVERY: dict[tuple[Grade, Category], tuple[Access, Access, Access, Access]] = {
    ("G1", "OPEN"): (A, A, A, A),
    ("G1", "CONDITIONAL"): (A, R, R, A),
    ("G1", "CLOSED"): (A, X, X, R),
    ("G2", "OPEN"): (A, A, A, A),  # download only after embargo_until
    ("G2", "CONDITIONAL"): (A, R, R, A),
    ("G2", "CLOSED"): (A, X, X, R),
    ("G3", "CONDITIONAL"): (A, X, R, R),  # offline: de-identified extract + DUA only
    ("G3", "CLOSED"): (A, X, X, X),
    ("G4", "CONDITIONAL"): (A, X, X, R),  # service: enclave with output checking
    ("G4", "CLOSED"): (A, X, X, X),  # metadata network-internal
    ("G5", "CONDITIONAL"): (A, X, X, R),  # metadata coarse, members only; no egress
    ("G5", "CLOSED"): (A, X, X, X),  # metadata stub only
    ("G6", "CLOSED"): (X, X, X, X),  # never registered in the federated catalog
}

POLICY_MATRIX: dict[tuple[Grade, Category], CellPolicy] = {
    cell: CellPolicy(delivery=dict(zip(DELIVERY_METHODS, row, strict=True)))
    for cell, row in _DELIVERY.items()
}
VALID_PAIRS: frozenset[tuple[Grade, Category]] = frozenset(POLICY_MATRIX)

# The refused-query allowance of a cell that audits queries (governance §2.5, §2.6):
# refusals per researcher and dataset in a calendar year, and refusals in a row.
REFUSAL_ALLOWANCE = 10
REFUSAL_RUN = 3


@dataclass(frozen=True)
class CellDefaults:
    """What one (grade, category) cell of §2.6 admits, and with which parameters: the
    one table the policy engine (``node/policy.py``), the scorecard's k-anonymity (Q10a)
    and the governance document read. An officer's override may only tighten it."""

    agg: Access                  # aggregate jobs (AGG / AGG-k / AGG-DP / HE sums)
    fl: Access                   # federated learning
    k: int                       # min cell count of released aggregates (1 = none)
    min_nodes: int
    agg_dp_required: bool        # AGG-DP is the only admissible aggregate route
    fl_dp_required: bool         # plain FL is not admissible
    epsilon_per_query: float | None
    annual_budget: float | None
    delta: float | None
    fl_epsilon_max: float | None
    he_required: bool
    output_review: bool
    query_auditing: bool
    dual_approval: bool = False  # officer and the unit's security lead (G5)
    # refused queries per researcher and dataset in a calendar year, and in a row, that
    # raise an alert (None where the cell does not audit queries)
    refusal_allowance: int | None = None
    refusal_run: int | None = None

    def __post_init__(self) -> None:  # a cell that audits queries: today's allowance
        if self.query_auditing and self.refusal_allowance is None:
            object.__setattr__(self, "refusal_allowance", REFUSAL_ALLOWANCE)
        if self.query_auditing and self.refusal_run is None:
            object.__setattr__(self, "refusal_run", REFUSAL_RUN)

    @property
    def min_contributors(self) -> int:
        """Contributors to a pooled exact result: with exactly two, the release node
        could take its own share from the sum and read the other's, so three — except
        where the cell's threshold is low (k ≤ 3: G1, G2/OPEN), where two suffice in a
        study of two members, and open data without a threshold (k = 1)."""
        return 1 if self.k <= 1 else 2 if self.k <= 3 else 3


# Governance §2.6, cell by cell. Parameters follow its "default parameters" table; where a
# cell states its own k (G1, G2/OPEN: k ≥ 3), the cell wins. Cells that audit queries get
# the refusal allowance REFUSAL_ALLOWANCE / REFUSAL_RUN. The same pairs as the delivery
# table above (tests/unit/test_policy.py checks both against docs/governance.md §2.6).
CELL_DEFAULTS: dict[tuple[Grade, Category], CellDefaults] = {
    ("G1", "OPEN"): CellDefaults(A, A, 1, 1, False, False, None, None, None, None,
                                 False, False, False),
    ("G1", "CONDITIONAL"): CellDefaults(A, A, 3, 1, False, False, None, None, None, None,
                                        False, False, False),
    ("G1", "CLOSED"): CellDefaults(R, R, 3, 1, False, False, None, None, None, None,
                                   False, False, False),
    ("G2", "OPEN"): CellDefaults(A, A, 3, 2, False, False, None, None, None, None,
                                 False, False, True),
    ("G2", "CONDITIONAL"): CellDefaults(A, A, 5, 2, False, False, None, None, None, None,
                                        False, False, True),
    ("G2", "CLOSED"): CellDefaults(R, R, 5, 2, False, False, None, None, None, None,
                                   False, False, True),
    ("G3", "CONDITIONAL"): CellDefaults(A, A, 10, 3, False, False, 1.0, 10.0, 1e-6, 8.0,
                                        True, False, True),
    ("G3", "CLOSED"): CellDefaults(R, R, 10, 3, False, True, 1.0, 10.0, 1e-6, 8.0,
                                   True, False, True),
    ("G4", "CONDITIONAL"): CellDefaults(R, R, 10, 3, True, True, 0.5, 4.0, 1e-7, 3.0,
                                        True, True, True),
    # aggregates: HE counts and sums only, with PIA and ethics on file
    ("G4", "CLOSED"): CellDefaults(R, X, 10, 3, False, True, 0.5, 4.0, 1e-7, 3.0,
                                   True, True, True),
    ("G5", "CONDITIONAL"): CellDefaults(R, R, 10, 3, True, True, 0.5, 2.0, 1e-7, 3.0,
                                        True, True, True, dual_approval=True),
    ("G5", "CLOSED"): CellDefaults(X, X, 10, 3, True, True, 0.5, 2.0, 1e-7, 3.0,
                                   True, True, True),
    ("G6", "CLOSED"): CellDefaults(X, X, 10, 3, True, True, None, None, None, None,
                                   True, True, True),
}


def aggregate_access(grade: Grade, category: Category) -> Access:
    """May federated statistics run on data of this cell: A, after approval, or never."""
    return CELL_DEFAULTS[(grade, category)].agg


def min_cell_count(grade: Grade, category: Category) -> int:
    """The k below which a released count (and what it implies) is suppressed."""
    return CELL_DEFAULTS[(grade, category)].k


SENSITIVE_PI_GRADE: Grade = "G4"
PI_GRADE: Grade = "G3"
GRADE_ASSESSMENT_FROM: Grade = "G3"
APPROVALS_FROM: Grade = "G4"
_PI_FREE: frozenset[PIStatus] = frozenset({"none", "anonymized"})


def grade_rank(grade: Grade) -> int:
    """Position of a grade, so grades compare as numbers (G1 → 1)."""
    return GRADES.index(grade) + 1


def allowed_categories(grade: Grade) -> list[Category]:
    """Sharing categories a grade may be combined with (§2.4)."""
    return [category for category in CATEGORIES if (grade, category) in VALID_PAIRS]


def cell_policy(grade: Grade, category: Category) -> CellPolicy:
    """The default policy of a cell; an invalid pair is a programming error here."""
    try:
        return POLICY_MATRIX[(grade, category)]
    except KeyError:
        raise ValueError(f"{grade} {category} is not a valid (grade, category) pair") from None


def default_delivery_methods(grade: Grade, category: Category) -> list[DeliveryMethod]:
    """Methods a record gets when its officer lists none: all the cell does not forbid."""
    delivery = cell_policy(grade, category).delivery
    return [method for method in DELIVERY_METHODS if delivery[method] is not Access.FORBIDDEN]


def forbidden_delivery_methods(
    grade: Grade, category: Category, methods: Iterable[DeliveryMethod]
) -> list[DeliveryMethod]:
    """The declared methods the cell forbids: the officer tried to loosen the defaults."""
    delivery = cell_policy(grade, category).delivery
    return [method for method in methods if delivery[method] is Access.FORBIDDEN]


def pi_floor(
    status: PIStatus, sensitive: bool, categories: Iterable[PICategory]
) -> GradeFloor | None:
    """Lowest grade allowed by the personal information a dataset holds (§2.3).

    Human genetic resources information keeps its floor even when anonymised: the HGR
    rules, unlike PIPL, do not end at anonymisation.
    """
    if status not in _PI_FREE and sensitive:
        return GradeFloor(SENSITIVE_PI_GRADE, "sensitive personal information")
    if "genetic" in categories:
        return GradeFloor(SENSITIVE_PI_GRADE, "human genetic resources information")
    if status == "identifiable":
        return GradeFloor(PI_GRADE, "identifiable personal information")
    if status == "de_identified":
        return GradeFloor(PI_GRADE, "de-identified personal information")
    return None


def holds_personal_info(status: PIStatus) -> bool:
    """Whether PIPL still applies: anonymised data is no longer personal information."""
    return status not in _PI_FREE


def requires_grade_assessment(grade: Grade) -> bool:
    """G3 and above must keep the GB/T 43697 assessment on record (§1.3 #31)."""
    return grade_rank(grade) >= grade_rank(GRADE_ASSESSMENT_FROM)


def requires_approvals(grade: Grade, pi_status: PIStatus) -> bool:
    """Personal information or G4 and above need a legal basis on file (§1.3 #40)."""
    return holds_personal_info(pi_status) or grade_rank(grade) >= grade_rank(APPROVALS_FROM)


def publication_mode(grade: Grade, category: Category) -> PublicationMode:
    """How much of a record the node sends to the federated catalog (§1.6, §2.6)."""
    if grade == "G6":
        return "none"
    if category == "CLOSED":
        return "stub"
    if grade == "G5":
        return "coarse"
    return "full"
