"""The release node's part of a `train` job: decrypt the final global model and the
pooled metric sums, and seal them with each node's ε to the researcher.

The release node must itself be a member that attached its dataset, as for statistics;
the coordinator, which relays the ciphertexts, can read none of it.
"""

from __future__ import annotations

import base64
import io
import json
import time
from collections.abc import Callable

from node.datasets import DatasetRegistry
from node.studies import NodeStudies
from scifed.errors import UserError
from scifed.fl.protocol import average, metrics_history
from scifed.grading import Access, aggregate_access
from scifed.sealing import SealKeyClaim, result_context, seal, verify_claim
from scifed.trainspec import TrainSpec


def handlers(studies: NodeStudies,
             registry: DatasetRegistry) -> dict[str, Callable[[bytes], bytes]]:
    """Task kinds for the node's handler table."""
    return {"train.release":
            lambda payload: json.dumps(release(studies, json.loads(payload))).encode()}


def release(studies: NodeStudies, req: dict) -> dict:
    """{"sealed": ...}: the model (torch state_dict bytes), metrics per round and ε per
    node, sealed to the researcher whose claim the federation CA vouches for."""
    import torch

    from scifed.models import build_model, vector_to_model

    node = studies.cfg.name
    row = studies.attached(req["study_id"], req["dataset"])
    grade, category = row.record["security_grade"], row.record["sharing_category"]
    if aggregate_access(grade, category) is not Access.AUTO:
        raise UserError(f"node {node}: releasing results computed on {grade} {category} "
                        "data needs the data officer's approval")
    spec = TrainSpec.model_validate(req["spec"])
    key = studies.key(req["study_id"], int(req["key_version"]))
    theta = average(key.decrypt(base64.b64decode(req["model"])))
    model = build_model(spec.model, len(spec.features), spec.n_outputs, scaling=spec.scaling(),
                        target_scaling=spec.target_scaling())
    vector_to_model(model, theta)
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    sums = {int(r): key.decrypt(base64.b64decode(b)) for r, b in req["metrics"].items()}
    final = key.decrypt(base64.b64decode(req["final_metrics"]))
    job_id = req["job_id"]
    result = {
        "type": "train",
        "model": {"kind": spec.model.kind, "hidden": spec.model.hidden,
                  "features": spec.features, "label": spec.label, "task": spec.task,
                  "classes": spec.classes, "standardize": spec.standardize,
                  "state_dict": base64.b64encode(buf.getvalue()).decode()},
        "metrics": metrics_history(spec.task, sums, final, int(req["rounds_done"])),
        "epsilon": req["epsilon"],
        "dp": spec.dp.model_dump() if spec.dp else None,
        "meta": {"job_id": job_id, "study_id": req["study_id"],
                 "contributors": req["contributors"], "dropped": req["dropped"],
                 "contributors_by_round": req["contributors_by_round"],
                 "released_by": node,
                 "released_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}}
    claim = SealKeyClaim.from_dict(req["researcher_claim"])
    public = verify_claim(claim, studies.cfg.tls.ca.read_bytes(), expect_role="researcher")
    sealed = seal(public, json.dumps(result).encode(), context=result_context(job_id))
    return {"sealed": base64.b64encode(sealed).decode()}
