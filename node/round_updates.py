"""A node's update of a training round, masked under the encryption for the round's set
of contributors, and the reveal of its self-mask once that set is final (the rules are
node/masking.py's; the ClientApp reaches both through the local API, node/local_api.py).

Why in the node and not in the ClientApp: the seal key, the job secret and the masks stay
in the node process, and the node — not the coordinator, nor the app — decides the set it
masks for: every claim verified against the federation CA as the node it names, this node
in it, no more nodes than the round has, a set its pooling rule would release
(``Gate.check_set``), never a set of one in a job of several nodes (every other member
could read such an update: it is refused), and one set per attempt.

What it keeps in node.db (``job_answers``, under the job id):

* ``plain.{stage}#r``: the plain update of round r, first write wins, so a later attempt
  after a dropout — or round r trained again by a resumed run — masks the very same
  update, and nothing new leaves;
* ``{stage}#r#a``: the answer of attempt a (ciphertexts and the signed attestation, which
  names the set): a retry gets the same bytes, attempt a asked for another set is refused;
* ``unmask.{stage}#r#a``: "abandoned" once a later attempt was taken, or "revealed" once
  the self-mask seed went out — whichever comes first; the other is then refused.

So the coordinator gets at most one attempt of a round unmasked, for one set, and a node
it declares dropped while holding its ciphertext stays masked by the self-mask that node
reveals only for the set it masked for.
"""

from __future__ import annotations

import base64
import io
import json
from dataclasses import dataclass

import numpy as np

from jobs.spec import datasets_by_node
from node.gate import Admission, Gate
from node.masking import (
    ABANDONED,
    REVEALED,
    mask_context,
    pairwise,
    round_self_seed,
    round_stage,
)
from scifed import he, masks
from scifed.errors import UserError
from scifed.sealing import canonical_sha256
from scifed.tasks import MAX_ATTEMPTS

STAGES = ("train", "evaluate")
_PLAIN = canonical_sha256({"round": "plain update"})


@dataclass(frozen=True)
class Vector:
    """One vector of an update: quantised within ±``bound`` for a sum of at most
    ``capacity`` nodes, or exact (``bound`` 0)."""

    name: str
    values: np.ndarray
    bound: float = 0.0
    capacity: int = he.MAX_SUMMANDS

    @property
    def slots(self) -> int:
        if self.bound:
            return he.slots_for(he.QUANTISED, self.values.size, he.lanes_for(self.capacity))
        return he.slots_for(he.EXACT, self.values.size)


def pack(vectors: list[Vector]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **{v.name: np.asarray(v.values, dtype=np.float64) for v in vectors},
             meta=np.array(json.dumps({v.name: [v.bound, v.capacity] for v in vectors})))
    return buf.getvalue()


def unpack(data: bytes) -> list[Vector]:
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        return [Vector(name, z[name], float(b), int(c)) for name, (b, c) in sorted(meta.items())]


class RoundUpdates:
    def __init__(self, gate: Gate) -> None:
        self.gate = gate

    def seal(self, adm: Admission, stage: str, round_no: int, attempt: int,
             masking: dict[str, dict], vectors: list[Vector]
             ) -> tuple[dict[str, bytes], dict] | None:
        """The attempt's ciphertexts (by vector name) and this node's attestation; None if
        no ``vectors`` are given and none are kept for the round (the app trains first)."""
        gate, h = self.gate, adm.header
        said = f"node {gate.node} does not mask job {h.job_id}'s round {round_no}"
        if stage not in STAGES:
            raise UserError(f"{said}: no such stage {stage!r}")
        if not 1 <= attempt <= MAX_ATTEMPTS:
            raise UserError(f"{said}: attempt {attempt} is not one of 1..{MAX_ATTEMPTS}")
        publics = gate.masking_set(h, masking)
        if len(publics) == 1 and len(datasets_by_node(adm.spec)) > 1:
            raise UserError(f"{said} for itself alone: the job has other nodes, each of "
                            "which could read an update summed with no other")
        if not adm.decision.dp:
            gate.check_set(adm, publics)
        masked_with = sorted(publics)
        step = round_stage(stage, round_no, attempt)
        digest = canonical_sha256({"masked_with": masked_with})
        what = f"it masked attempt {attempt} of round {round_no} for other nodes"
        plain = round_stage(f"plain.{stage}", round_no)
        with gate.replays_audited(h, adm.row.dataset_id, step):
            with gate.store.tx() as con:
                prior = gate.answered(con, adm, step, digest, what)
                if prior is not None:
                    return _answer(prior)
                kept = gate.answered(con, adm, plain, None, "")
                if kept is None and not vectors:
                    return None
                for before in range(1, attempt):  # taking this attempt leaves the earlier
                    gate.keep(con, adm, round_stage(f"unmask.{stage}", round_no, before),
                              ABANDONED, b"abandoned",
                              f"it revealed its self-mask of attempt {before} of round "
                              f"{round_no} already, so it takes no later attempt")
                if kept is None:
                    kept = gate.keep(con, adm, plain, _PLAIN, pack(vectors), "")
            root = round_self_seed(gate.job_secret(h.job_id), h, stage, round_no, attempt)
            key_dir = gate.studies.cfg.tls.key.parent
            blobs = {}
            for v in unpack(kept):
                mask = masks.named_mask(root, v.name, v.slots)
                pair = pairwise(gate.node, key_dir, publics,
                                mask_context(h, f"{stage}.{v.name}#{attempt}", round_no),
                                v.slots)
                if pair is not None:
                    mask = masks.add(mask, pair)
                blobs[v.name] = (adm.key.encrypt_quantised(v.values, bound=v.bound,
                                                           capacity=v.capacity, mask=mask)
                                 if v.bound else adm.key.encrypt(v.values, mask=mask))
            attestation = gate.attest(adm, b"".join(blobs[n] for n in sorted(blobs)),
                                      gate.audit.head(), None, stage=stage, round_no=round_no,
                                      masked_with=masked_with, attempt=attempt)
            output = json.dumps({"ciphertexts": {n: base64.b64encode(b).decode()
                                                 for n, b in blobs.items()},
                                 "attestation": attestation}).encode()
            with gate.store.tx() as con:  # a concurrent copy of the call may answer first
                return _answer(gate.keep(con, adm, step, digest, output, what))

    def reveal(self, adm: Admission, stage: str, round_no: int, attempt: int,
               contributors: list[str]) -> bytes:
        """This node's self-mask seed of the attempt, for the attempt's final set: only
        the very set it masked for, and never for an attempt it abandoned."""
        gate, h = self.gate, adm.header
        step = round_stage(stage, round_no, attempt)
        with gate.replays_audited(h, adm.row.dataset_id, step):
            with gate.store.tx() as con:
                answer = gate.answered(con, adm, step, None, "")
                if answer is None:
                    raise UserError(f"node {gate.node} made no attempt {attempt} of round "
                                    f"{round_no} of job {h.job_id}, so it reveals nothing "
                                    "of it")
                masked_with = _answer(answer)[1]["statement"]["masked_with"]
                if sorted(contributors) != masked_with:
                    raise UserError(
                        f"node {gate.node} reveals its self-mask of attempt {attempt} of "
                        f"round {round_no} of job {h.job_id} only for the set it masked "
                        f"for ({', '.join(masked_with)}), not for "
                        f"{', '.join(sorted(contributors)) or 'no node'}")
                gate.keep(con, adm, round_stage(f"unmask.{stage}", round_no, attempt),
                          REVEALED, b"revealed",
                          f"it abandoned attempt {attempt} of round {round_no} for a "
                          "later one")
        return round_self_seed(gate.job_secret(h.job_id), h, stage, round_no, attempt)


def _answer(output: bytes) -> tuple[dict[str, bytes], dict]:
    data = json.loads(output)
    return ({n: base64.b64decode(b) for n, b in data["ciphertexts"].items()},
            data["attestation"])
