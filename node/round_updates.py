"""A node's update of a training round, masked under the encryption for the round's set
of contributors, and its unmask once that set is final: in a set of one or two its
self-mask seed, in three or more its answer to one view of the attempt, from the t-of-n
shares of the others' seeds its update's peers boxed for it (the rules are
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
  the self-mask seed or a view answer went out — whichever comes first; the other is
  then refused;
* ``view.{stage}#r#a``: a set of three or more: its sealed answer to the one view of the
  attempt it answered (any other view of it is refused, so no node's self-mask shares
  and pairwise seeds both leave this node).

So the coordinator gets at most one attempt of a round unmasked, for one view, and a
node it declares dropped while holding its ciphertext stays masked by its self-mask: in a
set of two the node reveals it only for the set it masked for; in three or more no honest
node gives a share of it once it gave its pairwise seed with that node instead, and the
coordinator with one member holds fewer than t shares.

What the attestation binds (``Gate.attest``): job, stage, round, attempt, the set
(``masked_with``), the ciphertexts, the node's ``output_review`` flag, and what the update
was trained from (``trained_from``, kept with the plain update: the digest of the
decrypted model and pooled metrics the ClientApp started from). At release
(:func:`verify_rounds`, called by node/release.py) the release node makes every round's
sum again from these and checks the chain, so a contributor's review requirement travels
with the model whichever node releases it.

Why the release node checks the chain once, rather than every node checking the round
before at each round (nodes verifying, summing and unmasking round r's ciphertexts
themselves): it is as strong for what is released — the ClientApp attests the digest of
exactly what it decrypted, so a model that is not the attested sum of the round before,
or is another attempt's or another run's, breaks the chain at the first round it was
used — and it costs the rounds nothing: each round message still carries one summed
model, not every contributor's ciphertexts (n contributors' × n nodes per round), and
each attestation grows by one digest. The price is paid at release by the release node
(every round's ciphertexts; docs/benchmarks.md), and the check is of the finished run,
not as it goes: a deviating coordinator can still make nodes train on a foreign model
(which the nodes' own data then meets), but no such model, nor its metrics, is released.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
from dataclasses import dataclass

import numpy as np

from jobs.spec import datasets_by_node
from node.gate import Admission, Gate
from node.masking import (
    ABANDONED,
    REVEAL,
    REVEALED,
    SHARED_FROM,
    pair_context,
    pairwise,
    recovered_masks,
    round_self_seed,
    round_stage,
)
from scifed import he, masks
from scifed.errors import UserError
from scifed.he import open_for_members
from scifed.sealing import canonical_sha256, verify_attestation
from scifed.tasks import MAX_ATTEMPTS

STAGES = ("train", "evaluate")
_HEX64 = re.compile(r"[0-9a-f]{64}")
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


def pack(vectors: list[Vector], trained_from: str = "") -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **{v.name: np.asarray(v.values, dtype=np.float64) for v in vectors},
             meta=np.array(json.dumps({v.name: [v.bound, v.capacity] for v in vectors})),
             trained_from=np.array(trained_from))
    return buf.getvalue()


def unpack(data: bytes) -> list[Vector]:
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        return [Vector(name, z[name], float(b), int(c)) for name, (b, c) in sorted(meta.items())]


def kept_start(data: bytes) -> str:
    """What a kept plain update was trained from ("" for an update kept before it was
    recorded, or for round 1)."""
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        return str(z["trained_from"]) if "trained_from" in z.files else ""


@dataclass(frozen=True)
class Sealed:
    """A node's answer to an attempt of a round."""

    ciphertexts: dict[str, bytes]  # by vector name
    attestation: dict              # signed: names the set masked for
    shares: dict[str, bytes]       # a set of three or more: its self-mask seed's share
    # boxes, by the node each is for (node/masking.py share_boxes); else empty


@dataclass(frozen=True)
class Revealed:
    """A node's answer to the unmask of an attempt of a round."""

    seed: bytes = b""  # a set of one or two: its self-mask seed of the attempt
    view: bytes = b""  # three or more: its answer to the view, sealed for the members
    answer: dict | None = None  # ... the same in clear, for the ServerApp (which takes
    # the masks off the sum with the public context: module docstring)


class RoundUpdates:
    def __init__(self, gate: Gate) -> None:
        self.gate = gate

    def seal(self, adm: Admission, stage: str, round_no: int, attempt: int,
             masking: dict[str, dict], vectors: list[Vector], trained_from: str = ""
             ) -> Sealed | None:
        """The attempt's ciphertexts (by vector name), this node's attestation and, in a
        set of three or more, the boxed shares of its self-mask seed; None if no
        ``vectors`` are given and none are kept for the round (the app trains first).
        ``trained_from``: what the update was trained from (kept with it, first write
        wins, and signed in every attempt's attestation)."""
        gate, h = self.gate, adm.header
        said = f"node {gate.node} does not mask job {h.job_id}'s round {round_no}"
        if stage not in STAGES:
            raise UserError(f"{said}: no such stage {stage!r}")
        if trained_from and not _HEX64.fullmatch(trained_from):
            raise UserError(f"{said}: what the update was trained from is no sha256")
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
                    kept = gate.keep(con, adm, plain, _PLAIN,
                                     pack(vectors, trained_from), "")
            root = round_self_seed(gate.job_secret(h.job_id), h, stage, round_no, attempt)
            key_dir = gate.studies.cfg.tls.key.parent
            blobs = {}
            context = pair_context(h, attempt, (stage, round_no))
            for v in unpack(kept):
                mask = masks.named_mask(root, v.name, v.slots)
                pair = pairwise(gate.node, key_dir, publics, context, v.slots, v.name)
                if pair is not None:
                    mask = masks.add(mask, pair)
                blobs[v.name] = (adm.key.encrypt_quantised(v.values, bound=v.bound,
                                                           capacity=v.capacity, mask=mask)
                                 if v.bound else adm.key.encrypt(v.values, mask=mask))
            attestation = gate.attest(adm, b"".join(blobs[n] for n in sorted(blobs)),
                                      gate.audit.head(), None, stage=stage, round_no=round_no,
                                      masked_with=masked_with, attempt=attempt,
                                      trained_from=kept_start(kept))
            shares = gate.share_boxes(adm, publics, attempt, round_of=(stage, round_no))
            b64 = base64.b64encode
            output = json.dumps({"ciphertexts": {n: b64(b).decode() for n, b in blobs.items()},
                                 "attestation": attestation,
                                 "shares": {n: b64(b).decode() for n, b in shares.items()}
                                 }).encode()
            with gate.store.tx() as con:  # a concurrent copy of the call may answer first
                return _answer(gate.keep(con, adm, step, digest, output, what))

    def reveal(self, adm: Admission, stage: str, round_no: int, attempt: int,
               contributors: list[str], dropped: list[str] | None = None,
               boxes: dict[str, bytes] | None = None,
               masking: dict[str, dict] | None = None) -> Revealed:
        """This node's unmask of the attempt, once the ServerApp says its set is final:
        in a set of one or two its self-mask seed, only for the very set it masked for;
        in a set of three or more its answer to the view ``contributors`` / ``dropped``
        (:meth:`node.gate.Gate.reveal_view`: its shares of the others' self-mask seeds,
        opened from ``boxes``, and its pairwise seeds with the dropped; one view per
        attempt; ``masking``: the set's seal key claims). Never for an attempt it
        abandoned."""
        gate, h = self.gate, adm.header
        step = round_stage(stage, round_no, attempt)
        what = f"it abandoned attempt {attempt} of round {round_no} for a later one"
        with gate.replays_audited(h, adm.row.dataset_id, step):
            with gate.store.tx() as con:
                answer = gate.answered(con, adm, step, None, "")
                if answer is None:
                    raise UserError(f"node {gate.node} made no attempt {attempt} of round "
                                    f"{round_no} of job {h.job_id}, so it reveals nothing "
                                    "of it")
            masked_with = _answer(answer).attestation["statement"]["masked_with"]
            if len(masked_with) >= SHARED_FROM:
                sealed = gate.reveal_view(adm, attempt, masked_with, contributors,
                                          dropped or [], boxes or {}, masking or {},
                                          round_of=(stage, round_no))
                return Revealed(view=sealed,
                                answer=open_for_members(adm.key, REVEAL, h.job_id, sealed))
            with gate.store.tx() as con:
                if sorted(contributors) != masked_with or dropped:
                    raise UserError(
                        f"node {gate.node} reveals its self-mask of attempt {attempt} of "
                        f"round {round_no} of job {h.job_id} only for the set it masked "
                        f"for ({', '.join(masked_with)}), not for "
                        f"{', '.join(sorted(contributors)) or 'no node'}"
                        + (f" with {', '.join(sorted(dropped))} dropped (a set of "
                           f"{len(masked_with)} shares no seeds)" if dropped else ""))
                gate.keep(con, adm, round_stage(f"unmask.{stage}", round_no, attempt),
                          REVEALED, b"revealed", what)
        return Revealed(seed=round_self_seed(gate.job_secret(h.job_id), h, stage, round_no,
                                             attempt))


def _answer(output: bytes) -> Sealed:
    data = json.loads(output)
    return Sealed({n: base64.b64decode(b) for n, b in data["ciphertexts"].items()},
                  data["attestation"],
                  {n: base64.b64decode(b) for n, b in data.get("shares", {}).items()})


@dataclass(frozen=True)
class TrainedRounds:
    """A training run's rounds as the release node made them again from the attested
    contributions (:func:`verify_rounds`)."""

    totals: dict[str, np.ndarray]   # "model.r", "metrics.r", "final_metrics": unmasked sums
    contributors: dict[str, list[str]]  # by round ("1".., "final"): who summed into it
    attestations: dict[str, dict]   # each node's latest attestation (the provenance's)
    flagged: list[str]              # contributors whose own cells ask for output review


def verify_rounds(rounds: dict[str, bytes], *, key, ca_pem: bytes, revoked, expect: dict,
                  through: int | None = None) -> TrainedRounds:
    """Every round of a training run from what its contributors attested, checked as a
    chain; raises a UserError naming the first thing wrong.

    ``rounds``: by round "1".."R" (and "final", the evaluation of the last model), the
    ServerApp's record of the round's final attempt (jobs.train.server_app
    ``_keep_ledger``). Each round must be there, in order, none else (``through``: a
    progress release's round, whose rounds are 1..through, or 1..through-1 and "final").
    For each: every contributor's attestation verifies (CA, this job and spec, stage,
    round, one attempt for all, ``masked_with`` the very set of signers and of the nodes
    the record says dropped) over the exact ciphertexts given; in a set of one or two
    each gave its self-mask seed, in three or more each answering contributor's sealed
    answer is to this very view of this round and attempt (U the signers, D the dropped)
    and its shares lie on one polynomial per seed (node/masking.py recovered_masks);
    this node sums the ciphertexts itself and takes the masks off (the pairwise ones
    among the signers cancel; those towards D come off by the survivors' seeds);
    and every contributor of round r+1 (of "final") attests it was trained from
    (evaluated) exactly the model and pooled metrics this node made of round r — round
    1's from the spec's initial model. So the sums are of the attested updates, of the
    attempt each contributor revealed (another attempt's sum does not unmask to the
    model the next round trained from), and no contributor's data reached a released
    model or metric without its signed ``output_review`` flag being read here."""
    from jobs.train.protocol import MODEL, start_digest

    said = "the training rounds given"
    keys = sorted((k for k in rounds if k != "final"), key=lambda k: int(k)
                  if k.isdigit() else -1)
    numbers = [int(k) for k in keys if k.isdigit() and str(int(k)) == k]
    if len(numbers) != len(keys) or numbers != list(range(1, len(keys) + 1)) or not keys:
        raise UserError(f"{said} are not rounds 1..R (got {', '.join(sorted(rounds)) or 'none'})")
    last = numbers[-1]
    if through is not None and through not in (last, last + 1 if "final" in rounds else last):
        raise UserError(f"{said} end at round {last}, not at the progress round {through}")
    if through is not None and through == last and "final" in rounds:
        raise UserError(f"{said} hold the final evaluation, not progress of round {through}")
    order = [*keys, *(["final"] if "final" in rounds else [])]
    public = key.public_bytes()
    totals: dict[str, np.ndarray] = {}
    contributors: dict[str, list[str]] = {}
    latest: dict[str, dict] = {}
    flagged: set[str] = set()
    start = ""  # round 1 trains from the spec's initial model
    for k in order:
        final = k == "final"
        stage, round_no = ("evaluate", last) if final else ("train", int(k))
        what = "the final evaluation" if final else f"round {round_no}"
        try:
            ledger = json.loads(rounds[k])
            attempt = int(ledger["attempt"])
            given = ledger["contributions"]
            view = ledger.get("view")
            seeds = {n: base64.b64decode(v, validate=True)
                     for n, v in (ledger.get("seeds") or {}).items()}
            dropped = sorted(view["dropped"]) if view is not None else []
            answers = ({n: base64.b64decode(v, validate=True)
                        for n, v in view["answers"].items()} if view is not None else {})
            if ledger["stage"] != stage or int(ledger["round"]) != round_no or \
                    not isinstance(given, dict) or not given:
                raise ValueError("not this round's record")
            blobs = {n: {v: base64.b64decode(b, validate=True)
                         for v, b in c["ciphertexts"].items()} for n, c in given.items()}
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
            raise UserError(f"{said}: the record of {what} is malformed ({exc})") from None
        signers = sorted(given)
        masked_with = sorted([*signers, *dropped])
        if len(set(masked_with)) != len(masked_with):
            raise UserError(f"{said}, {what}: the record names a node both as contributor "
                            "and as dropped, or as dropped twice")
        names = ["metrics"] if final else ["metrics", MODEL]
        for node in signers:
            try:
                st = verify_attestation(given[node]["attestation"], ca_pem, node=node,
                                        expect={**expect, "stage": stage, "round": round_no,
                                                "query_sha256": "", "attempt": attempt,
                                                "masked_with": masked_with},
                                        revoked=revoked).statement
            except UserError as exc:
                raise UserError(f"{said}, {what}: {exc}") from None
            if sorted(blobs[node]) != names:
                raise UserError(f"{said}, {what}: {node}'s update holds "
                                f"{', '.join(sorted(blobs[node]))}, not {', '.join(names)}")
            digest = hashlib.sha256(b"".join(blobs[node][n] for n in names)).hexdigest()
            if digest != st["ciphertext_sha256"]:
                raise UserError(f"{said}, {what}: the ciphertexts given as {node}'s are not "
                                "the ones its attestation names")
            if st["trained_from"] != start:
                raise UserError(
                    f"{said}, {what}: {node} attests it was "
                    f"{'evaluating' if final else 'trained from'} another model than the "
                    + ("spec's initial one" if not start else
                       f"sum of round {round_no - (0 if final else 1)}'s attested updates"))
            if view is None and (sorted(seeds) != signers
                                 or any(len(s) != 32 for s in seeds.values())):
                raise UserError(f"{said}, {what}: a self-mask seed per contributor is "
                                "missing")
            latest[node] = given[node]["attestation"]
            if st["output_review"]:
                flagged.add(node)
        if (view is not None) != (len(masked_with) >= SHARED_FROM):
            raise UserError(f"{said}, {what}: a set of {len(masked_with)} is unmasked by "
                            + ("the answers to a view (three or more)"
                               if len(masked_with) >= SHARED_FROM else
                               "its contributors' own seeds (one or two)"))
        sums = {}
        for name in names:
            try:
                total = he.sum_ciphertexts(public, [blobs[n][name] for n in signers])
                slots = he.parse(total).slots
                if view is not None:  # t-of-n shares (node/masking.py)
                    mask = recovered_masks(key, expect["job_id"], answers, signers, dropped,
                                           attempt, slots, name=name,
                                           round_of=(stage, round_no))
                else:
                    mask = np.zeros(slots, dtype=np.uint64)
                    for seed in seeds.values():
                        mask = masks.add(mask, masks.named_mask(seed, name, slots))
                sums[name] = key.decrypt(he.subtract_plain(public, total, mask))
            except (UserError, ValueError) as exc:
                raise UserError(f"{said}, {what}: its sum does not decrypt ({exc})") from None
        contributors[k] = signers
        if final:
            totals["final_metrics"] = sums["metrics"]
        else:
            totals[f"model.{k}"], totals[f"metrics.{k}"] = sums[MODEL], sums["metrics"]
            start = start_digest(sums[MODEL], sums["metrics"])
    return TrainedRounds(totals, contributors, latest, sorted(flagged))
