"""The coordinator's side of a `train` job: have every node check it (`train.check`),
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
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

from coordinator import studies
from coordinator.flower import RunState, SuperLink, SuperLinkUnavailable
from coordinator.jobs import JobCancelled, release_node_of
from scifed.errors import UserError
from scifed.fl import APP_DIR
from scifed.fl.protocol import (
    CHECKPOINT_FILE,
    FAILURE_FILE,
    PUBLIC_CONTEXT_FILE,
    RUN_FILE,
    write_bytes,
    write_json,
)
from scifed.he import context_is_private
from scifed.trainspec import TrainSpec
from scifed.wire import b64d, b64e

log = logging.getLogger("scifed.coordinator.training")

POLL_SECONDS = 1.0
RESUBMITS = 2            # fresh Flower runs after a run died without a reason
STARTUP_SECONDS = 120.0  # per run, on top of the rounds' own timeouts


class TrainingRunFailed(UserError):
    """The Flower run ended without a trained model; the message says why."""


def prepare_job_dir(flower: SuperLink, *, job_id: str, study_id: str, key_version: int,
                    spec: TrainSpec, datasets: dict[str, str], filter_expr: str | None,
                    min_nodes: int, public_context: bytes, researcher: str = "") -> Path:
    """Write what the ServerApp reads; an existing checkpoint is kept, so a resubmitted
    job resumes."""
    if context_is_private(public_context):
        raise UserError("refusing to hand a secret study key to the ServerApp")
    job_dir = flower.jobs_dir / job_id
    job_dir.mkdir(parents=True, exist_ok=True)
    write_bytes(job_dir / PUBLIC_CONTEXT_FILE, public_context)
    write_json(job_dir / RUN_FILE, {
        "job_id": job_id, "study_id": study_id, "key_version": key_version,
        "spec": spec.model_dump(mode="json"), "datasets": datasets,
        "filter": filter_expr or "", "min_nodes": min_nodes, "researcher": researcher})
    (job_dir / FAILURE_FILE).unlink(missing_ok=True)
    return job_dir


def read_checkpoint(job_dir: Path) -> dict | None:
    path = job_dir / CHECKPOINT_FILE
    return json.loads(path.read_text()) if path.exists() else None


def train_on_flower(flower: SuperLink, job_dir: Path, *,
                    on_progress: Callable[[dict], None] = lambda _: None,
                    cancelled: Callable[[], bool] = lambda: False,
                    app_dir: Path = APP_DIR) -> dict:
    """Run the job (resubmitting after an unexplained death) until its checkpoint is
    complete; returns that checkpoint. ``on_progress`` sees each new checkpoint; once
    ``cancelled()`` holds, the run is stopped and :class:`JobCancelled` raised."""
    spec = json.loads((job_dir / RUN_FILE).read_text())["spec"]
    budget = STARTUP_SECONDS + (spec["rounds"] + 1) * spec["round_timeout"]
    for attempt in range(RESUBMITS + 1):
        run_id = flower.start_run({"job-dir": str(job_dir)}, app_dir)
        log.info("job dir %s: Flower run %d (attempt %d)", job_dir.name, run_id, attempt + 1)
        state = _follow(flower, run_id, job_dir, budget, on_progress, cancelled)
        checkpoint = read_checkpoint(job_dir)
        if state.sub_status == "completed" and checkpoint and checkpoint["complete"]:
            return checkpoint
        failure = job_dir / FAILURE_FILE
        if failure.exists():
            raise TrainingRunFailed(json.loads(failure.read_text())["reason"])
        tail = flower.log_tail(run_id, lines=15)
        log.warning("Flower run %d ended %s:%s (%s) without a reason; log tail:\n%s",
                    run_id, state.status, state.sub_status, state.details, tail)
        if state.sub_status == "stopped":
            raise TrainingRunFailed("the training run was stopped")
    raise TrainingRunFailed(f"the Flower run failed {RESUBMITS + 1} times; last log lines: "
                            f"{tail[-600:]}")


def _follow(flower: SuperLink, run_id: int, job_dir: Path, budget: float,
            on_progress: Callable[[dict], None], cancelled: Callable[[], bool]) -> RunState:
    deadline = time.monotonic() + budget
    seen = None
    while True:
        try:
            state = flower.run_state(run_id)
        except SuperLinkUnavailable:  # restarting: its supervisor brings it back
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


def release_request(job_dir: Path, checkpoint: dict, *, dataset: str,
                    researcher_claim: dict) -> dict:
    """The `train.release` task: what the release node decrypts and seals."""
    job = json.loads((job_dir / RUN_FILE).read_text())
    blob = lambda name: b64e((job_dir / name).read_bytes())  # noqa: E731
    return {"job_id": job["job_id"], "study_id": job["study_id"],
            "key_version": job["key_version"], "dataset": dataset, "spec": job["spec"],
            "rounds_done": checkpoint["round"], "model": blob(checkpoint["model_file"]),
            "metrics": {r: blob(f) for r, f in checkpoint["metrics_files"].items()},
            "final_metrics": blob(checkpoint["final_metrics_file"]),
            "contributors": checkpoint["active"], "dropped": checkpoint["dropped"],
            "contributors_by_round": checkpoint["contributors"],
            "epsilon": checkpoint["epsilon"], "researcher_claim": researcher_claim}


def _publish_round_metrics(runner, job_dir: Path, checkpoint: dict, base: dict,
                           targets: dict[str, str], node: str, published: set[int]) -> None:
    """Have the release node seal each new round's pooled metrics to the researcher
    (`scifed job watch` opens them). A refusal costs the live view, never the job."""
    for key, name in checkpoint["metrics_files"].items():
        r = int(key)
        if r in published:
            continue
        published.add(r)
        payload = {**base, "dataset": targets[node], "round": r,
                   "metrics": b64e((job_dir / name).read_bytes())}
        try:
            res = runner._send(node, "train.progress", payload).result(runner.task_timeout)
            if not res.ok:
                raise UserError(res.error)
            runner._progress(base["job_id"], r, b64d(json.loads(res.payload)["sealed"]))
        except Exception as exc:  # noqa: BLE001 - logged; the job goes on
            log.warning("job %s: no live metrics for round %d: %s", base["job_id"], r, exc)


def _reset_supernodes(runner, job_id: str, nodes: list[str]) -> None:
    """Restart the SuperNodes that may still hold work of the job's ended run (all of
    them after a stop or failure; the dropped ones after success), so the next run's
    messages are answered under the right run id. Best effort: a node that is offline
    restarts its SuperNode when it next sees a new coordinator."""
    for node in nodes:
        try:
            runner.sessions.send(node, "flower.reset", json.dumps(
                {"job_id": job_id}).encode()).result(runner.task_timeout)
        except Exception as exc:  # noqa: BLE001 - logged; the job's outcome stands
            log.warning("job %s: could not reset the SuperNode of %s: %s", job_id, node, exc)


def run_training(runner, job_id: str, spec, study, claim: dict, researcher: str) -> None:
    """Run a `train` job for ``JobRunner._run`` (``spec.type == "train"``).

    ``runner`` is the JobRunner, with ``runner.flower`` the coordinator's SuperLink;
    ``spec`` the JobSpec (its ``train`` section a TrainSpec); ``study`` the StudyView.
    Every node the job names first checks it (`train.check`: policy, approvals, columns,
    labels, budget) and no Flower run starts unless all accept. Failures raise UserError
    with the reason the researcher sees.
    """
    from scifed.jobspec import datasets_by_node

    flower: SuperLink = runner.flower
    train: TrainSpec = spec.train
    targets = datasets_by_node(spec)
    min_nodes = train.min_nodes or max(study.min_nodes, 1)
    if len(targets) < min_nodes:
        raise UserError(f"the job names {len(targets)} node(s); training needs at least "
                        f"{min_nodes}")
    runner._set(job_id, phase="check")
    base = {"job_id": job_id, "study_id": study.study_id, "train": train.model_dump(
        mode="json"), "filter": spec.filter or "", "researcher": researcher,
        "n_nodes": len(targets)}
    _, refused = runner.fanout(job_id, "check", "train.check",
                               {n: {**base, "dataset": d} for n, d in targets.items()})
    if refused:
        raise UserError("; ".join(refused[n] for n in sorted(refused)))
    job_dir = prepare_job_dir(
        flower, job_id=job_id, study_id=study.study_id, key_version=study.key_version,
        spec=train, datasets=targets, filter_expr=spec.filter, min_nodes=min_nodes,
        public_context=studies.get_study_public_context(runner.db, study.study_id),
        researcher=researcher)
    for node in targets:
        runner._task(job_id, node, "train", "pending")
    runner._set(job_id, phase="waiting for nodes")
    online = flower.wait_online(list(targets), timeout=runner.task_timeout)
    if len(online) < min_nodes:
        missing = ", ".join(sorted(set(targets) - online))
        raise UserError(f"only {len(online)} of the job's nodes have their Flower SuperNode "
                        f"connected (not: {missing}); training needs {min_nodes}")

    live = {"job_id": job_id, "study_id": study.study_id, "key_version": study.key_version,
            "spec": train.model_dump(mode="json"), "researcher_claim": claim}
    published: set[int] = set()

    def progress(checkpoint: dict) -> None:
        if checkpoint["active"]:  # none left: the run is failing, with its reason
            _publish_round_metrics(runner, job_dir, checkpoint, live, targets,
                                   release_node_of(study, checkpoint["active"]), published)
        r = checkpoint["round"]
        runner._set(job_id, phase=("final evaluation" if r == train.rounds
                                   else f"round {r + 1}/{train.rounds}"))
        for node in checkpoint["active"]:
            runner._task(job_id, node, "train", "running", f"round {r}/{train.rounds} done")
        for node, why in checkpoint["dropped"].items():
            runner._task(job_id, node, "train", "failed", why)

    runner._set(job_id, phase=f"round 1/{train.rounds}")
    try:
        checkpoint = train_on_flower(flower, job_dir, on_progress=progress,
                                     cancelled=lambda: job_id in runner.cancelled)
    except BaseException:
        _reset_supernodes(runner, job_id, list(targets))
        raise
    _reset_supernodes(runner, job_id, sorted(checkpoint["dropped"]))
    contributors = sorted(checkpoint["active"])
    for node in contributors:
        runner._task(job_id, node, "train", "done", f"{train.rounds} rounds")
    release_node = release_node_of(study, contributors)
    runner._set(job_id, phase="release", contributors=contributors)
    request = release_request(job_dir, checkpoint, dataset=targets[release_node],
                              researcher_claim=claim)
    out, failed = runner.fanout(job_id, "release", "train.release", {release_node: request})
    if release_node not in out:
        raise UserError(failed[release_node])
    runner._set(job_id, status="done", phase="released",
                sealed_result=b64d(out[release_node]["sealed"]))
