"""What the ServerApp, the ClientApps and the release node agree on: message record
names, the job directory's files, and how pooled sums decode into a model and metrics.

Per round each node sends two ciphertexts under the study key:

* ``model``: ``[n * theta..., n]`` — its parameters weighted by its training rows, and
  the rows themselves, so the sum decrypts to the example-weighted average (FedAvg) at
  the next round without n ever travelling in clear;
* ``metrics``: the sums in :data:`jobs.train.local.METRIC_FIELDS` — validation sums of the
  global model it *received* (round r's reply measures the model after round r-1) and
  training-loss sums of round r. A final ``evaluate`` message measures the last model.

The coordinator adds ciphertexts with the public context only; members decrypt.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from flwr.app import Array, ArrayRecord

STYPE = "scifed.he"
ARRAYS, CONFIG, STATUS = "arrays", "config", "status"
MODEL, METRICS = "model", "metrics"

RUN_FILE = "run.json"                 # written by the coordinator: the job
PUBLIC_CONTEXT_FILE = "public.ctx"    # the study's public BFV context
CHECKPOINT_FILE = "checkpoint.json"   # written by the ServerApp after every round
FAILURE_FILE = "failure.json"         # why the ServerApp gave up


def ciphertext(blob: bytes) -> Array:
    """A ciphertext blob as a Flower array (chunked in transit like any array)."""
    return Array(dtype="bytes", shape=(len(blob),), stype=STYPE, data=blob)


def blob_of(record: ArrayRecord, key: str) -> bytes:
    array = record[key]
    if array.stype != STYPE:
        raise ValueError(f"expected a {STYPE} ciphertext in '{key}', got {array.stype!r}")
    return bytes(array.data)


def average(summed: np.ndarray) -> np.ndarray:
    """Decrypted ``[sum n*theta, sum n]`` -> the example-weighted mean of theta."""
    total = summed[-1]
    if total <= 0:
        raise ValueError("the aggregate holds no training rows")
    return summed[:-1] / total


def round_metrics(task: str, validation: np.ndarray | None,
                  training: np.ndarray | None) -> dict[str, float]:
    """Pooled metrics of one round from decrypted sums (see METRIC_FIELDS)."""
    out: dict[str, float] = {}
    if training is not None and training[6] > 0:
        out["train_loss"] = float(training[7] / training[6])
    if validation is not None and validation[0] > 0:
        n = validation[0]
        out["val_rows"] = float(n)
        out["val_loss"] = float(validation[1] / n)
        if task == "classification":
            out["val_accuracy"] = float(validation[2] / n)
        else:
            total = validation[5] - validation[4] ** 2 / n
            out["val_r2"] = float(1 - validation[3] / total) if total > 0 else float("nan")
    return out


def metrics_history(task: str, sums: dict[int, np.ndarray], final: np.ndarray | None,
                    rounds_done: int) -> list[dict[str, float]]:
    """Per round r = 0..rounds_done: validation of the global model after round r, and
    the training loss of round r. ``sums[r]`` arrived with round r's replies."""
    history = []
    for r in range(rounds_done + 1):
        val = sums.get(r + 1)[:6] if r + 1 in sums else (final[:6] if r == rounds_done
                                                           and final is not None else None)
        history.append({"round": r, **round_metrics(task, val, sums.get(r))})
    return history


def write_json(path: Path, data: dict) -> None:
    """Atomically: a reader (the coordinator, a resumed run) never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
