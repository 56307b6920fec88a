"""The ClientApp of `train` jobs, run by the node's ClientApp executor (node/executor.py)
for every message of a run whose app bundle the node trusts.

It holds nothing of its own: for every message it first asks the node's local API
(``node_config["local-api"]``, a Unix socket only the node's account can open) for a
training grant — the node's decision, the selected rows, the DP-SGD settings its policy
requires, the study key and the accountant history — and touches no data when refused.
It then decrypts the global model, measures it on this node's validation split, trains,
and hands its update (exact in round 1, quantised after, weighted by the previous round's
pooled rows) and metric sums to the node (``SealUpdate``), which masks them for the set
the message names and encrypts them under the study key (jobs.train.protocol,
node/round_updates.py); the app never holds the masks. It also tells the node what it
trained from (``trained_from``: the digest of the decrypted model and pooled metrics),
which the node signs, so the release node can tell whether the model it releases is the
chain of attested sums the rounds trained from. It reports what DP-SGD spent back
to the node. Values the quantised update clips are counted in the node's log. A
``train.reveal`` message asks the node for its unmask of a round's final set (its
self-mask seed in a set of two; its answer to the view in three or more: jobs.train.protocol).

Its reply goes through the coordinator, which sees no decision detail: a refused grant
answers the node's public "refused at node X" with the reason as the node sealed it to the
researcher (``sealed`` in the status record). Its own failures (training diverged) say
what went wrong without quoting data; anything unexpected stays in the node's log.
"""

from __future__ import annotations

import base64
import io
import json
import logging
from collections.abc import Callable

import grpc
import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from jobs.spec import parse_job_dict
from jobs.train.protocol import (
    ANSWER,
    ARRAYS,
    CONFIG,
    METRICS,
    MODEL,
    SEED,
    SHARES,
    STATUS,
    VIEW,
    Codec,
    average,
    blob_of,
    ciphertext,
    pooled_rows,
    start_digest,
    update_values,
)
from jobs.train.spec import DPSpec, TrainSpec
from protos.scifed.v1 import node_local_pb2 as pb
from protos.scifed.v1 import node_local_pb2_grpc as pbg
from scifed.errors import UserError
from scifed.he import StudyKey

log = logging.getLogger("scifed.train.client_app")

GRANT_TIMEOUT_SECONDS = 300
# Failures of the call itself (the local API is not running, or too slow): their details
# name the socket, not a decision. Any other status is the node's answer, kept at the node.
_TRANSPORT = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
_OPTIONS = [("grpc.max_receive_message_length", 1 << 30),
            ("grpc.max_send_message_length", 1 << 30)]

app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    return serve(msg, context, final=False)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    return serve(msg, context, final=True)


@app.train("reveal")
def reveal(msg: Message, context: Context) -> Message:
    """This node's self-mask seed of an attempt whose set the ServerApp says is final; the
    node decides whether to give it (node/round_updates.py)."""
    request = grant_request(msg)
    cfg = msg.content.config_records[CONFIG]
    target = str(context.node_config["local-api"])
    with grpc.insecure_channel(target, options=_OPTIONS) as channel:
        try:
            reply = pbg.NodeLocalStub(channel).RevealMask(pb.RevealMaskRequest(
                grant=request, stage=str(cfg["stage"]), attempt=int(cfg["attempt"]),
                contributors=json.loads(str(cfg["contributors"])),
                dropped=json.loads(str(cfg.get("dropped", "[]"))),
                shares={s: base64.b64decode(b) for s, b in
                        json.loads(str(cfg.get(SHARES, "{}"))).items()},
                masking_json=str(cfg.get("masking", "{}"))),
                timeout=GRANT_TIMEOUT_SECONDS)
        except grpc.RpcError as exc:
            return _api_failure(msg, target, exc, "reveal its self-mask")
    if reply.refused:  # "refused at node X"; the reason is sealed
        return _refusal(msg, reply.refused, reply.sealed_reason)
    return Message(RecordDict({STATUS: ConfigRecord({
        "ok": True, "reason": "", SEED: reply.seed, VIEW: reply.view,
        ANSWER: reply.answer_json})}), reply_to=msg)


def _refusal(msg: Message, reason: str, sealed: bytes = b"") -> Message:
    """A reply without a contribution: a public reason, and (for the node's refusal) its
    reason sealed to the researcher, which the coordinator keeps for them."""
    status = ConfigRecord({"ok": False, "reason": reason, "sealed": sealed})
    return Message(RecordDict({STATUS: status}), reply_to=msg)


def _api_failure(msg: Message, target: str, exc: grpc.RpcError, what: str) -> Message:
    """The local API failed or refused a call: a transport failure names the socket; the
    node's own answer stays in its log (it may say which rule refused)."""
    if exc.code() in _TRANSPORT:
        return _refusal(msg, f"the node's local API at {target} failed: "
                             f"{exc.code().name} {exc.details()}")
    log.error("the node's local API refused to %s: %s %s", what, exc.code().name,
              exc.details())
    return _refusal(msg, f"the node's local API answered {exc.code().name} when asked to "
                         f"{what}; the node's log says why")


def grant_request(msg: Message) -> pb.TrainingGrantRequest:
    """What the round's message asks this node to grant, from its config record."""
    cfg = msg.content.config_records[CONFIG]
    return pb.TrainingGrantRequest(
        job_id=str(cfg["job-id"]), study_id=str(cfg["study-id"]),
        key_version=int(cfg["key-version"]), dataset=str(cfg["dataset"]),
        spec_json=str(cfg["spec"]), filter=str(cfg["filter"]), round=int(cfg["round"]),
        n_nodes=int(cfg.get("n-nodes", 1)), researcher=str(cfg.get("researcher", "")),
        researcher_claim_json=str(cfg.get("researcher-claim", "")))


def serve(msg: Message, context: Context, *, final: bool,
          open_key: Callable[[bytes], Codec] = StudyKey.from_secret_bytes,
          seal_with: Callable[[pb.SealUpdateRequest], pb.SealUpdateReply] | None = None
          ) -> Message:
    """Answer one train (or, if ``final``, evaluate) message for this node: its update
    leaves masked and encrypted by the node (``SealUpdate``; ``seal_with``: the
    benchmark's plaintext twin's stand-in). A later attempt of a round first asks the node
    for the update it kept, and trains only if there is none."""
    request = grant_request(msg)
    cfg = msg.content.config_records[CONFIG]
    stage = "evaluate" if final else "train"
    target = str(context.node_config["local-api"])
    with grpc.insecure_channel(target, options=_OPTIONS) as channel:
        api = pbg.NodeLocalStub(channel)
        try:
            grant = api.TrainingGrant(request, timeout=GRANT_TIMEOUT_SECONDS)
        except grpc.RpcError as exc:
            return _api_failure(msg, target, exc, "grant training")
        if not grant.allowed:  # "refused at node X"; the reason is sealed
            return _refusal(msg, grant.reason, grant.sealed_reason)

        def seal(vectors: list[pb.UpdateVector], trained_from: str = "") -> pb.SealUpdateReply:
            ask = pb.SealUpdateRequest(
                grant=request, stage=stage, attempt=int(cfg.get("attempt", 1)),
                masking_json=str(cfg.get("masking", "{}")), vectors=vectors,
                trained_from=trained_from)
            if seal_with is not None:
                return seal_with(ask)
            return api.SealUpdate(ask, timeout=GRANT_TIMEOUT_SECONDS)

        try:
            sealed = seal([]) if int(cfg.get("attempt", 1)) > 1 else None
            epsilon = None
            if sealed is not None and sealed.refused:
                return _refusal(msg, sealed.refused, sealed.sealed_reason)
            if sealed is None or not sealed.sealed:
                vectors, report, epsilon, trained_from = _compute(
                    msg, grant, request, open_key(grant.study_key), final=final)
                if report is not None:  # spent, whatever becomes of the update
                    api.ReportTraining(report, timeout=GRANT_TIMEOUT_SECONDS)
                sealed = seal(vectors, trained_from)
                if sealed.refused:  # "refused at node X"; the reason is sealed
                    return _refusal(msg, sealed.refused, sealed.sealed_reason)
        except grpc.RpcError as exc:
            return _api_failure(msg, target, exc, "mask this node's update")
        except UserError as exc:  # e.g. diverged training: says what, quotes no data
            return _refusal(msg, str(exc))
        except Exception:  # a bug: its message may quote data, so it stays at the node
            log.exception("training at node %s failed", grant.node_name)
            return _refusal(msg, f"node {grant.node_name}: the ClientApp failed; the "
                                 "node's log says why")
    content = RecordDict({
        ARRAYS: ArrayRecord({name: ciphertext(blob)
                             for name, blob in sorted(sealed.ciphertexts.items())}),
        STATUS: ConfigRecord({"ok": True, "reason": "",
                              "attestation": sealed.attestation_json,
                              SHARES: json.dumps({n: base64.b64encode(b).decode()
                                                  for n, b in sorted(sealed.shares.items())})
                              })})
    if epsilon is not None:
        content["dp"] = MetricRecord({"epsilon": epsilon})
    return Message(content, reply_to=msg)


def _vector(name: str, values: np.ndarray, bound: float = 0.0,
            capacity: int = 1) -> pb.UpdateVector:
    buf = io.BytesIO()
    np.save(buf, np.asarray(values, dtype=np.float64), allow_pickle=False)
    return pb.UpdateVector(name=name, values=buf.getvalue(), bound=bound, capacity=capacity)


def _compute(msg: Message, grant: pb.TrainingGrantReply, request: pb.TrainingGrantRequest,
             key: Codec, *, final: bool
             ) -> tuple[list[pb.UpdateVector], pb.ReportTrainingRequest | None, float | None,
                        str]:
    """Everything after the grant: decrypt, evaluate, train (torch loads here). Returns the
    plain update for the node to mask, the DP-SGD report, the ε spent so far, and what it
    was trained from (:func:`jobs.train.protocol.start_digest` of the decrypted model and
    pooled metrics the message carried), which the node attests."""
    import torch

    from jobs.train import local
    from jobs.train.models import vector_to_model

    # Zoo models are small tabular models, for which one intra-op thread is as fast; more
    # threads oversubscribe the cores when ClientApps run side by side (measured: three
    # concurrent DP-SGD rounds on 2 cores took 27 s with torch's 2 threads, 10 s with 1).
    torch.set_num_threads(1)

    spec: TrainSpec = parse_job_dict(json.loads(request.spec_json)).params
    data = local.split(_npy(grant.features), _npy(grant.labels), spec, grant.node_name)
    model = local.initial_model(spec)
    arrays = msg.content.array_records.get(ARRAYS, ArrayRecord())
    theta_start = model_sum = metrics_sum = None
    if MODEL in arrays:
        model_sum = key.decrypt(blob_of(arrays, MODEL))
        theta_start = average(model_sum)
        vector_to_model(model, theta_start)
        if METRICS in arrays:
            metrics_sum = key.decrypt(blob_of(arrays, METRICS))
    trained_from = start_digest(model_sum, metrics_sum)
    validation = local.evaluate(model, data.x_val, data.y_val, spec.task)
    if final:
        return ([_vector(METRICS, np.concatenate([validation, [0.0, 0.0]]))], None, None,
                trained_from)

    from jobs.train.models import model_to_vector

    # the previous round's pooled training rows weigh this round's update
    pooled = pooled_rows(metrics_sum) if metrics_sum is not None else None

    dp = None
    if grant.dp.enabled:
        dp = DPSpec(epsilon=grant.dp.epsilon, delta=grant.dp.delta,
                    max_grad_norm=grant.dp.max_grad_norm)
    history = [(s.noise_multiplier, s.sample_rate, s.steps) for s in grant.dp_history]
    result = local.train(model, data, spec, round_no=request.round, node=grant.node_name,
                         dp=dp, history=history)
    if dp is not None and (result.epsilon or 0.0) > dp.epsilon * (1 + 1e-6):
        # more rounds than the noise was calibrated for (the round numbers are the
        # coordinator's): the update would spend beyond the job's ε, so it never leaves
        raise UserError(f"node {grant.node_name}: this round would bring the job's DP-SGD "
                        f"spending to ε={result.epsilon:.3f}, beyond its ε={dp.epsilon:g}; "
                        "nothing of it is released")
    values, bound, clipped = update_values(model_to_vector(model), result.n_train,
                                           pooled=pooled, theta_start=theta_start)
    if clipped:
        log.warning("node %s, round %d: %d value(s) of the update clipped to the round's "
                    "bound", grant.node_name, request.round, clipped)
    cfg = msg.content.config_records[CONFIG]
    capacity = int(cfg.get("capacity", request.n_nodes or 1))
    sums = np.concatenate([validation, [result.n_train, result.loss_sum]])
    report = pb.ReportTrainingRequest(
        job_id=request.job_id, dataset=request.dataset, round=request.round,
        examples=result.n_train, epsilon_spent=result.epsilon or 0.0,
        delta=dp.delta if dp else 0.0,
        dp_history=[pb.AccountantStep(noise_multiplier=s, sample_rate=q, steps=k)
                    for s, q, k in result.history])
    return ([_vector(MODEL, values, bound, capacity), _vector(METRICS, sums)], report,
            result.epsilon, trained_from)


def _npy(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)
