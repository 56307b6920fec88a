"""The release node's side of a ``train`` job: each round's pooled metrics while the run
goes on (``progress``, for `scifed job watch`), and at the end the model (torch
state_dict bytes) with its metrics per round and the ε each node spent."""

from __future__ import annotations

import io

from jobs.base import Pooled, Released
from jobs.train.protocol import average, metrics_history
from jobs.train.spec import TrainSpec
from scifed.wire import b64e as b64


def release(spec: TrainSpec, pooled: Pooled) -> Released:
    if pooled.stage == "progress":
        # round r's training loss and the validation of the model after round r-1: the
        # same numbers are in the final result; they are only released earlier
        r = pooled.round
        entries = [h for h in metrics_history(spec.task, {r: pooled.totals["metrics"]}, None, r)
                   if len(h) > 1]
        return Released({"round": r, "metrics": entries})
    import torch

    from jobs.train.models import build_model, vector_to_model

    theta = average(pooled.totals["model"])
    model = build_model(spec.model, len(spec.features), spec.n_outputs, scaling=spec.scaling(),
                        target_scaling=spec.target_scaling())
    vector_to_model(model, theta)
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    sums = {int(name.split(".", 1)[1]): total for name, total in pooled.totals.items()
            if name.startswith("metrics.")}
    extra = pooled.extra
    return Released({
        "model": {"kind": spec.model.kind, "hidden": spec.model.hidden,
                  "features": spec.features, "label": spec.label, "task": spec.task,
                  "classes": spec.classes, "standardize": spec.standardize,
                  "state_dict": b64(buf.getvalue())},
        "metrics": metrics_history(spec.task, sums, pooled.totals["final_metrics"],
                                   int(extra["rounds_done"])),
        "epsilon": extra["epsilon"],
        "dp": spec.dp.model_dump() if spec.dp else None,
        "meta": {"dropped": extra["dropped"],
                 "contributors_by_round": extra["contributors_by_round"]}})
