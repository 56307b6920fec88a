"""What the ServerApp, the ClientApps and the release node agree on: message record
names, the job directory's files, and how pooled sums decode into a model and metrics.

Per round each node sends two ciphertexts under the study key:

* ``model``: its parameters weighted, and the weight itself, so the sum decrypts to the
  example-weighted average (FedAvg) at the next round without n ever travelling in clear
  (:func:`contribution`). Round 1 sends ``[n * theta..., n]`` (n: its training rows) in
  the exact encoding (30 B per value). Later rounds send ``[w * theta..., w]`` with
  w = n / N, N the pooled training rows of the previous round, in the quantised encoding
  (two 16-bit-or-finer levels per slot: 4.03 B per parameter). w <= 1 and the sum of the
  w is about 1, so every value fits one bound; the bound (:func:`update_bound`) comes
  from the round's start model, which every node holds, so all contributions share it.
  N comes from the pooled ``metrics`` of the previous round, which the ServerApp sends
  with the model;
* ``metrics``: the sums in :data:`jobs.train.local.METRIC_FIELDS` — validation sums of the
  global model it *received* (round r's reply measures the model after round r-1) and
  training-loss sums of round r. A final ``evaluate`` message measures the last model.

Both are masked under the encryption (node/masking.py, node/round_updates.py): each node
hands its plain update to its node, which masks it pairwise for the nodes of the round's
attempt (``masking`` in the message: their seal key claims) and with a self-mask of its
own, so one update — or a sum over part of the set — decrypts to uniform residues. Once
every node of the attempt has answered, the ServerApp asks each for its self-mask seed
(:data:`REVEAL`), takes the masks off the sum with the public context, and the pairwise
masks cancel in it. In a set of three or more no seed leaves a node: each update
carries its self-mask seed in t-of-n shares boxed for the others, and the unmask names a
view (U summed, D whose update never came); each node of U answers with its shares of
the others' seeds and its pairwise seeds with D (node/masking.py), so a node of U that
drops in the unmask is still summed, and one whose update never came is left out without
a new attempt while t + 1 answer. In a set of two, a node that drops before the reveal
makes the ServerApp try again among the survivors (``attempt`` + 1): each masks the update
it kept afresh for them, without training again; the earlier attempt is never unmasked.

The coordinator adds ciphertexts with the public context only; members decrypt.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Protocol

import numpy as np
from flwr.app import Array, ArrayRecord

from scifed.errors import UserError

STYPE = "scifed.he"
ARRAYS, CONFIG, STATUS = "arrays", "config", "status"
MODEL, METRICS = "model", "metrics"
# The message asking a round's contributors for their unmask once its set is final
# (node/round_updates.py): in a set of one or two each one's self-mask seed (``seed`` in
# the status record); in three or more each one's answer to the view (``view``: sealed for
# the members, ``answer``: the same in clear, JSON), from the share boxes the others made
# for it (``shares`` in their update's status record, JSON of base64 by holder).
REVEAL = "train.reveal"
SEED, VIEW, ANSWER, SHARES = "seed", "view", "answer", "shares"

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


TRAIN_ROWS = 6  # index of train_n in jobs.train.local.METRIC_FIELDS


class Codec(Protocol):
    """What a round needs from the study key (scifed.he.StudyKey)."""

    def encrypt(self, values: np.ndarray) -> bytes: ...

    def encrypt_quantised(self, values: np.ndarray, *, bound: float, capacity: int,
                          rng: np.random.Generator | None = None) -> bytes: ...

    def decrypt(self, blob: bytes) -> np.ndarray: ...


def start_digest(model: np.ndarray | None, metrics: np.ndarray | None) -> str:
    """What a round's update was trained from (or the final model evaluated), as the node
    attests it (``trained_from``): the sha256 of the decrypted summed model and pooled
    metrics the message carried, "" for none (round 1 starts from the spec's initial
    model). The release node makes the same digest of the sum it makes itself of the
    round before (node/round_updates.py ``verify_rounds``), so a model that is not the
    sum of the attested updates is never the one the next round trained from."""
    if model is None:
        return ""
    h = hashlib.sha256(b"scifed-train-start-v1\0")
    for part in (model, metrics if metrics is not None else np.zeros(0)):
        values = np.ascontiguousarray(np.asarray(part, dtype=np.float64))
        h.update(len(values).to_bytes(8, "big") + values.tobytes())
    return h.hexdigest()


def pooled_rows(metrics: np.ndarray) -> float:
    """The training rows of all contributors of a round, from its decrypted metric sums."""
    return float(metrics[TRAIN_ROWS])


def update_bound(theta_start: np.ndarray) -> float:
    """The clipping bound of a quantised round: the least power of two >= 2 max|theta| of
    the round's start model, and >= 1 so that a weight w <= 1 is never clipped. A node's
    weighted parameters w * theta stay within it unless training moves a parameter to
    more than twice the largest start value (those are clipped, and counted). A power of
    two, so that a node's bound never depends on the last bits of a float."""
    largest = 2.0 * float(np.max(np.abs(theta_start), initial=0.0))
    return 2.0 ** max(0, math.ceil(math.log2(largest))) if largest > 1.0 else 1.0


def update_values(theta: np.ndarray, n: int, *, pooled: float | None = None,
                  theta_start: np.ndarray | None = None) -> tuple[np.ndarray, float, int]:
    """A node's plain model update, the bound to quantise it within (0: exact) and how
    many of its values were clipped to that bound.

    Without the previous round's pooled rows (round 1): exact ``[n * theta, n]``. With
    them: ``[w * theta, w]``, w = n / pooled, clipped to ``update_bound(theta_start)``."""
    theta = np.asarray(theta, dtype=np.float64)
    if pooled is None:
        return np.append(n * theta, n), 0.0, 0
    if theta_start is None or theta_start.shape != theta.shape:
        raise UserError("a quantised round needs the start model it updates, of the same "
                        "shape")
    if not 0 < n <= pooled:
        raise UserError(f"this node's {n} training rows do not fit the previous round's "
                        f"pooled {pooled:g} rows: the round's pooled metrics are not those "
                        "of the model it starts from")
    w = n / pooled
    bound = update_bound(theta_start)
    values = np.append(w * theta, w)
    clipped = int(np.count_nonzero(np.abs(values) > bound))
    np.clip(values, -bound, bound, out=values)
    return values, bound, clipped


def contribution(key: Codec, theta: np.ndarray, n: int, *, pooled: float | None = None,
                 theta_start: np.ndarray | None = None, capacity: int = 1,
                 rng: np.random.Generator | None = None) -> tuple[bytes, int]:
    """:func:`update_values` encrypted without masks (what a node's masks go on: the
    round's encoding), for a sum of at most ``capacity`` nodes; and the clipped count."""
    values, bound, clipped = update_values(theta, n, pooled=pooled, theta_start=theta_start)
    if not bound:
        return key.encrypt(values), 0
    return key.encrypt_quantised(values, bound=bound, capacity=capacity, rng=rng), clipped


def average(summed: np.ndarray) -> np.ndarray:
    """Decrypted ``[sum w*theta, sum w]`` (either encoding) -> the example-weighted mean
    of theta."""
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
