"""The node <-> coordinator task contract: every task kind and its typed payloads.

A task travels as ``pb.Task(kind, payload)`` with the payload one of these models as
JSON; the reply comes back the same way. Both sides build and read the models here, so a
field is named once. Byte fields (ciphertexts, sealed blobs) are base64 inside the JSON.
A node that holds a task for its officer's approval answers :class:`Waiting`.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal, Self, TypeVar

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, PlainValidator, ValidationError

from scifed.errors import UserError, excerpt
from scifed.wire import b64d, b64e


def _bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return b64d(value)
    raise ValueError("expected base64 text")


B64 = Annotated[bytes, PlainValidator(_bytes), PlainSerializer(b64e, return_type=str)]


class TaskKind(StrEnum):
    KEYGEN = "study.keygen"        # the study's lead makes its key and seals it to members
    VOCAB = "job.vocab"            # the categories a node holds, sealed for the members
    COMPUTE = "job.compute"        # a node's encrypted contribution
    ROUND = "job.round"            # a contribution to one more round of a release
    RELEASE = "job.release"        # the release node: decrypt, check, seal to the researcher
    CHECK = "job.check"            # may this node take part (before a multi-step run)?
    EXCHANGE = "job.exchange"      # one step of a node-to-node protocol (blobs relayed sealed)
    RESERVE = "job.reserve"        # hold the job's ε at every node before any computes
    UNMASK = "job.unmask"          # a contributor reveals its self-mask once the set is final
    CANCELLED = "job.cancelled"    # withdraw the job's requests from the officers' queues
    FLOWER_RESET = "flower.reset"  # restart the SuperNode that may hold a stale run
    REVIEW = "job.review"          # a contributor's officer reviews the result, sealed to it


M = TypeVar("M", bound="Message")
MAX_ATTEMPTS = 4  # attempts of one sum: the first and one per dropout (node/masking.py)


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def dumps(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def loads(cls, raw: bytes | str) -> Self:
        """Parse a payload; a malformed one is the sender's fault, named as such."""
        try:
            return cls.model_validate_json(raw)
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            where = ".".join(str(p) for p in first["loc"]) or "(payload)"
            raise UserError(f"malformed {cls.__name__} message: {excerpt(where, 120)}: "
                            f"{excerpt(first['msg'])}") from None
        except RecursionError:
            raise UserError(f"malformed {cls.__name__} message: nested too deeply") from None


class TaskHeader(Message):
    """What every job task carries: which job, study key version, dataset and spec."""

    job_id: str
    study_id: str
    key_version: int
    job_type: str
    researcher: str = ""
    n_nodes: int = Field(ge=1)
    dataset: str
    spec: dict
    # this node's copy of the study key, sealed to the node by the study's lead
    key_share: B64 = b""
    # the researcher's certified seal key: a refusal's reason is sealed to it, so the
    # coordinator that relays it learns only that the node refused
    researcher_claim: dict = {}


class VocabReply(Message):
    vocabulary: B64  # JSON {column: [values]}, sealed under the study key


class Inbound(Message):
    """One step of a job's node-to-node protocol as it reaches one node: the step's
    number, the job's nodes in the order of the protocol (the first releases), and what
    each sender addressed to this node at the step before, sealed under the study key for
    (job, step, sender, recipient): the coordinator relays it and reads only its size."""

    step: int = Field(ge=0)
    peers: list[str]
    blobs: dict[str, B64] = {}  # sender -> sealed


class ExchangeRequest(TaskHeader):
    exchange: Inbound


class ExchangeReply(Message):
    outbound: dict[str, B64] = {}  # recipient -> sealed for it (see Inbound)


class ComputeRequest(TaskHeader):
    vocabularies: list[B64] = []  # every contributor's sealed vocabulary
    # a job with exchange steps: what their last step addressed to this node
    exchange: Inbound | None = None
    # the nodes whose contributions are summed, each with its seal key claim: the node
    # masks its contribution for exactly these (node/masking.py)
    masking: dict[str, dict] = {}
    # 1, or a later attempt among the survivors of a dropout (node/masking.py)
    attempt: int = Field(default=1, ge=1, le=MAX_ATTEMPTS)


class ComputeReply(Message):
    ciphertext: B64
    k: int
    min_contributors: int = 1  # the fewest contributors this node's policy lets pool
    dp: dict | None = None  # what DP this node applied (ε, δ, per-block noise)
    # the node's signed statement of this contribution (scifed.sealing.sign_attestation):
    # job, stage, node, study key version, the ciphertext's sha256, its dataset, audit
    # head, DP, k and fewest contributors; kept with the answer, so a retry gets the same
    attestation: dict = {}
    # its self-mask seed's shares, each boxed for the other node it names (node/masking.py)
    shares: dict[str, B64] = {}


class RoundRequest(TaskHeader):
    query: B64  # what to compute next, sealed under the study key
    masking: dict[str, dict] = {}  # as ComputeRequest's: the contributors of the round


class UnmaskRequest(TaskHeader):
    """The set of an attempt is final: reveal the self-mask of that attempt (a set of
    two), or answer this view of it (node/masking.py): the nodes summed, those masked for
    but not summed, and the share boxes the others made for this node."""

    attempt: int = Field(ge=1, le=MAX_ATTEMPTS)
    contributors: list[str]
    dropped: list[str] = []
    shares: dict[str, B64] = {}  # sender -> its share boxed for this node
    masking: dict[str, dict] = {}  # the seal key claims of the set (as ComputeRequest's)


class UnmaskReply(Message):
    # the self-mask seed (a set of two), or the shares and pairwise seeds of the view,
    # sealed for the members (the release node opens it)
    sealed: B64


class CiphertextReply(Message):
    ciphertext: B64
    attestation: dict = {}  # as ComputeReply's, of a further round (and the query it answers)


class Contribution(Message):
    """One node's ciphertext as the coordinator relays it to the release node, with the
    node's attestation of it: the release node sums these itself."""

    node: str
    ciphertext: B64
    attestation: dict


class ReleaseRequest(TaskHeader):
    vocabularies: list[B64] = []
    k: int
    contributors: list[str]
    dp: dict[str, dict] = {}
    min_contributors: int = 1    # the largest any contributor asked for
    study_members: int = 0       # accepted members of the study
    # aggregate jobs: every contributor's attested ciphertext (of the compute, or of the
    # round the state continues); the release node checks and sums them itself
    contributions: list[Contribution] = []
    attempt: int = Field(default=1, ge=1, le=MAX_ATTEMPTS)  # the attempt the sum is of
    reveals: dict[str, B64] = {}  # each contributor's sealed self-mask seed (or view) of it
    dropped: list[str] = []  # masked for in the attempt, not summed (node/masking.py)
    aggregates: dict[str, B64] = {}  # pooled ciphertexts by name (none for attested jobs)
    # training jobs: each round's contributions as the ServerApp kept them (ciphertexts,
    # attestations, revealed self-mask seeds; JSON), by round ("1".., and "final" for the
    # final evaluation): the release node sums them itself (node/round_updates.py)
    rounds: dict[str, B64] = {}
    state: B64 | None = None     # the release node's own state of an earlier round, sealed
    # the contributors' seal key claims (to seal the result to those that review it), and
    # the verdicts of their reviews, signed by each (scifed.sealing.verify_verdict)
    reviewer_claims: dict[str, dict] = {}
    verdicts: dict[str, dict] = {}
    stage: Literal["final", "progress"] = "final"
    round: int = 0               # the round a progress release reports
    extra: dict = {}             # job-type fields in clear (no data: counts of rounds etc.)


class ReleaseReply(Message):
    """The result sealed to the researcher, one more round to run, or the reason the
    officer's output review withheld the result."""

    sealed: B64 | None = None
    query: B64 | None = None
    state: B64 | None = None
    # the officer's output review withheld the result: only its reason, sealed to the
    # researcher (as a refusal's, scifed.sealing.refusal_context), leaves
    withheld: B64 | None = None
    # contributors whose own cells ask for output review: the signed result sealed to each
    # (scifed.sealing.review_context), and its sha256; the release node seals it to the
    # researcher once each answers a verdict to release
    reviews: dict[str, B64] = {}
    result_sha256: str = ""


class ReviewRequest(TaskHeader):
    """A contributor's output review of the result another node releases."""

    release_node: str
    sealed: B64          # the signed result, sealed to this node's seal key
    result_sha256: str   # of the plaintext: what the verdict names


class ReviewReply(Message):
    verdict: dict                 # signed by the reviewing node (scifed.sealing.sign_verdict)
    withheld: B64 | None = None   # the officer's reason, sealed to the researcher


class CheckReply(Message):
    rows: int
    dp: bool


class Waiting(Message):
    waiting: str  # what the task waits for (the officer's approval, an output review)
    phase: str = ""  # the job's phase meanwhile (e.g. "in output review"); "" keeps it


class Reserved(Message):
    epsilon: float | None = None  # what this node holds for the job (None: exact, no DP)


class CancelNotice(Message):
    job_id: str
    researcher: str = ""


class Withdrawn(Message):
    withdrawn: int            # approval requests taken out of the officers' queues
    unreserved: int = 0       # privacy-budget reservations released
    interrupted: int = 0      # reads of the job's running tasks stopped


class KeygenRequest(Message):
    study_id: str
    version: int
    members: dict[str, dict]  # node -> seal-key claim


class KeygenReply(Message):
    public_context: B64
    # node -> its copy: scifed.sealing.SignedKeyShare bytes (the lead's signed statement
    # of the key, with the secret sealed to the node beside it)
    shares: dict[str, B64]


class FlowerReset(Message):
    job_id: str


class Empty(Message):
    pass
