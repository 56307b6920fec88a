"""``train``: federated training on Flower 1.41 — FedAvg over BFV-encrypted updates,
with Opacus DP-SGD at the nodes where policy requires it.

Files: ``spec`` (the ``train:`` section), ``models`` (the model zoo), ``protocol`` (what
ServerApp and ClientApp exchange, and the job directory they share), ``local`` (one
node's round: PyTorch, Opacus), ``client_app`` and ``server_app`` (the Flower apps; the
FAB in ``app/`` carries no code), ``coordinate`` (the coordinator's side: checks, the
Flower run, live metrics, release), ``rows`` (which rows a run may use), ``release``
(the release node's decode), ``view`` (the researcher's tables, plots, model file).
"""

from __future__ import annotations

from pathlib import Path

from jobs.base import Driver, FlowerApp, Grant, JobType, Limits, Pooled, Released, Run, Table
from jobs.train.spec import TrainSpec


class TrainJob(JobType):
    name = "train"
    Spec = TrainSpec
    family = "fl"
    resumable = True       # its round checkpoints survive a coordinator restart
    needs_training = True
    guarded = False        # a model is not a linear release of row sets
    flower_app = FlowerApp(Path(__file__).resolve().parent / "app",
                           "jobs.train.client_app:app")

    def min_nodes(self, params: TrainSpec) -> int:
        return params.min_nodes or 0

    def requested_epsilon(self, params: TrainSpec) -> float | None:
        return params.dp.epsilon if params.dp else None

    def coordinate(self, driver: Driver, run: Run) -> bytes:
        from jobs.train.coordinate import run_training

        return run_training(driver, run)

    def check(self, params: TrainSpec, table: Table, limits: Limits) -> int:
        from jobs.train.rows import rows

        return int(len(rows(params, table, limits)[1]))

    def requested_delta(self, params: TrainSpec) -> float:
        return params.dp.delta if params.dp else 0.0

    def grant(self, params: TrainSpec, table: Table, limits: Limits) -> Grant:
        from jobs.train.rows import rows

        features, labels = rows(params, table, limits)
        dp = params.dp.model_dump() if params.dp and limits.epsilon is not None else None
        return Grant(features, labels, dp)

    def release(self, params: TrainSpec, pooled: Pooled) -> Released:
        from jobs.train.release import release

        return release(params, pooled)

    def view(self, result: dict):
        from jobs.train.view import TrainResult

        return TrainResult.from_json(result)
