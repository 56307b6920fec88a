"""Taking the masks off a sum from the nodes' answers to one *view* of an attempt (the
nodes summed, U, and those masked for whose answer never came, D: node/masking.py), and
when those answers suffice.

Why in the shared core: two parties rebuild the same masks from the same answers — the
release node of an aggregate job and of a training run (which opens the answers sealed
for the members and checks every round), and a training run's ServerApp on the
coordinator host (which takes each round's masks off the encrypted sum with the public
context, so that the next round trains from the plain sum) — and neither may import the
other's package. The answers are plain dicts here, as a node made them (node/masking.py
``seal_view``): ``node``, ``attempt``, ``contributors``, ``dropped``, for a training
round ``stage`` and ``round``, and base64 ``self`` (its shares of the others' self-mask
seeds) and ``pair`` (its pairwise seeds with the nodes of D).
"""

from __future__ import annotations

import base64

import numpy as np

from scifed import masks, shamir
from scifed.errors import UserError
from scifed.masks import SHARED_FROM, threshold


def recoverable(masked: int, summed: int) -> bool:
    """Whether an attempt masked for ``masked`` nodes, of which ``summed`` answered, is
    unmasked as it is, the others left out by the survivors' seeds with them (a set of
    three or more, with t + 1 survivors: node/masking.py), rather than by a fresh attempt."""
    return masked >= SHARED_FROM and summed >= threshold(masked) + 1


def shortfall(masked: int, dropped: int, answered: int) -> str | None:
    """What the unmask of a view lacks when a contributor did not answer it: None if the
    ``answered`` nodes still take every mask off (t + 1 of the ``masked`` answered and
    none of them was left out already), else what is missing."""
    t = threshold(masked)
    if masked < SHARED_FROM:
        return "every contributor's own seed"
    if dropped:
        return "every survivor's pairwise seeds with the nodes left out"
    if answered < t + 1:
        return f"t + 1 = {t + 1} of the {masked} nodes masked for to answer"
    return None


def answers_view(answer: dict, node: str, attempt: int, contributors: list[str],
                 dropped: list[str], round_of: tuple[str, int] | None = None) -> bool:
    """Whether ``answer`` is ``node``'s to this very view of ``attempt`` (of the training
    round ``round_of``: stage and round; None for a job's compute)."""
    try:
        return (answer["node"] == node and answer["attempt"] == attempt
                and answer["contributors"] == sorted(contributors)
                and answer["dropped"] == sorted(dropped)
                and (answer.get("stage"), answer.get("round"))
                == ((None, None) if round_of is None else tuple(round_of))
                and isinstance(answer["self"], dict) and isinstance(answer["pair"], dict))
    except (KeyError, TypeError, AttributeError):
        return False


def rebuilt_mask(answers: dict[str, dict], contributors: list[str], dropped: list[str],
                 slots: int, *, name: str | None = None,
                 only: list[str] | None = None) -> np.ndarray:
    """What the contributors' masks leave in their sum, from the answers (each checked
    with :func:`answers_view` by the caller): Σ PRG(b_i) over ``contributors`` (``only``:
    those nodes' self-masks alone), each seed b_i from t shares of the other answering
    nodes (more must lie on the one polynomial), and the survivors' pairwise masks
    towards ``dropped``. ``name``: the vector of a contribution of several (a training
    round's model or metrics: :func:`scifed.masks.stream`). Refuses too few shares,
    shares that disagree, or a missing pairwise seed."""
    order = sorted([*contributors, *dropped])
    t = threshold(len(order))
    total = np.zeros(slots, dtype=np.uint64)
    for i in sorted(only if only is not None else contributors):
        try:
            points = {order.index(holder) + 1: _bytes(a["self"][i])
                      for holder, a in answers.items() if holder != i and i in a["self"]}
            seed = shamir.combine(points, t)
        except UserError as exc:
            raise UserError(f"the self-mask of {i} cannot come off the sum: {exc} "
                            f"(t = {t} of the {len(order)} nodes masked for)") from None
        total = masks.add(total, masks.stream(seed, slots, name))
    if only is not None:
        return total
    for d in sorted(dropped):
        for k in sorted(contributors):
            if k not in answers or d not in answers[k]["pair"]:
                raise UserError(f"node {k}'s masks towards the dropped node {d} cannot come "
                                f"off the sum: no pairwise seed of {k} with {d} is given")
            try:
                seed = _bytes(answers[k]["pair"][d], 32)
            except UserError:
                raise UserError(f"the pairwise seed given as {k}'s with {d} is malformed"
                                ) from None
            total = masks.add(total, masks.signed(masks.stream(seed, slots, name), k, d))
    return total


def _bytes(text: object, size: int | None = None) -> bytes:
    """A base64 field of an answer, or a UserError (a forged answer is refused, not
    crashed on)."""
    try:
        out = base64.b64decode(str(text), validate=True)
    except ValueError:
        raise UserError("a share or seed of an unmask answer is not base64") from None
    if size is not None and len(out) != size:
        raise UserError(f"a seed of an unmask answer is {len(out)} bytes, not {size}")
    return out
