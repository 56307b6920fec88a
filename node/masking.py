"""The pairwise masks a node adds under the encryption to what it contributes.

Every member holds the study key, so a contribution encrypted under it alone could be
read by the release node (which decrypts) or by the coordinator with any one member.
Each contribution therefore carries, before encryption, ±PRG(seed) mod t towards every
other node of the sum (:mod:`scifed.masks`); the masks cancel only in the sum over the
whole set, so a single contribution, or a sum over part of the set, decrypts to uniform
residues.

The set comes from the coordinator (the nodes it asks to compute, each with its seal key
claim), but nothing in it is taken on trust: every claim must chain to the federation CA
as the node it names, the set must hold this node and no more nodes than the job has, and
the set goes into this node's signed attestation, so the release node sums only
contributions masked for exactly the contributors it is given. A set of one (a one-node
job) needs no mask: the sum is the contribution.

Dropouts: every node of the set must contribute. A node that masks and then drops leaves
masks that do not cancel, and the release fails (refused, not wrong); recovering the sum
over the survivors (double masking with self-masks revealed once the set is fixed) is
not built yet.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from scifed import he, masks
from scifed.errors import UserError
from scifed.sealing import SealKeyClaim, load_seal_key, verify_claim
from scifed.tasks import TaskHeader


def mask_context(h: TaskHeader, stage: str, round_no: int = 0) -> bytes:
    """What makes one sum's masks unlike every other's: job, stage, round, key version."""
    return "\0".join([h.job_id, stage, str(round_no), str(h.key_version)]).encode()


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
    """This node's mask for ``slots`` slots, or None for a set of one."""
    if len(publics) < 2:
        return None
    return masks.pairwise_mask(_seal_key(key_dir), node, publics, context, slots)


def exact_slots(vec: np.ndarray) -> int:
    return he.slots_for(he.EXACT, int(np.asarray(vec).size))
