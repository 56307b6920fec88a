"""The coordinator's side of a `train` job: have every node check it (`job.check`),
turn it into a Flower run on the supervised SuperLink, follow its rounds (a release node
seals each round's pooled metrics to the researcher for `job watch`), and have a release
node decrypt the final model and seal it with the per-round metrics and each node's ε to
the researcher.

The ServerApp and the coordinator share a job directory under the SuperLink's state
directory (``flower/jobs/<job_id>``): the coordinator writes the job and the study's
public context; the ServerApp writes a checkpoint after every round (encrypted model and
metric sums, the nodes still in the run, why others left) and, when it gives up, the
reason. A run that dies without a reason (the SuperLink restarted under it) is submitted
again and resumes from the checkpoint.

A node that refuses a round's grant says only "refused at node X"; its reason arrives
sealed to the researcher (the run config carries the researcher's certified seal key
claim), and is stored on the node's ``train`` task row, where the researcher's client
opens sealed refusals. The coordinator records the public text only.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jobs.aggregate import contributor_reviews
from jobs.base import Driver, JobCancelled, JobFailed, Run, released
from jobs.train import TrainJob
from jobs.train.protocol import (
    CHECKPOINT_FILE,
    FAILURE_FILE,
    PUBLIC_CONTEXT_FILE,
    RUN_FILE,
    write_bytes,
    write_json,
)
from jobs.train.spec import TrainSpec
from scifed.errors import TrainingUnavailable, UserError
from scifed.he import context_is_private
from scifed.states import Phase, TaskState
from scifed.tasks import (
    CheckReply,
    Empty,
    FlowerReset,
    ReleaseReply,
    ReleaseRequest,
    TaskKind,
)

APP_DIR = TrainJob.flower_app.app_dir  # the FAB's pyproject.toml (no code)

log = logging.getLogger("scifed.coordinator.training")

POLL_SECONDS = 1.0
RESUBMITS = 2            # fresh Flower runs after a run died without a reason
STARTUP_SECONDS = 120.0  # per run, on top of the rounds' own timeouts


class TrainingRunFailed(UserError):
    """The Flower run ended without a trained model; the message says why. ``sealed``:
    the reasons of nodes that refused, by node, sealed to the researcher."""

    def __init__(self, message: str, sealed: dict[str, bytes] | None = None) -> None:
        super().__init__(message)
        self.sealed = sealed or {}


def sealed_reasons(state: dict) -> dict[str, bytes]:
    """The sealed refusal reasons a checkpoint or failure.json holds (base64), by node."""
    out = {}
    for node, text in (state.get("sealed_reasons") or {}).items():
        try:
            out[node] = base64.b64decode(text, validate=True)
        except (binascii.Error, TypeError, ValueError):
            log.warning("a malformed sealed refusal reason of node %s: ignored", node)
    return out


def prepare_job_dir(flower: Any, run: Run, *, min_nodes: int, public_context: bytes,
                    seal_claims: dict[str, dict]) -> Path:
    """Write what the ServerApp reads; an existing checkpoint is kept, so a resubmitted
    job resumes. ``seal_claims``: each node's certified seal key claim, which the round's
    messages carry as the set the nodes mask their updates for."""
    if context_is_private(public_context):
        raise UserError("refusing to hand a secret study key to the ServerApp")
    job_dir = flower.jobs_dir / run.job_id
    job_dir.mkdir(parents=True, exist_ok=True)
    write_bytes(job_dir / PUBLIC_CONTEXT_FILE, public_context)
    write_json(job_dir / RUN_FILE, {
        "job_id": run.job_id, "study_id": run.study.study_id,
        "key_version": run.study.key_version,
        "spec": run.spec.params.model_dump(mode="json"), "job_spec": run.spec.to_dict(),
        "datasets": run.targets, "filter": run.spec.filter or "", "min_nodes": min_nodes,
        "researcher": run.researcher, "researcher_claim": run.claim,
        "seal_claims": seal_claims})
    (job_dir / FAILURE_FILE).unlink(missing_ok=True)
    return job_dir


def read_checkpoint(job_dir: Path) -> dict | None:
    path = job_dir / CHECKPOINT_FILE
    return json.loads(path.read_text()) if path.exists() else None


def train_on_flower(flower: Any, job_dir: Path, *,
                    on_progress: Callable[[dict], None] = lambda _: None,
                    cancelled: Callable[[], bool] = lambda: False,
                    before_resubmit: Callable[[dict | None], None] = lambda _: None,
                    app_dir: Path = APP_DIR) -> dict:
    """Run the job (resubmitting after an unexplained death) until its checkpoint is
    complete; returns that checkpoint. ``on_progress`` sees each new checkpoint; once
    ``cancelled()`` holds, the run is stopped and :class:`JobCancelled` raised;
    ``before_resubmit`` is called with the checkpoint before a run is submitted again."""
    spec = json.loads((job_dir / RUN_FILE).read_text())["spec"]
    budget = STARTUP_SECONDS + (spec["rounds"] + 1) * spec["round_timeout"]
    for attempt in range(RESUBMITS + 1):
        if attempt:
            before_resubmit(read_checkpoint(job_dir))
        run_id = flower.start_run({"job-dir": str(job_dir)}, app_dir)
        log.info("job dir %s: Flower run %d (attempt %d)", job_dir.name, run_id, attempt + 1)
        state = _follow(flower, run_id, job_dir, budget, on_progress, cancelled)
        checkpoint = read_checkpoint(job_dir)
        if state.sub_status == "completed" and checkpoint and checkpoint["complete"]:
            return checkpoint
        failure = job_dir / FAILURE_FILE
        if failure.exists():
            why = json.loads(failure.read_text())
            raise TrainingRunFailed(why["reason"], sealed_reasons(why))
        tail = flower.log_tail(run_id, lines=15)
        log.warning("Flower run %d ended %s:%s (%s) without a reason; log tail:\n%s",
                    run_id, state.status, state.sub_status, state.details, tail)
        if state.sub_status == "stopped":
            raise TrainingRunFailed("the training run was stopped")
    raise TrainingRunFailed(f"the Flower run failed {RESUBMITS + 1} times; last log lines: "
                            f"{tail[-600:]}")


def _follow(flower: Any, run_id: int, job_dir: Path, budget: float,
            on_progress: Callable[[dict], None], cancelled: Callable[[], bool]) -> Any:
    deadline = time.monotonic() + budget
    seen = None
    while True:
        try:
            state = flower.run_state(run_id)
        except TrainingUnavailable:  # restarting: its supervisor brings it back
            if time.monotonic() > deadline:
                raise
            time.sleep(POLL_SECONDS)
            continue
        checkpoint = read_checkpoint(job_dir)
        if checkpoint and checkpoint.get("updated_ms") != seen:
            seen = checkpoint.get("updated_ms")
            on_progress(checkpoint)
        if state.finished:
            return state
        if cancelled():
            flower.stop_run(run_id)
            raise JobCancelled(job_dir.name)
        if time.monotonic() > deadline:
            flower.stop_run(run_id)
            raise TrainingRunFailed(f"the training run did not finish within {budget:.0f}s")
        time.sleep(POLL_SECONDS)


def release_request(driver: Driver, run: Run, job_dir: Path, checkpoint: dict,
                    node: str) -> ReleaseRequest:
    """What the release node sums, decrypts and seals: every round's contributions (it
    makes each round's model and metric sums itself from them, and releases the model
    with the best pooled validation, which only it can read) and the final evaluation's,
    each with its contributors' attestations (node/round_updates.py)."""
    return ReleaseRequest(
        **driver.header(run, node).model_dump(), k=0, contributors=checkpoint["active"],
        rounds=ledgers(job_dir, checkpoint),
        extra={"rounds_done": checkpoint["round"], "dropped": checkpoint["dropped"],
               "contributors_by_round": checkpoint["contributors"],
               "epsilon": checkpoint["epsilon"]})


def ledgers(job_dir: Path, checkpoint: dict, through: int | None = None
            ) -> dict[str, bytes]:
    """The rounds' contributions the ServerApp kept (jobs.train.server_app
    ``_keep_ledger``), by round, up to round ``through`` (default: all, and the final
    evaluation's once made)."""
    files = checkpoint.get("ledger_files") or {}
    return {key: (job_dir / name).read_bytes() for key, name in files.items()
            if through is None or key != "final" and int(key) <= through}


def _publish_round_metrics(driver: Driver, run: Run, job_dir: Path, checkpoint: dict,
                           node: str, published: set[int]) -> None:
    """Have the release node seal each new round's pooled metrics to the researcher
    (`scifed job watch` opens them). A refusal costs the live view, never the job.

    Round r's sums validate the model after round r-1, so the final evaluation (the
    model after the last round) goes out as one more round, numbered last + 1, whose only
    entry is that validation, under the last round."""
    files = dict(checkpoint["metrics_files"])
    if checkpoint.get("final_metrics_file"):
        files[str(int(checkpoint["round"]) + 1)] = checkpoint["final_metrics_file"]
    for key in files:
        r = int(key)
        if r in published:
            continue
        published.add(r)
        last = int(checkpoint["round"])
        request = ReleaseRequest(
            **driver.header(run, node).model_dump(), k=0, contributors=checkpoint["active"],
            stage="progress", round=r,
            # the rounds up to r (the final evaluation's too for r = last + 1), whose
            # contributors' review flags the release node reads itself
            rounds=ledgers(job_dir, checkpoint, None if r > last else r))
        try:
            reply = driver.send(node, TaskKind.RELEASE, request, ReleaseReply)
            driver.progress(run, r, reply.sealed)
        except Exception as exc:  # noqa: BLE001 - logged; the job goes on
            log.warning("job %s: no live metrics for round %d: %s", run.job_id, r, exc)


def _reset_supernodes(driver: Driver, run: Run, nodes: list[str]) -> None:
    """Restart the SuperNodes that may still hold work of the job's ended run (all of
    them after a stop or failure; the dropped ones after success), so the next run's
    messages are answered under the right run id. Best effort: a node that is offline
    restarts its SuperNode when it next sees a new coordinator."""
    for node in nodes:
        try:
            driver.send(node, TaskKind.FLOWER_RESET, FlowerReset(job_id=run.job_id), Empty)
        except Exception as exc:  # noqa: BLE001 - logged; the job's outcome stands
            log.warning("job %s: could not reset the SuperNode of %s: %s", run.job_id, node,
                        exc)


def _fresh_supernodes(driver: Driver, run: Run, nodes: list[str]) -> None:
    """Before a died run is submitted again: restart the SuperNodes of the job's nodes
    that are connected (each may still hold the dead run's message, and would answer the
    new run under the old run's id, which the SuperLink refuses — the new run would never
    hear from it), then wait until they are connected to the SuperLink afresh, so the new
    run's first messages find them. A node that is offline is left to the round timeout."""
    connected = [n for n in nodes if n in set(driver.connected())]
    since = time.time()
    _reset_supernodes(driver, run, connected)
    online = driver.flower.wait_online(connected, timeout=driver.task_timeout,
                                       activated_after=since)
    if set(connected) - online:
        log.warning("job %s: SuperNodes of %s not back before the run is resubmitted",
                    run.job_id, ", ".join(sorted(set(connected) - online)))


def _record_drops(driver: Driver, run: Run, dropped: dict[str, str],
                  sealed: dict[str, bytes]) -> None:
    """Each node that left the run: a refusal keeps only its sealed reason (the row says
    "refused at node X"); any other failure (silence, diverged training) its text."""
    for node, why in dropped.items():
        if node in sealed:
            driver.refusal(run, node, "train", sealed[node])
        else:
            driver.task_state(run, node, "train", TaskState.FAILED, why)


def _refuse_nodes_without_supernode(flower, targets: list[str]) -> None:
    """Fail at once, naming them, if a node the job names runs no SuperNode: every target
    has just answered the check, so it is connected and would have registered its
    SuperNode key (`Register`) if its node.yaml set `flower_superlink`. Waiting for it
    would only end in a timeout that reads like a network problem."""
    registered = set(flower.node_ids())
    if unconfigured := sorted(set(targets) - registered):
        raise JobFailed(
            f"node(s) {', '.join(unconfigured)} run no Flower SuperNode, so cannot train: "
            "their officer sets flower_superlink (the coordinator's host and flower_port) "
            "in node.yaml, e.g. with `scifed node init --flower-superlink HOST:PORT`, and "
            "restarts the node")


def run_training(driver: Driver, run: Run) -> bytes:
    """``TrainJob.coordinate``: every node the job names first checks it (`job.check`:
    policy, approvals, columns, labels, budget) and no Flower run starts unless all
    accept; then the Flower run, its live metrics, and the release. Returns the result
    sealed to the researcher; failures raise with the reason the researcher sees."""
    flower = driver.flower
    train: TrainSpec = run.spec.params
    targets = run.targets
    min_nodes = train.min_nodes or max(run.study.min_nodes, 1)
    if len(targets) < min_nodes:
        raise JobFailed(f"the job names {len(targets)} node(s); training needs at least "
                        f"{min_nodes}")
    driver.set_phase(run, Phase("check"))
    headers = {n: driver.header(run, n) for n in targets}
    _, refused = driver.fanout(run, "check", TaskKind.CHECK, headers, CheckReply)
    if refused:
        raise JobFailed("; ".join(refused[n] for n in sorted(refused)))
    job_dir = prepare_job_dir(flower, run, min_nodes=min_nodes,
                              public_context=driver.public_context(run),
                              seal_claims=driver.seal_claims(list(targets)))
    for node in targets:
        driver.task_state(run, node, "train", TaskState.PENDING)
    driver.set_phase(run, Phase("waiting for nodes"))
    _refuse_nodes_without_supernode(flower, list(targets))
    online = flower.wait_online(list(targets), timeout=driver.task_timeout)
    if len(online) < min_nodes:
        missing = ", ".join(sorted(set(targets) - online))
        raise JobFailed(f"only {len(online)} of the job's nodes have their Flower SuperNode "
                        f"connected (not: {missing}) after {driver.task_timeout:.0f} s; "
                        f"training needs {min_nodes}. Is the SuperLink address in that "
                        "node's node.yaml (flower_superlink) reachable from it? Its log "
                        "says why its SuperNode did not connect")
    published: set[int] = set()

    def progress(checkpoint: dict) -> None:
        if checkpoint["active"]:  # none left: the run is failing, with its reason
            _publish_round_metrics(driver, run, job_dir, checkpoint,
                                   run.release_node(checkpoint["active"]), published)
        r = checkpoint["round"]
        driver.set_phase(run, Phase("final evaluation") if r == train.rounds
                         else Phase("round", r + 1, train.rounds))
        for node in checkpoint["active"]:
            driver.task_state(run, node, "train", TaskState.RUNNING,
                              f"round {r}/{train.rounds} done")
        _record_drops(driver, run, checkpoint["dropped"], sealed_reasons(checkpoint))

    driver.set_phase(run, Phase("round", 1, train.rounds))
    try:
        checkpoint = train_on_flower(
            flower, job_dir, on_progress=progress, cancelled=lambda: driver.cancelled(run),
            before_resubmit=lambda ck: _fresh_supernodes(
                driver, run, ck["active"] if ck else list(targets)))
    except TrainingRunFailed as exc:
        for node, sealed in exc.sealed.items():
            driver.refusal(run, node, "train", sealed)
        _reset_supernodes(driver, run, list(targets))
        raise
    except BaseException:
        _reset_supernodes(driver, run, list(targets))
        raise
    _reset_supernodes(driver, run, sorted(checkpoint["dropped"]))
    if checkpoint["active"]:  # the final evaluation, had the last poll not seen it
        _publish_round_metrics(driver, run, job_dir, checkpoint,
                               run.release_node(checkpoint["active"]), published)
    contributors = sorted(checkpoint["active"])
    for node in contributors:
        driver.task_state(run, node, "train", TaskState.DONE, f"{train.rounds} rounds")
    release_node = run.release_node(contributors)
    driver.set_phase(run, Phase("release"))
    driver.set_contributors(run, contributors)
    request = release_request(driver, run, job_dir, checkpoint, release_node).model_copy(
        update={"reviewer_claims": driver.seal_claims(list(targets))})
    answer = _release(driver, run, release_node, request)
    if answer.reviews:  # contributors' officers review the model first, as for aggregates
        request = request.model_copy(update={"verdicts": contributor_reviews(
            driver, run, headers, release_node, answer)})
        answer = _release(driver, run, release_node, request)
        if answer.reviews:
            raise JobFailed(f"release node {release_node} still waits for the output "
                            "review of " + ", ".join(sorted(answer.reviews)))
    return released(driver, run, release_node, answer)


def _release(driver: Driver, run: Run, node: str, request: ReleaseRequest) -> ReleaseReply:
    out, failed = driver.fanout(run, "release", TaskKind.RELEASE, {node: request},
                                ReleaseReply)
    if node not in out:
        raise JobFailed(failed[node])
    return out[node]
