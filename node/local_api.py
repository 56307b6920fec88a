"""The node's local API for apps running on the node host: the Flower ClientApp of a
training job asks it, before touching anything, whether it may train, and gets the rows
only through it; the node's ClientApp executor asks it, before running anything, whether
the app a Flower run shipped is one the node trusts (``node/apps.py``).

Every grant re-checks what the coordinator cannot vouch for, with the same gate
(`node/gate.py`) that answered the coordinator's check before the run, and charges the
job's ε (once per job); the rows come from the job type's ``grant``. The socket is
``state_dir/local.sock`` with mode 0600, so only processes of the node's own account (its
SuperNode and its ClientApp executor) reach it.

A refusal — the gate's decision, the budget, the officer, rows the job cannot use, a
malformed request — says only "refused at node X": the ClientApp's reply travels through
the coordinator's SuperLink and ServerApp, and the coordinator sees no decision detail. The
node's reason goes sealed to the job's researcher (``node.release.seal_refusal``, as the
runner seals a task's refusal); the coordinator stores it for the researcher's client.

Each round's update leaves the node masked (node/round_updates.py): the ClientApp hands
its plain update to ``SealUpdate`` with the set the round's message names, and the node
verifies the set, masks, encrypts and attests; ``RevealMask`` gives the node's self-mask
seed of an attempt once its set is final. The seal key, the job secret and the masks never
leave this process.

DP-SGD accounting lives here too: each round's ClientApp reports the accountant history,
and the next grant hands it back, so ε composes over all rounds of a job (and over a run
resumed from a checkpoint, or by a restarted executor): the ClientApp keeps no state
between rounds.
"""

from __future__ import annotations

import io
import json
import logging
from concurrent import futures
from pathlib import Path

import grpc
import numpy as np

from node.approvals import Waiting
from node.apps import AppTrust
from node.gate import Gate
from node.release import seal_refusal
from node.round_updates import RoundUpdates, Vector
from protos.scifed.v1 import node_local_pb2 as pb
from protos.scifed.v1 import node_local_pb2_grpc as pbg
from scifed.errors import UserError
from scifed.rpc import start_on_private_socket, user_errors
from scifed.sealing import refused_at
from scifed.tasks import TaskHeader
from scifed.wire import now_ms

log = logging.getLogger("scifed.node.local_api")

SOCKET_NAME = "local.sock"
# Training data travels in one reply; 1 GiB covers ~30M float32 cells.
MAX_MESSAGE_BYTES = 1 << 30
GRPC_OPTIONS = [("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)]


def socket_path(state_dir: Path) -> Path:
    return Path(state_dir) / SOCKET_NAME


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


class NodeLocalServicer(pbg.NodeLocalServicer):
    def __init__(self, gate: Gate, apps: AppTrust, ca_pem: bytes | None = None) -> None:
        """``apps``: which Flower apps the node's ClientApp executor may run. ``ca_pem``:
        the federation CA that certifies researchers' seal keys (by default read from the
        node's TLS configuration at each refusal)."""
        self.gate = gate
        self.apps = apps
        self.registry = gate.registry
        self.node = gate.node
        self.ca_pem = ca_pem
        self.rounds = RoundUpdates(gate)

    # -- RPCs ---------------------------------------------------------------------------
    @user_errors
    def TrainingGrant(self, request: pb.TrainingGrantRequest, context) -> pb.TrainingGrantReply:
        try:
            return self._grant(request)
        except (UserError, Waiting) as exc:  # the node's own reason: for the researcher
            return self._refusal(request, str(exc))
        except Exception:  # a bug: its message may quote data, so it stays in our log
            log.exception("training grant for job %s failed", request.job_id)
            return self._refusal(request, f"internal error at node {self.node}")

    def _grant(self, request: pb.TrainingGrantRequest) -> pb.TrainingGrantReply:
        adm = self._admit(request, audit=request.round <= 1)
        if adm.decision.dp:  # once per job: a later round's charge replays the first
            self.gate.charge(adm, delta=adm.job.requested_delta(adm.params))
        with self.gate.watched(adm), adm.open() as data:  # rows it cannot use: a refusal
            grant = adm.job.grant(adm.params, data, adm.limits)
        dp = grant.dp
        return pb.TrainingGrantReply(
            allowed=True, reason=adm.decision.reason, features=npy_bytes(grant.features),
            labels=npy_bytes(grant.labels), study_key=adm.key.secret_bytes(),
            key_version=request.key_version, node_name=self.node,
            dp=pb.DpSettings(enabled=True, epsilon=dp["epsilon"], delta=dp["delta"],
                             max_grad_norm=dp["max_grad_norm"]) if dp else None,
            dp_history=self._history(request.job_id, adm.row.dataset_id))

    def _admit(self, request: pb.TrainingGrantRequest, *, audit: bool = False):
        """The gate's admission of the job a grant request names (as for every task from
        the coordinator: a recent CRL, the researcher not revoked)."""
        try:
            spec = json.loads(request.spec_json)
            header = TaskHeader(
                job_id=request.job_id, study_id=request.study_id,
                key_version=request.key_version, job_type=str(spec.get("type", "")),
                researcher=request.researcher, n_nodes=max(request.n_nodes, 1),
                dataset=request.dataset, spec=spec)
        except (ValueError, AttributeError) as exc:
            raise UserError(f"node {self.node}: malformed grant request: {exc}") from None
        trust = self.gate.studies.trust
        trust.check_researcher(trust.fresh(request.job_id), _claim(request), request.job_id,
                               request.researcher)
        return self.gate.admit(header, "grant", audit=audit)

    def _refusal(self, request: pb.TrainingGrantRequest, reason: str) -> pb.TrainingGrantReply:
        """A refusal that names this node only, with the reason sealed to the job's
        researcher. A request without a valid claim of that researcher gets no reason at
        all: it stays in this node's log."""
        claim = _claim(request)
        sealed = seal_refusal(claim if isinstance(claim, dict) else None, self._ca(),
                              request.researcher, request.job_id, self.node, reason)
        public = refused_at(self.node)
        if sealed is None:
            log.warning("job %s: training refused (%s); the request carries no valid seal "
                        "key claim of researcher %r, so the reason stays in this log",
                        request.job_id, reason, request.researcher)
            public += " (the request carried no valid seal key of the researcher to seal " \
                      "the reason to; it is in the node's log)"
        return pb.TrainingGrantReply(allowed=False, reason=public, node_name=self.node,
                                     sealed_reason=sealed or b"")

    def _ca(self) -> bytes:
        return self.ca_pem if self.ca_pem is not None else self.gate.studies.trust.ca_pem

    @user_errors
    def ReportTraining(self, request: pb.ReportTrainingRequest,
                       context) -> pb.ReportTrainingReply:
        row = self.registry.get(request.dataset)
        history = [[s.noise_multiplier, s.sample_rate, s.steps] for s in request.dp_history]
        with self.registry.store.tx() as con:
            con.execute("INSERT OR REPLACE INTO training_reports VALUES (?,?,?,?,?,?,?,?)",
                        (request.job_id, row.dataset_id, request.round, request.examples,
                         request.epsilon_spent, request.delta, json.dumps(history), now_ms()))
        return pb.ReportTrainingReply(epsilon_spent=request.epsilon_spent)

    @user_errors
    def SealUpdate(self, request: pb.SealUpdateRequest, context) -> pb.SealUpdateReply:
        try:  # the policy may have changed since the grant: refused as a grant is
            adm = self._admit(request.grant)
        except (UserError, Waiting) as exc:
            refusal = self._refusal(request.grant, str(exc))
            return pb.SealUpdateReply(refused=refusal.reason,
                                      sealed_reason=refusal.sealed_reason)
        try:
            masking = json.loads(request.masking_json or "{}")
            vectors = [Vector(v.name, np.load(io.BytesIO(v.values), allow_pickle=False),
                              v.bound, v.capacity or 1) for v in request.vectors]
        except ValueError as exc:
            raise UserError(f"node {self.node}: malformed update: {exc}") from None
        if not isinstance(masking, dict):
            raise UserError(f"node {self.node}: the set to mask for is no JSON object")
        sealed = self.rounds.seal(adm, request.stage, request.grant.round, request.attempt,
                                  masking, vectors, request.trained_from)
        if sealed is None:
            return pb.SealUpdateReply(sealed=False)
        return pb.SealUpdateReply(sealed=True, ciphertexts=sealed.ciphertexts,
                                  attestation_json=json.dumps(sealed.attestation),
                                  shares=sealed.shares)

    @user_errors
    def RevealMask(self, request: pb.RevealMaskRequest, context) -> pb.RevealMaskReply:
        try:
            adm = self._admit(request.grant)
        except (UserError, Waiting) as exc:
            refusal = self._refusal(request.grant, str(exc))
            return pb.RevealMaskReply(refused=refusal.reason,
                                      sealed_reason=refusal.sealed_reason)
        try:
            masking = json.loads(request.masking_json or "{}")
        except ValueError:
            masking = None
        if not isinstance(masking, dict):
            raise UserError(f"node {self.node}: the set masked for is no JSON object")
        revealed = self.rounds.reveal(adm, request.stage, request.grant.round,
                                      request.attempt, list(request.contributors),
                                      list(request.dropped), dict(request.shares), masking)
        return pb.RevealMaskReply(seed=revealed.seed, view=revealed.view,
                                  answer_json=json.dumps(revealed.answer)
                                  if revealed.answer is not None else "")

    @user_errors
    def CheckApp(self, request: pb.CheckAppRequest, context) -> pb.CheckAppReply:
        verdict = self.apps.check(request.fab, run_id=request.run_id, job_id=request.job_id)
        return pb.CheckAppReply(trusted=verdict.trusted, sha256=verdict.sha256,
                                client_app=verdict.client_app, reason=verdict.reason)

    def _history(self, job_id: str, dataset_id: str) -> list[pb.AccountantStep]:
        """The accountant history of the latest report of this job, whatever round number
        the request gives: that number is the coordinator's word, and a ServerApp that
        called every round "round 1" would otherwise start each round's accountant
        afresh. (A round run again after a crash so counts its first attempt too: the
        accountant errs toward spending.) The ClientApp refuses to release a round whose
        accumulated ε exceeds the job's."""
        with self.registry.store.tx() as con:
            r = con.execute("SELECT history_json FROM training_reports WHERE job_id=? AND "
                            "dataset_id=? ORDER BY reported_ms DESC, round DESC LIMIT 1",
                            (job_id, dataset_id)).fetchone()
        steps = json.loads(r["history_json"]) if r else []
        return [pb.AccountantStep(noise_multiplier=s, sample_rate=q, steps=n)
                for s, q, n in steps]


def _claim(request: pb.TrainingGrantRequest) -> object:
    """The researcher's seal key claim a grant request carries (None if unreadable)."""
    try:
        return json.loads(request.researcher_claim_json or "null")
    except (ValueError, RecursionError):
        return None


class LocalApi:
    """The local API's gRPC server on its Unix socket (0600), owned by the node process."""

    def __init__(self, gate: Gate, state_dir: Path, apps: AppTrust,
                 ca_pem: bytes | None = None) -> None:
        self.path = socket_path(state_dir)
        self.servicer = NodeLocalServicer(gate, apps, ca_pem)
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8),
                                  options=GRPC_OPTIONS)
        pbg.add_NodeLocalServicer_to_server(self.servicer, self.server)

    def start(self) -> None:
        start_on_private_socket(self.server, self.path)

    def stop(self) -> None:
        self.server.stop(grace=2).wait()
        self.path.unlink(missing_ok=True)
