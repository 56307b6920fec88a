"""The penguin federation the deviating-coordinator attacks share: penguins split by
island over three nodes (non-IID: Torgersen holds only Adelie), one study over all three,
on the in-memory link (real driver, gate, release path, BFV, sealing)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import yaml
from scipy import stats

from coordinator.db import Node
from harness.inmemory import InMemoryFederation
from scifed import masks
from scifed.he import PLAIN_MODULUS
from scifed.sealing import SealKeyClaim, load_seal_key, verify_claim

ISLANDS = {"biscoe": "Biscoe", "dream": "Dream", "torgersen": "Torgersen"}
EXACT = {"columns": ["body_mass_g"]}
NOISED = {"columns": ["body_mass_g"], "dp": {"epsilon": 1.0,
                                             "bounds": {"body_mass_g": [2000, 7000]}}}


def job(stats: dict) -> str:
    """A `stats` job over the three islands."""
    return yaml.safe_dump({"study": "penguins", "type": "stats",
                           "datasets": {n: "penguins" for n in ISLANDS}, "stats": stats},
                          sort_keys=False)


def island_federation(tmp_path, penguins, penguins_meta,
                      extra_nodes: Iterable[str] = ()) -> InMemoryFederation:
    """Entered: each island's penguins at its node, the study made (``fed.study_id``).
    The caller exits it."""
    fed = InMemoryFederation(tmp_path, [*ISLANDS, *extra_nodes]).__enter__()
    try:
        for node, island in ISLANDS.items():
            fed.add_dataset(node, penguins[penguins.island == island], penguins_meta,
                            "penguins")
        fed.study_id = fed.create_study("penguins", {n: "penguins" for n in ISLANDS})
    except BaseException:
        fed.__exit__(None, None, None)
        raise
    return fed


def uniform(residues: np.ndarray) -> bool:
    """Whether slot residues are indistinguishable from uniform in [0, t) (what a masked
    contribution decrypts to): Kolmogorov-Smirnov, p > 1e-6."""
    return stats.kstest(residues.astype(np.float64) / PLAIN_MODULUS, "uniform").pvalue > 1e-6


def pair_mask(fed, context: bytes, slots: int, name: str | None = None) -> np.ndarray:
    """The accomplice's own pairwise mask towards the victim for ``context`` (job, stage,
    round, key version), which it can make: what it adds to the victim's residues to take
    its share of the victim's masks off (``name``: of a training round's vector)."""
    with fed.coordinator.db.session() as s:
        claim = s.get(Node, fed.victim).seal_claim
    victim_public = verify_claim(SealKeyClaim.from_dict(claim),
                                 (fed.ca_dir / "ca.crt").read_bytes(),
                                 expect_role="node", expect_name=fed.victim)
    own = load_seal_key(fed.nodes[fed.accomplice].cfg.tls.key.parent)
    return masks.pairwise_mask(own, fed.accomplice, {fed.victim: victim_public}, context,
                               slots, name)
