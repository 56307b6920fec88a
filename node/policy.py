"""The node's policy engine: what the default matrix of governance §2.6
(`scifed/grading.py:CELL_DEFAULTS`) allows for a dataset's (grade, sharing category)
cell, tightened — never loosened — by the officer's per-dataset override, and the one
decision every incoming task gets.

Every value of an effective policy remembers where it came from, so `scifed node policy
show` can say why a job was allowed, held for approval or denied.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from jobs import registry
from node.audit import AuditLog
from scifed.config import parse_model
from scifed.errors import UserError
from scifed.grading import CELL_DEFAULTS, REFUSAL_ALLOWANCE, REFUSAL_RUN, Access
from scifed.sentences import say
from scifed.wire import now_ms


def _families() -> dict[str, str]:
    """Each registered job type's policy column: aggregate statistics (AGG / AGG-k /
    AGG-DP / HE sums) or federated learning (FL)."""
    return {name: job.family for name, job in registry.REGISTRY.items()}

A, R, X = Access.AUTO, Access.APPROVAL, Access.FORBIDDEN

# Governance §2.6, cell by cell: the one matrix, kept in scifed/grading.py.
DEFAULTS = CELL_DEFAULTS

ACCESS_WORDS = {"automatic": A, "approval": R, "forbidden": X}
ACCESS_ORDER = {A: 0, R: 1, X: 2}  # higher is stricter


class DPOverride(BaseModel):
    model_config = ConfigDict(extra="forbid")
    required: bool | None = None
    epsilon_per_query: float | None = Field(default=None, gt=0)
    annual_budget: float | None = Field(default=None, gt=0)
    researcher_budget: float | None = Field(default=None, gt=0)
    delta: float | None = Field(default=None, gt=0, lt=1)
    fl_epsilon_max: float | None = Field(default=None, gt=0)


class PolicyOverride(BaseModel):
    """The officer's per-dataset tightening, as written in a policy YAML."""

    model_config = ConfigDict(extra="forbid")
    job_types: dict[str, Literal["automatic", "approval", "forbidden"]] = {}
    min_cell_count: int | None = Field(default=None, ge=1)
    min_nodes: int | None = Field(default=None, ge=1)
    min_contributors: int | None = Field(default=None, ge=1)
    dp: DPOverride | None = None
    he_required: bool | None = None
    approval_required: bool | None = None
    output_review: bool | None = None
    query_auditing: bool | None = None
    refusal_allowance: int | None = Field(default=None, ge=1)
    refusal_run: int | None = Field(default=None, ge=1)

    @field_validator("job_types")
    @classmethod
    def _known_job_types(cls, v: dict[str, str]) -> dict[str, str]:
        unknown = [j for j in v if j not in registry.REGISTRY]
        if unknown:
            raise ValueError(f"unknown job type {unknown[0]!r} (job types: "
                             f"{', '.join(registry.names())})")
        return v


@dataclass
class EffectivePolicy:
    grade: str
    category: str
    job_types: dict[str, Access]
    min_cell_count: int
    min_nodes: int
    min_contributors: int
    agg_dp_required: bool
    fl_dp_required: bool
    epsilon_per_query: float | None
    annual_budget: float | None
    researcher_budget: float | None
    delta: float | None
    fl_epsilon_max: float | None
    he_required: bool
    approval_required: bool
    output_review: bool
    query_auditing: bool
    dual_approval: bool
    refusal_allowance: int | None = None  # refused queries a year per researcher
    refusal_run: int | None = None        # refused queries in a row
    sources: dict[str, str] = field(default_factory=dict)
    cell_source: str = ""      # the source of a value the matrix cell gives
    override_source: str = ""  # the source of a value the officer's override gives

    def rows(self) -> list[tuple[str, str, str]]:
        """(setting, value, where it came from) for `scifed node policy show`."""
        return [(r["setting"], r["value"], r["source"]) for r in self.settings()]

    def settings(self) -> list[dict[str, str]]:
        """Each setting with its value and source, and the same in words a console can
        translate: ``key`` (``min_cell_count``, ``job_types.stats``) and ``origin``
        (``default``: the matrix cell; ``auditing``: the standard value that switching
        query auditing on brings; ``override``: the officer's override)."""
        out = [{"setting": f"job type {j}", "key": f"job_types.{j}",
                "value": self.job_types[j].name.lower(),
                "source": self.sources[f"job_types.{j}"]} for j in self.job_types]
        for name in SETTINGS:
            value = getattr(self, name)
            out.append({"setting": name, "key": name,
                        "value": "-" if value is None else str(value),
                        "source": self.sources[name]})
        for r in out:
            r["origin"] = ("default" if r["source"] == self.cell_source else "override"
                           if r["source"] == self.override_source else "auditing")
        return out

    def as_dict(self) -> dict[str, Any]:
        return {"grade": self.grade, "category": self.category,
                "settings": self.settings()}


# The settings of an effective policy besides its job types, in the order shown.
SETTINGS = ("min_cell_count", "min_nodes", "min_contributors", "agg_dp_required",
            "fl_dp_required", "epsilon_per_query", "annual_budget", "researcher_budget",
            "delta", "fl_epsilon_max", "he_required", "approval_required", "output_review",
            "query_auditing", "dual_approval", "refusal_allowance", "refusal_run")


def load_override(text: str, source: str) -> PolicyOverride:
    return parse_model(text, source, PolicyOverride, "policy settings")


def pools_enough(contributors: int, need: int, members: int) -> bool:
    """Whether an exact sum of ``contributors`` shares may be read, for a cell asking for
    ``need`` contributors in a study of ``members`` nodes: one contributor (the reader's
    own data), three or more, or two where every policy allows two and the study has
    exactly two members (so a researcher cannot pick two nodes of a larger study). The
    release node applies it to a result, and every node to the set it masks for."""
    return contributors != 2 or need <= 1 or (need <= 2 and members == 2)


def effective(grade: str, category: str, override: PolicyOverride | None = None,
              source: str = "override") -> EffectivePolicy:
    """Defaults of the cell, then the override, refusing any value that loosens them."""
    try:
        d = DEFAULTS[(grade, category)]
    except KeyError:
        raise UserError(f"({grade}, {category}) is not a valid grade and sharing category "
                        "pair (governance §2.4)") from None
    cell = say("src.cell", grade=grade, category=category)
    pol = EffectivePolicy(
        grade, category, registry.cell_access(d),
        d.k, d.min_nodes, d.min_contributors, d.agg_dp_required, d.fl_dp_required,
        d.epsilon_per_query,
        d.annual_budget, d.annual_budget, d.delta, d.fl_epsilon_max, d.he_required,
        False, d.output_review, d.query_auditing, d.dual_approval, d.refusal_allowance,
        d.refusal_run)
    pol.sources = {f"job_types.{j}": cell for j in pol.job_types}
    pol.sources |= {n: cell for n in SETTINGS}
    pol.cell_source = cell
    if override is None:
        return pol
    pol.override_source = source

    def loosens(name: str, new: Any, old: Any, why: str) -> UserError:
        return UserError(f"policy override {name}: {new} would loosen the default {old} of "
                         f"{grade}/{category} ({why}); an override may only tighten — "
                         "change the grade or category instead")

    for job, word in override.job_types.items():
        new, old = ACCESS_WORDS[word], pol.job_types[job]
        if ACCESS_ORDER[new] < ACCESS_ORDER[old]:
            raise loosens(f"job_types.{job}", word, old.name.lower(), "access")
        pol.job_types[job] = new
        pol.sources[f"job_types.{job}"] = source
    for name, new in (("min_cell_count", override.min_cell_count),
                      ("min_nodes", override.min_nodes),
                      ("min_contributors", override.min_contributors)):
        if new is not None:
            if new < getattr(pol, name):
                raise loosens(name, new, getattr(pol, name), "a smaller threshold")
            setattr(pol, name, new)
            pol.sources[name] = source
    for name in ("he_required", "approval_required", "output_review", "query_auditing"):
        new = getattr(override, name)
        if new is not None:
            if getattr(pol, name) and not new:
                raise loosens(name, new, True, "switching a safeguard off")
            setattr(pol, name, new)
            pol.sources[name] = source
    for name, standard in (("refusal_allowance", REFUSAL_ALLOWANCE),
                           ("refusal_run", REFUSAL_RUN)):
        new = getattr(override, name)
        if new is not None and not pol.query_auditing:
            raise UserError(f"policy override {name}: refused queries count only where "
                            f"queries are audited, which {grade}/{category} does not do by "
                            "default; set query_auditing: true too")
        if pol.query_auditing and getattr(pol, name) is None:  # switched on by the override
            setattr(pol, name, standard)
            pol.sources[name] = say("src.auditing", src=pol.sources["query_auditing"])
        if new is not None:
            if new > getattr(pol, name):
                raise loosens(name, new, getattr(pol, name),
                              "more refused queries before an alert")
            setattr(pol, name, new)
            pol.sources[name] = source
    if override.dp is not None:
        dp = override.dp
        if dp.required is not None:
            if pol.agg_dp_required and not dp.required:
                raise loosens("dp.required", False, True, "switching DP off")
            pol.agg_dp_required = dp.required or pol.agg_dp_required
            pol.sources["agg_dp_required"] = source
        for name in ("epsilon_per_query", "annual_budget", "researcher_budget", "delta",
                     "fl_epsilon_max"):
            new, old = getattr(dp, name), getattr(pol, name)
            if new is None:
                continue
            if old is not None and new > old:
                raise loosens(f"dp.{name}", new, old, "a larger privacy loss")
            setattr(pol, name, new)
            pol.sources[name] = source
        if pol.agg_dp_required and pol.epsilon_per_query is None:
            raise UserError("policy override dp.required: give dp.epsilon_per_query and "
                            "dp.annual_budget too")
    if pol.researcher_budget is not None and pol.annual_budget is not None:
        pol.researcher_budget = min(pol.researcher_budget, pol.annual_budget)
    return pol


@dataclass(frozen=True)
class Decision:
    outcome: Literal["allow", "approval", "deny"]
    rule: str
    reason: str
    dp: bool = False
    epsilon: float | None = None
    delta: float | None = None


def decide(pol: EffectivePolicy, *, job_type: str, n_nodes: int, record: dict,
           requested_epsilon: float | None = None, now_date: str | None = None) -> Decision:
    """The one decision for a task: allow, hold for the officer's approval, or deny —
    with the rule that decided it (governance §2.6 checks 1–6; 7 is the audit log)."""
    today = now_date or dt.date.today().isoformat()
    access = pol.job_types.get(job_type, X)
    src = pol.sources.get(f"job_types.{job_type}", "")
    if access is X:
        return Decision("deny", f"job_types.{job_type}",
                        say("dec.forbidden", job_type=job_type, grade=pol.grade,
                            category=pol.category, src=src))
    for appr in record.get("approvals") or []:
        expires = appr.get("expires")
        if expires and str(expires) < today:
            return Decision("deny", "approvals", say(
                "dec.approval_expired", type=str(appr.get("type")), ref=str(appr.get("ref")),
                expires=str(expires)))
    embargo = record.get("embargo_until")
    if embargo and str(embargo) > today:
        return Decision("deny", "embargo_until", say("dec.embargo", embargo=str(embargo)))
    if n_nodes < pol.min_nodes:
        return Decision("deny", "min_nodes", say(
            "dec.min_nodes", n=n_nodes, grade=pol.grade, category=pol.category,
            least=pol.min_nodes, src=pol.sources["min_nodes"]))
    family = _families().get(job_type, "agg")
    if family == "fl":  # DP-SGD: the researcher's ε for the whole run, under the cap
        dp = requested_epsilon is not None
        if pol.fl_dp_required and not dp:
            return Decision("deny", "fl_dp_required", say(
                "dec.fl_dp", grade=pol.grade, category=pol.category))
        if dp and pol.fl_epsilon_max is not None and requested_epsilon > pol.fl_epsilon_max:
            return Decision("deny", "dp.fl_epsilon_max", say(
                "dec.fl_cap", eps=requested_epsilon, cap=pol.fl_epsilon_max,
                src=pol.sources["fl_epsilon_max"]))
        epsilon = requested_epsilon
    else:
        dp = pol.agg_dp_required or requested_epsilon is not None
        epsilon = None
        if dp and pol.query_auditing and (pol.epsilon_per_query is None
                                          or pol.annual_budget is None):
            # a DP answer skips the exact rules (k, the auditor): at a cell that has them,
            # only under an ε the officer caps and a budget that ends — else a researcher
            # could buy an almost exact answer with a large ε, as often as they like
            return Decision("deny", "dp.budget", say(
                "dec.dp_budget", grade=pol.grade, category=pol.category))
        if dp:
            cap = pol.epsilon_per_query
            if cap is None and requested_epsilon is None:
                return Decision("deny", "dp", say("dec.dp_needs_eps"))
            epsilon = requested_epsilon if requested_epsilon is not None else cap
            if cap is not None and epsilon > cap:
                return Decision("deny", "dp.epsilon_per_query", say(
                    "dec.eps_cap", eps=epsilon, cap=cap, src=pol.sources["epsilon_per_query"]))
    needs = access is R or pol.approval_required or pol.output_review
    if needs:
        why = (say("dec.needs_approval", job_type=job_type, grade=pol.grade,
                   category=pol.category, src=src)
               if access is R else say("dec.policy_approval"))
        return Decision("approval", "approval", why, dp, epsilon, pol.delta if dp else None)
    return Decision("allow", f"job_types.{job_type}", say("dec.allowed", src=src), dp, epsilon,
                    pol.delta if dp else None)


class PolicyBook:
    """The officer's overrides as stored at the node, and each dataset's effective policy."""

    def __init__(self, store) -> None:
        self.store = store

    def override(self, dataset_id: str) -> tuple[PolicyOverride | None, str]:
        with self.store.tx() as con:
            r = con.execute("SELECT yaml, source FROM policy_overrides WHERE dataset_id=?",
                            (dataset_id,)).fetchone()
        if r is None:
            return None, ""
        return load_override(r["yaml"], r["source"]), r["source"]

    def in_force(self, dataset_id: str) -> dict[str, Any] | None:
        """The override in force as the officer wrote it — its YAML, where it came from,
        who set it, when and why — for the console to show and prefill; None if none."""
        with self.store.tx() as con:
            r = con.execute("SELECT yaml, source, set_by, justification, updated_ms FROM "
                            "policy_overrides WHERE dataset_id=?", (dataset_id,)).fetchone()
        return None if r is None else dict(r)

    def effective(self, record: dict) -> EffectivePolicy:
        override, source = self.override(record["id"])
        return effective(record["security_grade"], record["sharing_category"], override,
                         say("src.override", source=source) if source
                         else say("src.override_bare"))

    def set(self, record: dict, text: str, source: str, actor: str,
            justification: str = "") -> EffectivePolicy:
        """Validate (may only tighten) and store, with who set it and why; nothing is
        written if refused."""
        parsed = load_override(text, source)
        pol = effective(record["security_grade"], record["sharing_category"], parsed,
                        say("src.override", source=source))
        with self.store.tx() as con:
            con.execute("INSERT OR REPLACE INTO policy_overrides (dataset_id, yaml, source, "
                        "updated_ms, set_by, justification) VALUES (?,?,?,?,?,?)",
                        (record["id"], text, source, now_ms(), actor, justification))
            AuditLog.append_in(con, actor, "policy.set", record["id"],
                               {"source": source, "justification": justification,
                                "override": parsed.model_dump(exclude_none=True,
                                                              exclude_defaults=True)})
        return pol

    def reset(self, record: dict, actor: str) -> EffectivePolicy:
        with self.store.tx() as con:
            con.execute("DELETE FROM policy_overrides WHERE dataset_id=?", (record["id"],))
            AuditLog.append_in(con, actor, "policy.reset", record["id"], {})
        return self.effective(record)
