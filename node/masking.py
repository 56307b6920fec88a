"""The masks a node adds under the encryption to what it contributes, and how a sum
survives a node that drops after the others masked for it.

Every member holds the study key, so a contribution encrypted under it alone could be
read by the release node (which decrypts) or by the coordinator with any one member.
Each contribution therefore carries, before encryption (:mod:`scifed.masks`):

* ±PRG(seed) mod t towards every other node of the set summed, from X25519 between the
  two nodes' certified seal keys: these cancel only in the sum over the whole set;
* a self-mask PRG(s_i), s_i derived from this node's job secret and the attempt, which the
  node reveals (sealed for the members: the release node opens it) only once the set of
  the attempt is final.

So a single contribution, or a sum over part of the set, decrypts to uniform residues.

The set comes from the coordinator (the nodes it asks to compute, each with its seal key
claim), but nothing in it is taken on trust: every claim must chain to the federation CA
as the node it names, the set must hold this node and no more nodes than the job has, and
the set and attempt go into this node's signed attestation, so the release node sums only
contributions masked for exactly the contributors it is given. A set of one in a one-node
job needs no mask: the sum is the contribution, and no other member takes part. A set of
one in a job of several nodes (the others refused or dropped) carries a *lone mask*
instead, PRG of a seed from this node's job secret and the stage, which it never reveals:
the sole contributor is its own release node and takes the mask off itself, so the
coordinator with another member's study key reads uniform residues.

Dropouts (recovery by a fresh attempt, not by revealing masks). If a node of attempt a
drops, the survivors make attempt a + 1 among themselves: the same vector (kept by the
node at its first answer: no new computation, DP noise or charge), fresh pairwise masks
for the new set and a fresh self-mask. Nothing of attempt a is ever revealed: a node that
takes attempt a + 1 records that it abandoned attempt a, and a node that revealed its
self-mask of attempt a refuses any later attempt (one record per node, first write wins).
So a coordinator that declares a live node dropped and keeps its ciphertext gains
nothing: the attempt that ciphertext belongs to is never unmasked, and every honest node
unmasks at most one attempt, hence one set.

Dropouts within an attempt (recovery by t-of-n shares, as in SecAgg). In a set of
n ≥ 3 nodes no node ever reveals its own self-mask seed. Each splits it (Shamir,
:mod:`scifed.shamir`) into shares for the n − 1 others, any t = ⌊n/2⌋ + 1 of which give
it back (:func:`threshold`), each share in a box only it and its holder can open
(ChaCha20-Poly1305 under a key from X25519 between their certified seal keys, bound to
the job, attempt, sender and holder): the boxes travel with its compute answer, and the
coordinator hands each holder its own at the unmask. The unmask names a *view* of the
attempt: the nodes whose ciphertexts are summed (U) and those masked for but not summed
(D, whose answer never came). Each node of U answers, sealed for the members:

* for every other node of U, its share of that node's self-mask seed;
* for every node d of D, its own pairwise seed with d (which it knows: no share needed),
  so the survivors' masks towards d come off the sum of U.

The release node rebuilds each self-mask seed from t shares (more are checked to lie on
one polynomial) and takes off Σ_U PRG(b_i) and the survivors' masks towards D. So a node
that drops in the unmask itself is still in the sum, exactly (its seed comes from the
others' shares), and a node whose answer never came is left out of it without a fresh
attempt. The minimum: t + 1 nodes answering the unmask (each survivor's seed needs t
holders besides itself), and every node of U when D is not empty (only it has its seeds
with D); fewer fail the job, as do sets of two (the two direct seeds of today). Five
nodes survive one dropout, ten three, a hundred 48; three survive none.

Why a coordinator that says a live node V dropped learns nothing. To read V's
ciphertext it needs V's self-mask seed (t shares) AND every other node's pairwise seed
with V. Each node answers one view per attempt (first write wins, any other refused),
so each honest node gives either its share of V's seed (V in U) or its pairwise seed
with V (V in D), never both; V gives nothing of its own. If even one honest node put V in
U, its pairwise seed with V stays secret; if every honest node put V in D, the
coordinator holds only the shares of the members it colludes with — fewer than t as long
as they are fewer than t (one member, in the trust model, for every n ≥ 3).

Further rounds of a release (exact quantiles) use pairwise masks over the final
contributors without self-masks: a dropout there fails the job anyway, so no attempt
ever follows and nothing needs revealing.

Training rounds (node/round_updates.py) follow the same rules per round and stage: each
attempt of a round masks the node's update pairwise for the attempt's set (one pair seed
per attempt, :func:`pair_context`, expanded per vector by :func:`scifed.masks.stream`)
with a self-mask of the round and attempt (:func:`round_self_seed`, :func:`own_seed`),
and a later attempt masks the kept update afresh for the survivors. In a set of three or
more the update carries the shares of that seed (:func:`share_boxes` with ``round_of``,
the round's stage and number, which every sharing context, box and view answer names),
and the reveal is a view as above (``Gate.reveal_view`` with ``round_of``: one view per
attempt of a round); in a set of one or two the node reveals its seed of one attempt per
round only. The answers go to the coordinator in clear as well as sealed for the members:
the ServerApp takes the masks off each round's sum with the public context
(:mod:`scifed.recovery`, the same rebuild the release node runs on the sealed answers of
the round's ledger), and every member decrypts each round's model, so answers sealed for
the members only would tell the coordinator-with-a-member no less.
"""

from __future__ import annotations

import base64
import functools
from pathlib import Path

import numpy as np

from scifed import he, masks, shamir
from scifed.errors import UserError
from scifed.he import StudyKey, open_for_members, seal_for_members
from scifed.masks import SHARED_FROM, threshold
from scifed.recovery import answers_view, rebuilt_mask
from scifed.sealing import SealKeyClaim, canonical_sha256, load_seal_key, verify_claim
from scifed.tasks import TaskHeader

__all__ = ["SHARED_FROM", "threshold"]  # the coordinator's driver reads them from scifed

UNMASK = "job-unmask"  # the study key's AEAD purpose for revealed self-mask seeds
REVEAL = "job-unmask-shares"  # ... and for a node's shares and pairwise seeds of a view
# What a node records of an attempt it left for a later one, or whose self-mask it revealed
# (one record per attempt, first write wins: the one excludes the other).
ABANDONED = canonical_sha256({"attempt": "abandoned"})
REVEALED = canonical_sha256({"attempt": "revealed"})


def mask_context(h: TaskHeader, stage: str, round_no: int = 0) -> bytes:
    """What makes one sum's masks unlike every other's: job, stage, round, key version."""
    return "\0".join([h.job_id, stage, str(round_no), str(h.key_version)]).encode()


def compute_stage(attempt: int) -> str:
    """The stage name of an attempt's answer (the first keeps the plain name)."""
    return "compute" if attempt == 1 else f"compute#{attempt}"


@functools.lru_cache(maxsize=8)
def _seal_key(directory: Path):
    return load_seal_key(directory)


def masking_set(node: str, h: TaskHeader, claims: dict[str, dict],
                ca_pem: bytes) -> dict[str, bytes]:
    """The verified seal public keys of the set (node name -> 32 bytes), this node's too."""
    said = f"node {node} does not mask job {h.job_id}'s contribution"
    if node not in claims:
        raise UserError(f"{said}: the set of nodes to mask for does not hold this node")
    if len(claims) > h.n_nodes:
        raise UserError(f"{said}: the set names {len(claims)} nodes, the job has {h.n_nodes}")
    publics = {}
    for name, claim in sorted(claims.items()):
        try:
            parsed = SealKeyClaim.from_dict(claim)
        except (UserError, TypeError, AttributeError) as exc:
            raise UserError(f"{said}: the seal key claim given for {name} is malformed "
                            f"({exc})") from None
        publics[name] = verify_claim(parsed, ca_pem, expect_role="node", expect_name=name)
    return publics


def pairwise(node: str, key_dir: Path, publics: dict[str, bytes], context: bytes,
             slots: int, name: str | None = None) -> np.ndarray | None:
    """This node's pairwise mask for ``slots`` slots (of the vector ``name`` of a
    training round's update), or None for a set of one."""
    if len(publics) < 2:
        return None
    return masks.pairwise_mask(_seal_key(key_dir), node, publics, context, slots, name)


def self_seed(job_secret: bytes, h: TaskHeader, attempt: int) -> bytes:
    return masks.self_seed(job_secret, mask_context(h, "self", attempt))


def round_stage(stage: str, round_no: int, attempt: int | None = None) -> str:
    """The answer's name of a training round's update (``attempt``: one attempt of it)."""
    return f"{stage}#{round_no}" + (f"#{attempt}" if attempt is not None else "")


def round_self_seed(job_secret: bytes, h: TaskHeader, stage: str, round_no: int,
                    attempt: int) -> bytes:
    """The seed of this node's self-masks of one attempt of a training round."""
    return masks.self_seed(job_secret, mask_context(h, f"self\0{stage}#{attempt}", round_no))


def lone_mask(job_secret: bytes, h: TaskHeader, stage: str, round_no: int,
              slots: int) -> np.ndarray:
    """A sole contributor's mask of ``stage``, from a seed it never reveals (unlike a
    self-mask): the release node, which is that contributor, makes it again to take it off."""
    seed = masks.self_seed(job_secret, mask_context(h, "lone\0" + stage, round_no))
    return masks.self_mask(seed, slots)


def lone(h: TaskHeader, publics: dict | list) -> bool:
    """Whether a set is a sole contributor of a job of several nodes (node/masking.py)."""
    return len(publics) == 1 and h.n_nodes > 1


def with_self_mask(mask: np.ndarray | None, seed: bytes, slots: int) -> np.ndarray:
    own = masks.self_mask(seed, slots)
    return own if mask is None else masks.add(mask, own)


def exact_slots(vec: np.ndarray) -> int:
    return he.slots_for(he.EXACT, int(np.asarray(vec).size))


def seal_seed(key: StudyKey, job_id: str, node: str, attempt: int, seed: bytes) -> bytes:
    return seal_for_members(key, UNMASK, job_id, {
        "node": node, "attempt": attempt, "seed": base64.b64encode(seed).decode()})


def revealed_masks(key: StudyKey, job_id: str, reveals: dict[str, bytes],
                   contributors: list[str], attempt: int, slots: int) -> np.ndarray:
    """The sum of the contributors' self-masks of ``attempt``, from their sealed seeds;
    refuses a missing, foreign or mislabelled one."""
    if sorted(reveals) != sorted(contributors):
        given = ", ".join(sorted(reveals)) or "no node"
        raise UserError(f"the task reveals the self-masks of {given}, not of the "
                        f"contributors {', '.join(sorted(contributors))}")
    total = np.zeros(slots, dtype=np.uint64)
    for node in sorted(reveals):
        try:
            opened = open_for_members(key, UNMASK, job_id, reveals[node])
            seed = base64.b64decode(opened["seed"], validate=True)
            ok = opened["node"] == node and opened["attempt"] == attempt and len(seed) == 32
        except (UserError, KeyError, TypeError, ValueError):
            ok = False
        if not ok:
            raise UserError(f"the self-mask given as {node}'s is not one {node} revealed for "
                            f"attempt {attempt} of this job")
        total = masks.add(total, masks.self_mask(seed, slots))
    return total


def pair_context(h: TaskHeader, attempt: int, round_of: tuple[str, int] | None = None
                 ) -> bytes:
    """The context of an attempt's pairwise seeds: of a job's compute, or (``round_of``:
    stage and round) of a training round, whose vectors expand one seed per pair
    (:func:`scifed.masks.stream`)."""
    if round_of is None:
        return mask_context(h, compute_stage(attempt))
    stage, round_no = round_of
    return mask_context(h, f"{stage}#{attempt}", round_no)


def own_seed(job_secret: bytes, h: TaskHeader, attempt: int,
             round_of: tuple[str, int] | None = None) -> bytes:
    """This node's self-mask seed of an attempt of a job's compute or of a training round."""
    if round_of is None:
        return self_seed(job_secret, h, attempt)
    return round_self_seed(job_secret, h, round_of[0], round_of[1], attempt)


def _label(attempt: int, round_of: tuple[str, int] | None) -> tuple[str, int]:
    """What names an attempt's sum in its sharing contexts (stage, round)."""
    if round_of is None:
        return compute_stage(attempt), 0
    return round_stage(round_of[0], round_of[1], attempt), round_of[1]


def _box_key(own, node: str, peer: str, peer_public: bytes, h: TaskHeader,
             attempt: int, round_of: tuple[str, int] | None) -> bytes:
    return masks.pair_seed(own, node, peer, peer_public,
                           b"share\0" + mask_context(h, *_label(attempt, round_of)))


def _box_aad(job_id: str, attempt: int, sender: str, holder: str) -> bytes:
    return f"{job_id}\0{attempt}\0{sender}\0{holder}".encode()


def share_boxes(node: str, key_dir: Path, job_secret: bytes, h: TaskHeader,
                publics: dict[str, bytes], attempt: int, *,
                round_of: tuple[str, int] | None = None) -> dict[str, bytes]:
    """This node's self-mask seed of ``attempt`` (of the training round ``round_of``:
    stage and round), split t-of-(n−1) for the other nodes of the set, each share boxed
    for its holder; {} for a set of fewer than SHARED_FROM."""
    if len(publics) < SHARED_FROM:
        return {}
    order = sorted(publics)
    holders = [n for n in order if n != node]
    seed = own_seed(job_secret, h, attempt, round_of)
    label, round_no = _label(attempt, round_of)
    randomness = masks.self_seed(job_secret, mask_context(h, "shares", attempt)
                                 if round_of is None else
                                 mask_context(h, "shares\0" + label, round_no))
    shares = shamir.split(seed, [order.index(n) + 1 for n in holders],
                          threshold(len(order)), randomness)
    own = _seal_key(key_dir)
    return {n: he.seal_box(_box_key(own, node, n, publics[n], h, attempt, round_of),
                           shares[order.index(n) + 1], _box_aad(h.job_id, attempt, node, n))
            for n in holders}


def open_shares(node: str, key_dir: Path, h: TaskHeader, publics: dict[str, bytes],
                attempt: int, boxes: dict[str, bytes], senders: list[str], *,
                round_of: tuple[str, int] | None = None) -> dict[str, bytes]:
    """The shares ``senders`` boxed for this node at ``attempt`` (of ``round_of``);
    refuses a missing box or one not made by its sender for this node and attempt."""
    own, out = _seal_key(key_dir), {}
    for sender in senders:
        if sender not in boxes:
            raise UserError(f"the task carries no share of node {sender}'s self-mask seed "
                            f"for node {node}")
        try:
            out[sender] = he.open_box(
                _box_key(own, node, sender, publics[sender], h, attempt, round_of),
                boxes[sender], _box_aad(h.job_id, attempt, sender, node))
        except UserError:
            raise UserError(f"the share given as node {sender}'s for node {node} was not "
                            f"made by {sender} for this node and attempt {attempt}") from None
    return out


def pair_seeds(node: str, key_dir: Path, h: TaskHeader, publics: dict[str, bytes],
               attempt: int, dropped: list[str], *,
               round_of: tuple[str, int] | None = None) -> dict[str, bytes]:
    """This node's pairwise seeds of ``attempt`` (of ``round_of``) with each node of
    ``dropped``."""
    context = pair_context(h, attempt, round_of)
    return {d: masks.pair_seed(_seal_key(key_dir), node, d, publics[d], context)
            for d in dropped}


def seal_view(key: StudyKey, job_id: str, node: str, attempt: int, contributors: list[str],
              dropped: list[str], shares: dict[str, bytes], seeds: dict[str, bytes], *,
              round_of: tuple[str, int] | None = None) -> bytes:
    """A node's answer to a view of an attempt (of the training round ``round_of``,
    which it names), sealed for the members (its fields: :mod:`scifed.recovery`)."""
    b64 = base64.b64encode
    where = {} if round_of is None else {"stage": round_of[0], "round": round_of[1]}
    return seal_for_members(key, REVEAL, job_id, {
        "node": node, "attempt": attempt, **where, "contributors": sorted(contributors),
        "dropped": sorted(dropped),
        "self": {n: b64(s).decode() for n, s in sorted(shares.items())},
        "pair": {d: b64(s).decode() for d, s in sorted(seeds.items())}})


def opened_views(key: StudyKey, job_id: str, reveals: dict[str, bytes],
                 contributors: list[str], dropped: list[str], attempt: int, *,
                 round_of: tuple[str, int] | None = None) -> dict[str, dict]:
    """The nodes' sealed answers to one view of ``attempt`` (of ``round_of``), opened;
    refuses an answer of a node that is no contributor, or one to another view, attempt,
    round or job."""
    stray = sorted(set(reveals) - set(contributors))
    if stray:
        raise UserError(f"the task carries unmask answers of {', '.join(stray)}, which are "
                        "not contributors")
    opened = {}
    for node in sorted(reveals):
        try:
            o = open_for_members(key, REVEAL, job_id, reveals[node])
        except UserError:
            o = None
        if o is None or not answers_view(o, node, attempt, contributors, dropped, round_of):
            where = "" if round_of is None else f" of round {round_of[1]} ({round_of[0]})"
            raise UserError(f"the unmask answer given as {node}'s is not one {node} gave for "
                            f"attempt {attempt}{where} with contributors "
                            f"{', '.join(sorted(contributors))}"
                            + (f" and {', '.join(sorted(dropped))} dropped" if dropped else ""))
        opened[node] = o
    return opened


def recovered_masks(key: StudyKey, job_id: str, reveals: dict[str, bytes],
                    contributors: list[str], dropped: list[str], attempt: int, slots: int,
                    only: list[str] | None = None, *, name: str | None = None,
                    round_of: tuple[str, int] | None = None) -> np.ndarray:
    """What the contributors' masks leave in their sum, rebuilt from the nodes' sealed
    answers to one view (module docstring; :func:`scifed.recovery.rebuilt_mask`): Σ
    PRG(b_i) over ``contributors`` (``only``: those nodes' self-masks alone) and the
    survivors' pairwise masks towards ``dropped``; ``name``: the vector of a training
    round's update. Refuses an answer to another view, too few shares, or shares that
    disagree."""
    opened = opened_views(key, job_id, reveals, contributors, dropped, attempt,
                          round_of=round_of)
    return rebuilt_mask(opened, contributors, dropped, slots, name=name, only=only)
