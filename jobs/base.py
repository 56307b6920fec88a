"""The seam every job type implements, and what the node and the coordinator offer it.

A job type is one folder under `jobs/` with one :class:`JobType` subclass, registered in
`jobs/__init__.py`. The node and the coordinator never name a type: they route tasks by
the ``job_type`` of a task header to the registered object and call the methods below.

Who calls what::

    coordinator  JobType.coordinate(driver, run)      plan the job: phases, rounds
    node         JobType.vocabulary / exchange / compute (or finish) / noise / round /
                 check / grant
                 (through the node's gate: policy, approval, audit, guard, DP budget,
                 encryption are done around them, once for every type)
    release node JobType.release(spec, pooled)        decode the pooled numbers, apply
                 the aggregate disclosure rules; or ask for one more round
    researcher   JobType.view(result)                 tables, plots, files

Aggregate types (one encrypted sum, maybe more rounds) inherit the coordinator side
from :class:`jobs.aggregate.AggregateJob`, which can also run steps of node-to-node
exchange before the compute (``exchange_steps``: blobs the coordinator relays sealed
between the nodes, e.g. blinded points of a private set intersection); a type with a
protocol of its own (`train`, a Flower run) implements ``coordinate`` itself against the
:class:`Driver` protocol.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol

import numpy as np
from pydantic import BaseModel

from scifed.errors import UserError
from scifed.sealing import refused_at
from scifed.states import Phase, TaskState
from scifed.tasks import Message, TaskHeader, TaskKind

Family = Literal["agg", "fl"]  # which column of the policy matrix governs the type


# -- what a node hands a job type ---------------------------------------------------------
class Table(Protocol):
    """One dataset file, opened read-only by the node (`node/data.py`), its rows already
    narrowed by the job's filter. Only aggregates leave a query: the rows stay inside
    DuckDB in a CTE ``d``."""

    name: str  # the dataset, for messages

    def require(self, names: Iterable[str], field: str, *, numeric: bool) -> None:
        """Refuse unknown columns (and non-numeric ones where a number is needed),
        naming ``field`` (e.g. ``stats.columns``)."""

    def is_float(self, name: str) -> bool: ...

    def number(self, name: str) -> str:
        """SQL for the column as DOUBLE, NaN read as missing."""

    def category(self, name: str) -> str:
        """SQL for the column as text labels, NaN read as missing."""

    def query(self, exprs: list[str], select: str, params: Sequence = ()) -> list[tuple]:
        """Run ``select`` over CTE ``d`` holding ``exprs`` as ``c0, c1, …`` of the
        filtered rows."""

    def frame(self) -> Any:
        """The whole file as a pandas DataFrame typed by the catalog record."""

    def arrays(self, columns: list[str],
               conditions: Sequence[tuple[str, list]] = ()) -> dict[str, np.ndarray]:
        """The filtered rows where every listed column is present, as numpy arrays; each
        condition (SQL, parameters) as a boolean array keyed ``?0``, ``?1``, …"""

    def masks(self, conditions: list[tuple[str, list]]) -> np.ndarray:
        """Rows × conditions (file order): filter AND each condition (SQL, parameters)."""

    def sorted_numbers(self, name: str) -> np.ndarray:
        """The filtered non-missing values of a numeric column as float64, sorted."""


def clipped(expr: str, lo: float, hi: float) -> str:
    """SQL for ``expr`` clipped to [lo, hi], NULL kept NULL. DuckDB's least/greatest skip
    NULL arguments, so a bare ``greatest(least(x, hi), lo)`` would turn a missing value
    into ``hi``: the missing row would enter the sums (and pass an IS NOT NULL filter)."""
    return (f"CASE WHEN ({expr}) IS NULL THEN NULL "
            f"ELSE greatest(least({expr}, {float(hi)!r}), {float(lo)!r}) END")


@dataclass(frozen=True)
class Limits:
    """What the node's policy sets for this task: the minimum cell count ``k``, the ε of
    this query where DP is required or asked (None: exact), and the dataset's catalog
    record (column types, declared value ranges). ``label_key``: a key the job's member
    nodes share and the coordinator does not hold, for tags that stand in for labels a
    job must not reveal yet (jobs/stats/labels.py)."""

    node: str
    k: int
    record: dict
    epsilon: float | None = None
    label_key: bytes = b""
    # numeric column -> its threshold grid where the node audits queries (None: no grid;
    # see scifed/filters.py), for values that split rows as a filter threshold does
    grid: dict[str, float | None] | None = None
    # the node audits exact queries (k > 1): its auditor bounds a release only where the
    # release is a sum over this node's own row sets (node/guard.py)
    audited: bool = False


@dataclass(frozen=True)
class Pooled:
    """What the release node decrypted, with what it needs to decode it."""

    totals: dict[str, np.ndarray]       # pooled vectors by name ("sum" for one-sum jobs)
    vocab: dict[str, list[str]]
    k: int
    dp: dict[str, dict]                 # node -> the DP it applied (empty: exact)
    contributors: list[str]
    record: dict = field(default_factory=dict)  # the release node's own catalog record
    state: dict | None = None           # the release node's own state of earlier rounds
    stage: Literal["final", "progress"] = "final"
    round: int = 0
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Released:
    """The result for the researcher (JSON-able); the release path adds ``type`` and
    ``meta`` (provenance), seals it and audits it."""

    result: dict


@dataclass(frozen=True)
class NextRound:
    """One more round: every contributor computes ``query`` (sealed under the study key
    for the members); ``state`` stays with the release node (sealed the same way)."""

    query: dict
    state: dict


@dataclass(frozen=True)
class Exchange:
    """One step of a job's node-to-node protocol, as the node hands it to the type:
    ``inbound`` is what each sender addressed to this node at the step before, opened
    (the node seals and opens; the coordinator relays without reading). ``secret``: 32
    bytes that this node alone can make for this job (HKDF of its private key and the
    job id), the same at every step, retry and restart of the job, and unrelated between
    jobs and nodes."""

    job_id: str
    step: int
    peers: list[str]              # the job's nodes in protocol order (first: releases)
    inbound: dict[str, bytes]     # sender -> bytes
    secret: bytes


@dataclass(frozen=True)
class Grant:
    """Rows handed to an app on the node host, and the DP it must apply (e.g. DP-SGD:
    ``{"epsilon", "delta", "max_grad_norm"}``; None: none)."""

    features: np.ndarray
    labels: np.ndarray
    dp: dict | None = None


# -- what the coordinator hands a job type ------------------------------------------------
@dataclass(frozen=True)
class StudyRef:
    study_id: str
    name: str
    key_version: int
    lead_node: str
    min_nodes: int
    members: int = 0  # accepted members


@dataclass(frozen=True)
class Run:
    """One job as the coordinator's driver runs it."""

    job_id: str
    study: StudyRef
    spec: Any                  # jobs.spec.JobSpec
    targets: dict[str, str]    # node -> dataset
    researcher: str
    claim: dict                # the researcher's certified seal key

    def release_node(self, contributors: Iterable[str]) -> str:
        """The node that decrypts and seals: the study's lead when it takes part, else
        the first that does."""
        nodes = sorted(contributors)
        return self.study.lead_node if self.study.lead_node in nodes else nodes[0]


class Driver(Protocol):
    """The coordinator's job driver, as job types use it (`coordinator/driver.py`)."""

    task_timeout: float
    flower: Any  # the coordinator's Flower SuperLink, or None where training is off

    def header(self, run: Run, node: str) -> TaskHeader:
        """The task header for ``node`` (its dataset, its sealed copy of the study key)."""

    def fanout(self, run: Run, phase: str, kind: TaskKind, payloads: dict[str, Message],
               reply: type[Message]) -> tuple[dict[str, Any], dict[str, str]]:
        """One task per node in parallel: (replies by node, failure reasons by node).
        A task held for approval is asked again until decided; raises
        :class:`JobCancelled` once the job is cancelled."""

    def send(self, node: str, kind: TaskKind, payload: Message, reply: type[Message]) -> Any:
        """One task to one node; raises UserError with the node's reason."""

    def connected(self) -> list[str]:
        """The nodes whose task stream to the coordinator is open now."""

    def public_context(self, run: Run) -> bytes: ...

    def seal_claims(self, nodes: list[str]) -> dict[str, dict]:
        """The nodes' signed seal key claims (their contributions are masked for the set)."""

    def set_phase(self, run: Run, phase: Phase) -> None: ...

    def set_contributors(self, run: Run, nodes: list[str]) -> None: ...

    def task_state(self, run: Run, node: str, phase: str, state: TaskState,
                   detail: str = "") -> None: ...

    def progress(self, run: Run, round_no: int, sealed: bytes) -> None:
        """Keep one round's live result, sealed to the researcher."""

    def refusal(self, run: Run, node: str, phase: str, sealed: bytes) -> None:
        """Record that ``node`` refused ``phase`` outside a fan-out, its reason sealed."""

    def cancelled(self, run: Run) -> bool: ...


class JobFailed(UserError):
    """Ends a job with a reason the researcher sees."""


class JobWithheld(JobFailed):
    """The officer's output review at the release node withheld the result: the job ends
    withheld, its reason sealed to the researcher on the release task's row."""


def released(driver: Driver, run: Run, node: str, reply, phase: str = "release") -> bytes:
    """The sealed result of a final release reply (:class:`scifed.tasks.ReleaseReply`),
    or the job ends withheld when ``node``'s output review withheld it (its reason, sealed
    to the researcher, kept on the node's task row of ``phase``)."""
    if reply.withheld is not None:
        driver.refusal(run, node, phase, reply.withheld)
        raise JobWithheld(refused_at(node))
    return reply.sealed


class JobCancelled(Exception):
    """The researcher cancelled the job; raised where the job next looks."""


def quorum(run: Run, answers: dict, failed: dict[str, str]) -> None:
    """Refuse to go on with fewer answers than the study needs."""
    if len(answers) < run.study.min_nodes:
        reasons = "; ".join(failed[n] for n in sorted(failed)) or "no node answered"
        raise JobFailed(f"{reasons} (so only {len(answers)} of the {run.study.min_nodes} "
                        "nodes the study needs answered)")


@dataclass(frozen=True)
class FlowerApp:
    """A job type's Flower app: the FAB's directory (a pyproject.toml, no code) and the
    installed ClientApp it names. A node runs only this ClientApp, from its own installed
    scifed, and only for a FAB whose bytes equal the one it builds from ``app_dir``."""

    app_dir: Path
    client_app: str  # module:attribute, importable from the installed scifed


# -- the interface ------------------------------------------------------------------------
class JobType(ABC):
    """One kind of federated job. Class attributes describe it; methods are called on
    the side named in their docstring. Node-side methods get a :class:`Table` and
    :class:`Limits` and return plain numbers: encryption, noise calibration to the budget,
    the differencing guard and audit are the node's (`node/gate.py`)."""

    name: ClassVar[str]
    Spec: ClassVar[type[BaseModel]]           # the job.yaml section named like the type
    family: ClassVar[Family] = "agg"
    filter_refusal: ClassVar[str] = ""        # non-empty: no `filter`, and why
    resumable: ClassVar[bool] = False         # survives a coordinator restart (`job resume`)
    # a coordinator restart re-runs it from its beginning under the same job id, by
    # itself: every node replays what it answered (nothing computed or charged twice)
    restartable: ClassVar[bool] = False
    needs_training: ClassVar[bool] = False    # needs the coordinator's Flower SuperLink
    guarded: ClassVar[bool] = True            # rows go through the differencing guard
    flower_app: ClassVar[FlowerApp | None] = None  # the app of a type run on Flower

    # -- coordinator ---------------------------------------------------------------------
    @abstractmethod
    def coordinate(self, driver: Driver, run: Run) -> bytes:
        """Run the job across its nodes; returns the result sealed to the researcher."""

    def min_nodes(self, params: Any) -> int:
        """Nodes the spec itself asks for, beyond the study's minimum."""
        return 0

    def requested_epsilon(self, params: Any) -> float | None:
        """The ε the researcher asks for per query (None: none asked)."""
        return None

    def requested_delta(self, params: Any) -> float:
        """The δ charged with the researcher's ε (0 for pure ε-DP)."""
        return 0.0

    def wants_dp(self, params: Any) -> bool:
        """The researcher supplied what DP needs (bounds), so a node whose policy
        requires DP may apply it at its own ε."""
        return False

    # -- node ----------------------------------------------------------------------------
    def vocabulary(self, params: Any, table: Table, limits: Limits) -> dict[str, list[str]]:
        """Categories this node holds (group values, labels) that fix the layout."""
        return {}

    def compute(self, params: Any, table: Table, vocab: dict[str, list[str]],
                limits: Limits) -> np.ndarray:
        """This node's contribution as one vector (summed across nodes)."""
        raise UserError(f"{self.name} jobs compute no contribution vector")

    def row_sets(self, params: Any, table: Table, vocab: dict[str, list[str]],
                 limits: Limits) -> list[tuple[str, list]]:
        """The row sets an exact contribution sums over, as SQL conditions within the
        filter (each cell, bin, group, column's present values). The node's query
        auditor refuses a release whose sets would isolate fewer than k rows. Only
        called for types with ``guarded`` set."""
        return [("TRUE", [])]

    def exchange_steps(self, params: Any, nodes: int) -> int:
        """Coordinator: steps of node-to-node exchange before the compute (0: none). Every
        node takes part in every step, and every node must then contribute."""
        return 0

    def exchange(self, params: Any, table: Table, step: Exchange,
                 limits: Limits) -> dict[str, bytes]:
        """One exchange step at this node: from what the peers addressed to it at the step
        before, what it addresses to each peer now (recipient -> bytes)."""
        raise UserError(f"{self.name} jobs have no exchange steps")

    def finish(self, params: Any, table: Table, step: Exchange,
               limits: Limits) -> np.ndarray:
        """The contribution of a job with exchange steps (instead of ``compute``), from
        what their last step addressed to this node; it is summed, noised, charged and
        released as any contribution."""
        raise UserError(f"{self.name} jobs have no exchange steps")

    def nonlinear(self, params: Any) -> bool:
        """Whether an exact release also holds sums of non-linear functions of the rows (a
        GLM's deviance, log-likelihood): the query auditor then also keeps its row sets
        in a partition of such releases, whose atoms must hold more rows
        (node/guard.py)."""
        return False

    def noise(self, params: Any, vec: np.ndarray, vocab: dict[str, list[str]],
              limits: Limits) -> dict:
        """Add DP noise at ``limits.epsilon`` to ``vec`` in place; returns the report.
        Types that have no DP release refuse."""
        raise UserError(f"node {limits.node}: federated {self.name} jobs are not available "
                        "where policy requires differential privacy")

    def round(self, params: Any, table: Table, query: dict, limits: Limits) -> np.ndarray:
        """One more round's contribution (e.g. counts below thresholds)."""
        raise UserError(f"{self.name} jobs have no further rounds")

    def check(self, params: Any, table: Table, limits: Limits) -> int:
        """Before a multi-step run: may this node take part? Returns its usable rows."""
        return 0

    def grant(self, params: Any, table: Table, limits: Limits) -> Grant:
        """Rows for an app on the node host (a ClientApp), after every check."""
        raise UserError(f"{self.name} jobs get no rows")

    # -- release node --------------------------------------------------------------------
    def release(self, params: Any, pooled: Pooled) -> Released | NextRound:
        """Decode the pooled numbers and apply the aggregate-level disclosure rules."""
        raise UserError(f"{self.name} jobs release nothing")

    # -- researcher ----------------------------------------------------------------------
    @abstractmethod
    def view(self, result: dict) -> Any:
        """The researcher's view of a released result (pandas tables, plots, files)."""
