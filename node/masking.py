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
unmasks at most one attempt, hence one set. A node that drops after the set is final (in
the reveal itself) fails the job: its self-mask cannot be recovered without it (t-of-n
shares of the self-mask seeds, as in SecAgg, would; not built).

Further rounds of a release (exact quantiles) use pairwise masks over the final
contributors without self-masks: a dropout there fails the job anyway, so no attempt
ever follows and nothing needs revealing.

Training rounds (node/round_updates.py) follow the same rules per round: each attempt of
a round masks the node's update pairwise for the attempt's set with a self-mask of the
round and attempt (:func:`round_self_seed`), a later attempt masks the kept update afresh
for the survivors, and a node reveals the self-mask of one attempt per round only. Its
seed goes to the coordinator in clear, which takes the revealed masks off the sum with
the public context: every member decrypts each round's model, so a seed sealed for the
members would tell the coordinator-with-a-member no less.
"""

from __future__ import annotations

import base64
import functools
from pathlib import Path

import numpy as np

from scifed import he, masks
from scifed.errors import UserError
from scifed.he import StudyKey, open_for_members, seal_for_members
from scifed.sealing import SealKeyClaim, canonical_sha256, load_seal_key, verify_claim
from scifed.tasks import TaskHeader

UNMASK = "job-unmask"  # the study key's AEAD purpose for revealed self-mask seeds
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
             slots: int) -> np.ndarray | None:
    """This node's pairwise mask for ``slots`` slots, or None for a set of one."""
    if len(publics) < 2:
        return None
    return masks.pairwise_mask(_seal_key(key_dir), node, publics, context, slots)


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
