"""The ServerApp of `train` jobs: FedAvg over BFV ciphertexts on the coordinator host.

The coordinator is blind: this process holds only the study's public context, adds the
nodes' encrypted updates and metric sums, and never decrypts. Nodes weight their update
by their training rows before encrypting and send the weight inside the same ciphertext,
so the sum decrypts to the FedAvg average at the nodes (jobs.train.protocol). Every
round's message carries the previous round's summed model and its pooled metric sums:
from round 2 on, nodes weigh their quantised updates by that round's pooled rows.

It reads the job from ``run_config["job-dir"]`` (written by ``jobs.train.coordinate``),
checkpoints the encrypted global model (every round's is kept), pooled metric sums and
per-node state after every round, and each round's contributions as they came
(``ledger-r{r}.json``, ``ledger-final.json``: ciphertexts, signed attestations, revealed
self-mask seeds), which the release node sums again itself (node/round_updates.py
``verify_rounds``) before it picks the best validated model;
and resumes from that checkpoint when started again on the same directory (a SuperLink
restart fails in-flight Flower runs; the coordinator resubmits). A node that
refuses, errs or stays silent for ``round_timeout`` leaves the run; the run goes on while
at least ``min_nodes`` remain, otherwise it fails with the reasons in ``failure.json``.
A node's refusal reaches this process sealed to the researcher: the run records only
"refused at node X" and keeps the sealed reason (base64, in the checkpoint's and
failure.json's ``sealed_reasons``) for the coordinator to store where the researcher's
client opens it.

Flower's ``Grid.send_and_receive`` sleeps 3 s between pulls; this app polls every 0.1 s
(measured with Flower 1.41) and drives rounds itself so that each round is one
round-trip: validation of the received model rides on the next training message, and
only the final model needs a separate ``evaluate`` message.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterable
from logging import INFO, WARNING
from pathlib import Path

import httpx
import numpy as np
from flwr.app import (
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg
from flwr.supercore import log

from jobs.train.protocol import (
    ANSWER,
    ARRAYS,
    CHECKPOINT_FILE,
    CONFIG,
    FAILURE_FILE,
    METRICS,
    MODEL,
    PUBLIC_CONTEXT_FILE,
    REVEAL,
    RUN_FILE,
    SEED,
    SHARES,
    STATUS,
    VIEW,
    blob_of,
    ciphertext,
    write_bytes,
    write_json,
)
from scifed import masks
from scifed.he import context_is_private, parse, subtract_plain, sum_ciphertexts
from scifed.masks import SHARED_FROM
from scifed.recovery import answers_view, rebuilt_mask, recoverable, shortfall
from scifed.sealing import refused_at
from scifed.tasks import MAX_ATTEMPTS
from scifed.wire import now_ms

POLL_SECONDS = 0.1
TTL_MARGIN_SECONDS = 60.0


def _attempt_key(stage: str, server_round: int) -> str:
    """Where the checkpoint keeps a round's attempts: by round, the final evaluation as
    ``final``."""
    return "final" if stage == "evaluate" else str(server_round)


class TrainingFailed(Exception):
    """Too few nodes remain; the reason is in the job directory's failure.json."""


class Superseded(Exception):
    """A newer Flower run of the same job owns the job directory; this one must not write
    to it (a run whose coordinator restarted, outlived by its ServerApp)."""


class HEFedAvg(FedAvg):
    """FedAvg whose aggregation is a homomorphic sum with the study's public context, of
    contributions masked for each round's set of nodes."""

    masked = True  # the benchmark's plaintext twin sums in clear, without masks

    def __init__(self, job_dir: Path, run_id: int = 0) -> None:
        self.job_dir = Path(job_dir)
        self.job = json.loads((self.job_dir / RUN_FILE).read_text())
        self.public_context = (self.job_dir / PUBLIC_CONTEXT_FILE).read_bytes()
        if context_is_private(self.public_context):
            raise ValueError("refusing a secret study key: the coordinator holds only the "
                             "public context")
        self.spec = self.job["spec"]
        self.rounds = int(self.spec["rounds"])
        self.min_nodes = int(self.job["min_nodes"])
        self.timeout = float(self.spec["round_timeout"])
        self.claims = self.job.get("seal_claims") or {}  # node -> its seal key claim
        super().__init__(fraction_train=1.0, fraction_evaluate=1.0,
                         min_train_nodes=self.min_nodes, min_evaluate_nodes=self.min_nodes,
                         min_available_nodes=self.min_nodes, arrayrecord_key=ARRAYS,
                         configrecord_key=CONFIG)
        self.run_id = run_id
        self.state = self._load_checkpoint()
        self.state["flower_runs"].append(run_id)
        self._checkpoint()  # claims the job directory: an older run now stops writing
        self._round_started = time.monotonic()
        self._names: dict[int, str] = {}  # Flower node_id -> node name, this exchange
        self._sent: dict[str, str] = {}   # message id -> node name, this exchange
        self._seeds: dict[str, bytes] = {}  # node -> self-mask seed, this round's sum
        # a set of three or more: this round's view (U, D) and each answer to it
        self._view: dict | None = None

    # -- state -----------------------------------------------------------------------------
    def _load_checkpoint(self) -> dict:
        path = self.job_dir / CHECKPOINT_FILE
        if path.exists():
            state = json.loads(path.read_text())
            log(INFO, "resuming job %s after round %d/%d", self.job["job_id"], state["round"],
                self.rounds)
            state["resumed_after"].append(state["round"])
            state.setdefault("sealed_reasons", {})
            return state
        return {"job_id": self.job["job_id"], "rounds": self.rounds, "round": 0,
                "model_file": None, "model_files": {}, "metrics_files": {},
                "final_metrics_file": None,
                "active": sorted(self.job["datasets"]), "dropped": {}, "sealed_reasons": {},
                "contributors": {}, "epsilon": {}, "resumed_after": [], "flower_runs": [],
                "round_seconds": {}, "complete": False}

    def global_arrays(self) -> ArrayRecord:
        """The encrypted global model after the last checkpointed round, with that round's
        pooled metrics (none before round 1)."""
        if self.state["model_file"] is None:
            return ArrayRecord()
        metrics = self.state["metrics_files"][str(self.state["round"])]
        return _model_and_metrics((self.job_dir / self.state["model_file"]).read_bytes(),
                                  (self.job_dir / metrics).read_bytes())

    def _checkpoint(self) -> None:
        _claim(self.job_dir, self.run_id)
        self.state["updated_ms"] = now_ms()
        write_json(self.job_dir / CHECKPOINT_FILE, self.state)

    def _fail(self, round_no: int, reason: str) -> TrainingFailed:
        _claim(self.job_dir, self.run_id)
        write_json(self.job_dir / FAILURE_FILE, {
            "round": round_no, "reason": reason,
            "sealed_reasons": dict(self.state.get("sealed_reasons", {}))})
        log(WARNING, "job %s failed: %s", self.job["job_id"], reason)
        return TrainingFailed(reason)

    # -- Strategy interface -------------------------------------------------------------
    def summary(self) -> None:
        log(INFO, "HEFedAvg: job %s, %d rounds, nodes %s, at least %d", self.job["job_id"],
            self.rounds, ", ".join(self.state["active"]), self.min_nodes)

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        return self._messages(server_round, arrays, config, grid, MessageType.TRAIN)

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord,
                           config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        return self._messages(server_round, arrays, config, grid, MessageType.EVALUATE)

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """``replies``: the contributions of the round's final attempt, by node, whose
        self-mask seeds :meth:`_contributions` collected."""
        good = dict(replies)
        model = self._unmasked(MODEL, [blob_of(m.content[ARRAYS], MODEL)
                                       for m in good.values()])
        metrics = self._keep_metrics(server_round, good)
        model_file = f"model-r{server_round}.ct"
        write_bytes(self.job_dir / model_file, model)
        self.state["model_file"], self.state["round"] = model_file, server_round
        # every round's model stays: the release node, which alone can read the pooled
        # validation, releases the best one (jobs.train.release)
        self.state.setdefault("model_files", {})[str(server_round)] = model_file
        self.state["round_seconds"][str(server_round)] = time.monotonic() - self._round_started
        for name, msg in good.items():
            dp = msg.content.metric_records.get("dp")
            if dp is not None:
                self.state["epsilon"][name] = float(dp["epsilon"])
        self._checkpoint()
        return _model_and_metrics(model, metrics), MetricRecord({"nodes": len(good)})

    def aggregate_evaluate(self, server_round: int,
                           replies: Iterable[Message]) -> MetricRecord | None:
        good = dict(replies)
        self._keep_metrics(server_round, good, final=True)
        self.state["round_seconds"]["final"] = time.monotonic() - self._round_started
        self.state["complete"] = True
        self._checkpoint()
        return MetricRecord({"nodes": len(good)})

    # -- the loop ------------------------------------------------------------------------
    def run(self, grid: Grid) -> None:
        """Train the remaining rounds, then evaluate the final model; checkpoint each."""
        self.summary()
        arrays = self.global_arrays()
        for r in range(self.state["round"] + 1, self.rounds + 1):
            self._round_started = time.monotonic()
            good = self._contributions(grid, r, arrays, MessageType.TRAIN)
            arrays, _ = self.aggregate_train(r, good.items())
            log(INFO, "[ROUND %d/%d] %d node(s) contributed in %.1fs", r, self.rounds,
                len(self.state["contributors"][str(r)]), self.state["round_seconds"][str(r)])
        if not self.state["complete"]:
            self._round_started = time.monotonic()
            good = self._contributions(grid, self.rounds, arrays, MessageType.EVALUATE)
            self.aggregate_evaluate(self.rounds, good.items())
            log(INFO, "final model evaluated by %s", ", ".join(self.state["active"]))

    def _contributions(self, grid: Grid, server_round: int, arrays: ArrayRecord,
                       kind: str) -> dict[str, Message]:
        """One round's masked contributions, by node (jobs.train.protocol): attempts
        until every node of one answers — a dropout makes the survivors try again — then
        each contributor's self-mask seed of that attempt (``self._seeds``).

        Attempts are numbered across resumed runs (the checkpoint keeps the last one and
        its set): a resumed run repeats that attempt if its set is the one still active
        (every node then replays its answer), else takes the next. Where the attempt's
        view already went out (the checkpoint keeps it: ``_reveal_view``), the repeat
        keeps that view — its dropped nodes stay out even if their answers come now —
        since each node answers one view of an attempt and no attempt may follow it."""
        stage = "evaluate" if kind == MessageType.EVALUATE else "train"
        key = _attempt_key(stage, server_round)
        attempts = self.state.setdefault("attempts", {})
        while True:
            last = attempts.get(key)
            shown = last.get("view") if last is not None else None
            messages = self._messages(server_round, arrays, ConfigRecord(), grid, kind,
                                      masked_for=last["set"] if shown else None)
            asked = last["set"] if shown else sorted(self._names.values())
            # the same set as the checkpoint's last attempt: the nodes replay their answers
            attempt = 1 if last is None else last["attempt"] + (last["set"] != asked)
            for message in messages:
                message.content.config_records[CONFIG]["attempt"] = attempt
            if attempt > MAX_ATTEMPTS:
                raise self._fail(server_round, f"nodes kept dropping out: none of "
                                 f"{MAX_ATTEMPTS} attempts of round {server_round} had "
                                 "every node answer")
            attempts[key] = {"attempt": attempt, "set": asked,
                             **({"view": shown} if shown else {})}
            self._checkpoint()
            good = self._accept(server_round, self._exchange(grid, messages))
            if shown:  # the view already shown: its dropped nodes stay out
                for name in shown["dropped"]:
                    good.pop(name, None)
                    if name in self.state["active"]:
                        self._drop(name, f"round {server_round}: left out by the view its "
                                   "attempt showed before the run stopped")
                lost = sorted(set(shown["contributors"]) - set(good))
                if lost:
                    raise self._fail(server_round, f"round {server_round}'s attempt "
                                     f"{attempt} showed the view summing "
                                     f"{', '.join(shown['contributors'])} before the run "
                                     f"stopped, and {', '.join(lost)} did not give its "
                                     "update again: no attempt may follow a view")
                break
            if sorted(good) == asked:
                break
            if self.masked and recoverable(len(asked), len(good)):
                log(WARNING, "round %d, attempt %d: %s dropped after the others masked for "
                    "them; the survivors' seeds with them take them out of the sum",
                    server_round, attempt, ", ".join(sorted(set(asked) - set(good))))
                break
            log(WARNING, "round %d, attempt %d: %s dropped after the others masked for "
                "them; the survivors try again", server_round, attempt,
                ", ".join(sorted(set(asked) - set(good))))
        self._seeds, self._view = {}, None
        if self.masked and len(asked) >= SHARED_FROM:
            self._view = self._reveal_view(grid, server_round, stage, attempt, good, asked)
        elif self.masked:
            self._seeds = self._reveal(grid, server_round, stage, attempt, good)
        self._keep_ledger(key, stage, server_round, attempt, good)
        return good

    def _keep_ledger(self, key: str, stage: str, server_round: int, attempt: int,
                     good: dict[str, Message]) -> None:
        """What the round's sum is made of, for the release node to make it again
        (node/round_updates.py ``verify_rounds``): every contributor's ciphertexts as it
        sent them, its signed attestation and its revealed self-mask seed. The release
        node sums and unmasks these itself and checks that the next round was trained
        from exactly that sum, so a model that is not the sum of these updates, or of
        another set or attempt, is refused at release (jobs.train.protocol)."""
        b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
        contributions = {}
        for name, msg in sorted(good.items()):
            arrays = msg.content[ARRAYS]
            attestation = msg.content.config_records[STATUS].get("attestation") or ""
            contributions[name] = {
                "ciphertexts": {n: b64(blob_of(arrays, n)) for n in sorted(arrays.keys())},
                "attestation": json.loads(str(attestation)) if attestation else None}
        ledger = {"stage": stage, "round": server_round, "attempt": attempt,
                  "contributions": contributions,
                  "seeds": {n: b64(seed) for n, seed in sorted(self._seeds.items())}}
        if self._view is not None:  # each answer as sealed for the members
            ledger["view"] = {"dropped": self._view["dropped"],
                              "answers": {n: b64(v) for n, v in
                                          sorted(self._view["sealed"].items())}}
        name = "ledger-final.json" if key == "final" else f"ledger-r{server_round}.json"
        write_bytes(self.job_dir / name, json.dumps(ledger).encode())
        self.state.setdefault("ledger_files", {})[key] = name

    def _reveal(self, grid: Grid, server_round: int, stage: str, attempt: int,
                good: dict[str, Message]) -> dict[str, bytes]:
        """Every contributor's self-mask seed of the final attempt. A node that gives none
        fails the job: its mask cannot come off the sum without it, and no later attempt
        may follow a revealed one (node/masking.py)."""
        contributors = sorted(good)
        messages = []
        for node_id, name in self._names.items():
            if name not in good:
                continue
            cfg = ConfigRecord({**self._node_config(name, server_round, attempt),
                                "stage": stage, "contributors": json.dumps(contributors)})
            messages.append(Message(content=RecordDict({CONFIG: cfg}), dst_node_id=node_id,
                                    message_type=REVEAL, group_id=f"{server_round}-reveal",
                                    ttl=self.timeout + TTL_MARGIN_SECONDS))
        seeds: dict[str, bytes] = {}
        why: dict[str, str] = {}
        for reply in self._exchange(grid, messages):
            name = self._sent.get(reply.metadata.reply_to_message_id)
            if name is None:
                continue
            status = None if reply.has_error() else reply.content.config_records[STATUS]
            seed = status.get(SEED) if status is not None and status["ok"] else None
            sealed = status.get("sealed") if status is not None else None
            if isinstance(seed, bytes) and len(seed) == 32:
                seeds[name] = seed
            elif isinstance(sealed, bytes) and sealed:  # the node's refusal: no detail
                self._drop(name, refused_at(name), sealed)
                why[name] = refused_at(name)
            else:
                why[name] = (reply.error.reason if reply.has_error() else
                             str(status["reason"]) if status is not None else "no seed")
        missing = [n for n in contributors if n not in seeds]
        if missing:
            for name in missing:
                self._drop(name, f"round {server_round}: no self-mask seed "
                                 f"({why.get(name, f'no reply within {self.timeout:.0f}s')})")
            self._checkpoint()
            raise self._fail(server_round, f"round {server_round}'s sum cannot be unmasked: "
                             f"{', '.join(missing)} gave no self-mask seed of attempt "
                             f"{attempt} ({'; '.join(f'{n}: {w}' for n, w in why.items())})")
        return seeds

    def _reveal_view(self, grid: Grid, server_round: int, stage: str, attempt: int,
                     good: dict[str, Message], asked: list[str]) -> dict:
        """A set of three or more (node/masking.py): the view of the final attempt — U
        the contributors whose update came, D the nodes masked for whose update did not —
        and each node of U's answer to it, from the share boxes the others made for it.
        A node of U that gives none is still summed while t + 1 answer and D is empty;
        otherwise the job fails (no later attempt may follow a revealed view)."""
        contributors, dropped = sorted(good), sorted(set(asked) - set(good))
        # kept before any node sees it: a resumed run must show the very same view
        self.state["attempts"][_attempt_key(stage, server_round)]["view"] = {
            "contributors": contributors, "dropped": dropped}
        self._checkpoint()
        boxes = {n: json.loads(str(m.content.config_records[STATUS].get(SHARES) or "{}"))
                 for n, m in good.items()}
        masking = json.dumps({n: self.claims[n] for n in asked if n in self.claims})
        messages = []
        for node_id, name in self._names.items():
            if name not in good:
                continue
            cfg = ConfigRecord({**self._node_config(name, server_round, attempt),
                                "stage": stage, "contributors": json.dumps(contributors),
                                "dropped": json.dumps(dropped), "masking": masking,
                                SHARES: json.dumps({s: b[name] for s, b in boxes.items()
                                                    if name in b})})
            messages.append(Message(content=RecordDict({CONFIG: cfg}), dst_node_id=node_id,
                                    message_type=REVEAL, group_id=f"{server_round}-reveal",
                                    ttl=self.timeout + TTL_MARGIN_SECONDS))
        answers: dict[str, dict] = {}
        sealed: dict[str, bytes] = {}
        why: dict[str, str] = {}
        round_of = (stage, server_round)
        for reply in self._exchange(grid, messages):
            name = self._sent.get(reply.metadata.reply_to_message_id)
            if name is None:
                continue
            status = None if reply.has_error() else reply.content.config_records[STATUS]
            if status is not None and status["ok"]:
                try:
                    answer = json.loads(str(status.get(ANSWER) or "null"))
                except ValueError:
                    answer = None
                view = status.get(VIEW)
                if isinstance(view, bytes) and view and isinstance(answer, dict) and \
                        answers_view(answer, name, attempt, contributors, dropped, round_of):
                    answers[name], sealed[name] = answer, view
                    continue
                why[name] = "its answer is not one to this view"
            elif status is not None and isinstance(status.get("sealed"), bytes) \
                    and status.get("sealed"):  # the node's refusal: no detail
                self._drop(name, refused_at(name), status["sealed"])
                why[name] = refused_at(name)
            else:
                why[name] = (reply.error.reason if reply.has_error() else
                             str(status["reason"]) if status is not None else "no answer")
        missing = [n for n in contributors if n not in answers]
        need = shortfall(len(asked), len(dropped), len(answers)) if missing else None
        for name in missing:  # summed still (by the others' shares) or the job fails
            self._drop(name, f"round {server_round}: no unmask answer "
                             f"({why.get(name, f'no reply within {self.timeout:.0f}s')})")
        if need:
            self._checkpoint()
            raise self._fail(server_round, f"round {server_round}'s sum cannot be unmasked: "
                             f"{', '.join(missing)} gave no answer to the unmask of attempt "
                             f"{attempt}, and taking the masks off needs {need} "
                             f"({'; '.join(f'{n}: {w}' for n, w in why.items())})")
        if missing:
            log(WARNING, "round %d: %s gave no unmask answer; the others' shares take "
                "their self-masks off", server_round, ", ".join(missing))
        return {"contributors": contributors, "dropped": dropped, "answers": answers,
                "sealed": sealed}

    # -- helpers -------------------------------------------------------------------------
    def _sum(self, blobs: list[bytes]) -> bytes:
        """The aggregation itself: a homomorphic sum, public context only."""
        return sum_ciphertexts(self.public_context, blobs)

    def _unmasked(self, name: str, blobs: list[bytes]) -> bytes:
        """The sum of the contributions' vector ``name`` with their revealed self-masks
        taken off (public context only); their pairwise masks cancel in the sum."""
        total = self._sum(blobs)
        if not self.masked:
            return total
        slots = parse(total).slots
        if self._view is not None:  # t-of-n shares, and the survivors' seeds with D
            v = self._view
            mask = rebuilt_mask(v["answers"], v["contributors"], v["dropped"], slots,
                                name=name)
            return subtract_plain(self.public_context, total, mask)
        mask = np.zeros(slots, dtype=np.uint64)
        for seed in self._seeds.values():
            mask = masks.add(mask, masks.named_mask(seed, name, slots))
        return subtract_plain(self.public_context, total, mask)

    def _messages(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                  grid: Grid, kind: str, attempt: int = 1,
                  masked_for: list[str] | None = None) -> list[Message]:
        """One message per active node (each carries that node's dataset, and the set the
        attempt masks for: the nodes' seal key claims — the active nodes, or
        ``masked_for`` when an attempt is repeated for the set it had); nodes whose
        SuperNode is not online leave the run first."""
        online = {n.name: n.node_id for n in grid.get_nodes() if n.status == "online"}
        for name in list(self.state["active"]):
            if name not in online:
                self._drop(name, "its Flower SuperNode is not connected")
        self._quorum(server_round)
        self._names = {online[name]: name for name in self.state["active"]}
        masked_for = masked_for or list(self._names.values())
        masking = json.dumps({name: self.claims[name] for name in masked_for
                              if name in self.claims})
        messages = []
        for node_id, name in self._names.items():
            node_config = ConfigRecord({**config, **self._node_config(name, server_round,
                                                                      attempt),
                                        "masking": masking, "n-nodes": len(masked_for)})
            content = RecordDict({CONFIG: node_config, ARRAYS: arrays})
            messages.append(Message(content=content, dst_node_id=node_id, message_type=kind,
                                    group_id=str(server_round),
                                    ttl=self.timeout + TTL_MARGIN_SECONDS))
        return messages

    def _node_config(self, name: str, server_round: int, attempt: int) -> dict:
        """What every message of a round tells node ``name``: the job, its dataset there,
        the round and attempt, and the researcher's claim."""
        return {
            "job-id": self.job["job_id"], "study-id": self.job["study_id"],
            "key-version": int(self.job["key_version"]),
            "dataset": self.job["datasets"][name], "filter": self.job.get("filter") or "",
            "spec": json.dumps(self.job["job_spec"]), "round": server_round,
            "attempt": attempt, "researcher": self.job.get("researcher", ""),
            # public and CA-certified: the node seals a refusal's reason to it
            "researcher-claim": json.dumps(self.job["researcher_claim"])
            if self.job.get("researcher_claim") else "",
            # the nodes asked (a node's policy may ask for more) and the most contributors
            # any sum of the job has (every quantised update of a round names the same)
            "n-nodes": len(self._names), "capacity": len(self.job["datasets"])}

    def _exchange(self, grid: Grid, messages: Iterable[Message]) -> list[Message]:
        """Push, then pull every POLL_SECONDS until all replied or the round times out."""
        messages = list(messages)
        ids = list(grid.push_messages(messages))
        self._sent = {mid: self._names[m.metadata.dst_node_id]
                      for mid, m in zip(ids, messages, strict=True) if mid}
        pending = set(self._sent)
        replies: list[Message] = []
        deadline = time.monotonic() + self.timeout
        while pending and time.monotonic() < deadline:
            for reply in grid.pull_messages(list(pending)):
                pending.discard(reply.metadata.reply_to_message_id)
                replies.append(reply)
            if pending:
                time.sleep(POLL_SECONDS)
        return replies

    def _accept(self, server_round: int, replies: Iterable[Message]) -> dict[str, Message]:
        """Replies that carry a contribution, by node; every other node leaves the run."""
        good: dict[str, Message] = {}
        for msg in replies:
            name = self._sent.get(msg.metadata.reply_to_message_id)
            if name is None:
                continue
            if msg.has_error():
                self._drop(name, f"round {server_round}: {msg.error.reason}")
            elif not msg.content.config_records[STATUS]["ok"]:
                status = msg.content.config_records[STATUS]
                sealed = status.get("sealed") or b""
                if isinstance(sealed, bytes) and sealed:  # the node's refusal: no detail
                    self._drop(name, refused_at(name), sealed)
                else:  # the ClientApp's own failure (e.g. training diverged)
                    self._drop(name, str(status["reason"]))
            else:
                good[name] = msg
        for name in set(self._names.values()) - set(good) - set(self.state["dropped"]):
            self._drop(name, f"round {server_round}: no reply within {self.timeout:.0f}s")
        self.state["contributors"][str(server_round)] = sorted(good)
        self._quorum(server_round)
        return good

    def _keep_metrics(self, server_round: int, good: dict[str, Message],
                      final: bool = False) -> bytes:
        metrics = self._unmasked(METRICS, [blob_of(m.content[ARRAYS], METRICS)
                                           for m in good.values()])
        name = "metrics-final.ct" if final else f"metrics-r{server_round}.ct"
        write_bytes(self.job_dir / name, metrics)
        if final:
            self.state["final_metrics_file"] = name
        else:
            self.state["metrics_files"][str(server_round)] = name
        return metrics

    def _drop(self, name: str, reason: str, sealed: bytes = b"") -> None:
        """``sealed``: the node's reason, sealed to the researcher (``reason`` then says
        only that it refused)."""
        if name in self.state["active"]:
            self.state["active"].remove(name)
            self.state["dropped"][name] = reason
            if sealed:
                self.state["sealed_reasons"][name] = base64.b64encode(sealed).decode()
            log(WARNING, "node %s leaves the run: %s", name, reason)

    def _quorum(self, server_round: int) -> None:
        if len(self.state["active"]) >= self.min_nodes:
            return
        self._checkpoint()
        reasons = "; ".join(f"{n}: {why}" for n, why in sorted(self.state["dropped"].items()))
        raise self._fail(server_round, f"only {len(self.state['active'])} node(s) remain in "
                         f"round {server_round}, the job needs {self.min_nodes} ({reasons})")


def _model_and_metrics(model: bytes, metrics: bytes) -> ArrayRecord:
    """What a round's messages carry: the summed model and the same round's pooled
    metrics, whose training rows weigh the nodes' next (quantised) updates."""
    return ArrayRecord({MODEL: ciphertext(model), METRICS: ciphertext(metrics)})


def _claim(job_dir: Path, run_id: int) -> None:
    """Raise :class:`Superseded` if a later run has taken over the job directory."""
    path = job_dir / CHECKPOINT_FILE
    runs = json.loads(path.read_text())["flower_runs"] if path.exists() else []
    if run_id in runs and runs[-1] != run_id:
        raise Superseded(f"Flower run {runs[-1]} now trains job {job_dir.name}")


app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    job_dir = Path(str(context.run_config["job-dir"]))
    try:
        HEFedAvg(job_dir, context.run_id).run(grid)
    except (TrainingFailed, Superseded, httpx.TransportError):
        raise  # the reason is written, a later run trains the job, or the SuperLink went
        # away (the coordinator resubmits)
    except Exception as exc:  # a resubmission would fail the same way: say why, once
        _claim(job_dir, context.run_id)
        write_json(job_dir / FAILURE_FILE, {"round": None,
                                            "reason": f"the ServerApp failed: {exc!r}"})
        raise
