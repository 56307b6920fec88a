"""The release node's side of a ``train`` job: each round's pooled metrics while the run
goes on (``progress``, for `scifed job watch`), and at the end the model (torch
state_dict bytes) with its metrics per round and the ε each node spent.

The released model is the round whose pooled validation loss is lowest (the model after
that round, validated on the nodes' held-out rows), not necessarily the last: later
rounds can overfit or, with DP noise, wander. ``model.round`` says which it is. Without
validation (``validation_split: 0``) it is the last round's. Choosing among the rounds
uses only numbers the result releases anyway (every round's pooled validation), and
under DP every round's model is covered by the job's budget, so the choice spends no
more; it does make the chosen round's validation an optimistic estimate of its error.
"""

from __future__ import annotations

import io
import math

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

    extra = pooled.extra
    sums = {int(name.split(".", 1)[1]): total for name, total in pooled.totals.items()
            if name.startswith("metrics.")}
    history = metrics_history(spec.task, sums, pooled.totals["final_metrics"],
                              int(extra["rounds_done"]))
    models = {int(name.split(".", 1)[1]): total for name, total in pooled.totals.items()
              if name.startswith("model.")}
    chosen, selected_by = best_round(history, models)
    theta = average(models[chosen])
    model = build_model(spec.model, len(spec.features), spec.n_outputs, scaling=spec.scaling(),
                        target_scaling=spec.target_scaling())
    vector_to_model(model, theta)
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return Released({
        "model": {"kind": spec.model.kind, "hidden": spec.model.hidden,
                  "features": spec.features, "label": spec.label, "task": spec.task,
                  "classes": spec.classes, "standardize": spec.standardize,
                  "round": chosen, "selected_by": selected_by,
                  "state_dict": b64(buf.getvalue())},
        "metrics": history,
        "epsilon": extra["epsilon"],
        "dp": spec.dp.model_dump() if spec.dp else None,
        "meta": {"dropped": extra["dropped"],
                 "contributors_by_round": extra["contributors_by_round"]}})


def best_round(history: list[dict], models: dict[int, object]) -> tuple[int, str]:
    """The round whose model to release, and by what: the lowest pooled ``val_loss``
    among the rounds whose model is held (ties: the later round), else the last round."""
    scored = [(h["val_loss"], -h["round"]) for h in history
              if h["round"] in models and math.isfinite(h.get("val_loss", math.nan))]
    if not scored:
        return max(models), "last round"
    return -min(scored)[1], "lowest val_loss"
