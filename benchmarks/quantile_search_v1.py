"""The quantile search as it was before the grid search (`jobs/stats/quantile_grid.py`),
kept as the baseline that `make bench` compares rounds with: a 64-way bracket search in
the integer image of float64, one bracket per order statistic, then (k > 1) one more
round for the rounding ladder. Not used by the job.

Exact federated quantiles by a multi-round counting search.

Pandas' default quantile interpolates between two order statistics of the pooled values:
h = (N−1)p, q = x_(⌊h⌋) + (h−⌊h⌋)(x_(⌊h⌋+1) − x_(⌊h⌋)). An order statistic x_(r) is the
smallest t with count(x ≤ t) ≥ r+1, and counts add across nodes, so the release node can
find it from pooled counts alone: each round every node counts its values ≤ each of a
list of thresholds (one vector, summed under encryption), and the release node narrows a
bracket (lo, hi] around every wanted order statistic.

Brackets are split in the order-preserving integer image of float64 (``_key``), not in
value space: 64 parts per round cut ~6 bits, values of any magnitude take the same number
of rounds, and the search ends when lo and hi are adjacent floats, where x_(r) = hi
exactly. Round 0 uses a signed decade grid so that the usual ranges are bracketed at
once. All targets share each round, so the round count does not grow with the number of
quantiles; a typical column needs about 10 rounds.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import asdict, dataclass, field

from jobs.stats.compute import pooled_count
from jobs.stats.disclosure import quantile_margin, round_to_k_rows, rounding_thresholds
from jobs.stats.spec import StatsSpec

SPLIT = 64


def _key(x: float) -> int:
    """Order-preserving integer for a float64 (−0.0 and 0.0 share key 0)."""
    bits = struct.unpack("<q", struct.pack("<d", x))[0]
    return bits if bits >= 0 else -(bits & 0x7FFF_FFFF_FFFF_FFFF)


def _float(key: int) -> float:
    bits = key if key >= 0 else (-key) | (1 << 63)
    return struct.unpack("<d", struct.pack("<Q", bits))[0]


_TOP = _key(math.inf)
_BOTTOM = _key(-math.inf) - 1  # below every value; never sent as a threshold
# Round 0: ±10^e for e in −6..15, 0 and +inf (its count checks the vector's pooled n), each
# with the float just below it, so a value exactly on the grid (0 above all) is pinned at once.
_DECADES = [0.0, math.inf, *(s * 10.0**e for e in range(-6, 16) for s in (1, -1))]
_GRID = sorted({g for x in _DECADES for g in (x, math.nextafter(x, -math.inf))})


@dataclass
class _Target:
    """One wanted order statistic: x_(rank) of ``column`` lies in (lo, hi] (as keys)."""

    column: str
    rank: int
    lo: int = _BOTTOM
    hi: int = _TOP

    @property
    def done(self) -> bool:
        return self.hi - self.lo <= 1

    def splits(self) -> list[float]:
        if self.lo == _BOTTOM and self.hi == _TOP:
            return _GRID
        gap = self.hi - self.lo
        keys = range(self.lo + 1, self.hi) if gap <= SPLIT else (
            self.lo + gap * j // SPLIT for j in range(1, SPLIT))
        return [_float(key) for key in keys]


@dataclass
class QuantileSearch:
    """The release node's search state; JSON-serialisable so it can travel sealed between
    rounds. ``refused`` gives the reason for each column whose quantiles are withheld."""

    k: int
    n: dict[str, int]
    probs: dict[str, list[float]]
    targets: list[_Target]
    refused: dict[str, str] = field(default_factory=dict)
    rounds: int = 0

    @classmethod
    def start(cls, spec: StatsSpec, pooled_n: dict[str, int], *, k: int) -> QuantileSearch:
        """Plan the search; a column with pooled N < 2k (k > 1) gets no quantiles, and a
        probability outside [k/N, 1 − k/N] none either, since extreme quantiles would
        come too close to single records."""
        need = 2 * k if k > 1 else 1
        n: dict[str, int] = {}
        probs: dict[str, list[float]] = {}
        refused: dict[str, str] = {}
        targets: list[_Target] = []
        for col, ps in spec.quantiles.items():
            if col not in pooled_n:
                raise ValueError(f"no pooled count for quantile column {col!r}")
            total = pooled_n[col]
            if total < need:
                refused[col] = (f"too few values for a quantile at k={k}" if total
                                else "no values")
                continue
            kept = [p for p in ps if quantile_margin(p, total, k)]
            if len(kept) < len(ps):  # name the probabilities asked, never a count
                refused[col] = (f"probabilities too close to 0 or 1 for k={k} are not "
                                "answered: " + ", ".join(str(p) for p in ps if p not in kept))
            if not kept:
                continue
            n[col], probs[col] = total, kept
            ranks = set()
            for p in kept:
                h = (total - 1) * p
                ranks.add(math.floor(h))
                if h > math.floor(h):
                    ranks.add(math.floor(h) + 1)
            targets += [_Target(col, r) for r in sorted(ranks)]
        return cls(k, n, probs, targets, refused)

    @property
    def done(self) -> bool:
        return all(t.done for t in self.targets)

    def thresholds(self) -> dict[str, list[float]]:
        """What every node counts this round: per column, sorted distinct thresholds."""
        out: dict[str, set[float]] = {}
        for t in self.targets:
            if not t.done:
                out.setdefault(t.column, set()).update(t.splits())
        return {col: sorted(out[col]) for col in sorted(out)}

    def update(self, pooled_counts: dict[str, list[int]]) -> None:
        """Narrow every open bracket with this round's pooled counts (aligned with
        :meth:`thresholds`). Raises ValueError if they cannot be true counts."""
        asked = self.thresholds()
        if set(pooled_counts) != set(asked):
            raise ValueError(f"counts for columns {sorted(pooled_counts)}, expected "
                             f"{sorted(asked)}")
        for col, ts in asked.items():
            if len(pooled_counts[col]) != len(ts):
                raise ValueError(f"{len(pooled_counts[col])} counts for {col!r}, expected "
                                 f"{len(ts)}")
            counts = [pooled_count(c, f"a count of {col}") for c in pooled_counts[col]]
            if any(b < a for a, b in zip(counts, counts[1:], strict=False)) or \
                    counts[-1] > self.n[col]:
                raise ValueError(f"corrupted aggregate: counts of {col!r} are not cumulative")
            if ts[-1] == math.inf and counts[-1] != self.n[col]:
                raise ValueError(f"{col!r}: the nodes now hold {counts[-1]} values, the "
                                 f"statistics round counted {self.n[col]}; data or "
                                 "membership changed during the job")
            keys = [_key(t) for t in ts]
            for target in self.targets:
                if target.column != col or target.done:
                    continue
                for key, count in zip(keys, counts, strict=True):
                    if target.lo < key < target.hi:
                        if count >= target.rank + 1:
                            target.hi = key
                        else:
                            target.lo = key
        self.rounds += 1

    def result(self) -> dict[str, dict[str, float]]:
        """Column -> {str(p): quantile}, by pandas' linear interpolation."""
        if not self.done:
            raise ValueError("the quantile search has not finished")
        value = {(t.column, t.rank): _float(t.hi) for t in self.targets}
        out: dict[str, dict[str, float]] = {}
        for col, ps in self.probs.items():
            out[col] = {}
            for p in ps:
                h = (self.n[col] - 1) * p
                r = math.floor(h)
                a = value[(col, r)]
                out[col][str(p)] = a if h == r else _lerp(a, value[(col, r + 1)], h - r)
        return out

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> QuantileSearch:
        state = json.loads(text)
        state["targets"] = [_Target(**t) for t in state["targets"]]
        return cls(**state)


def _lerp(a: float, b: float, t: float) -> float:
    """numpy's interpolation, so results match pandas to the last bit where possible."""
    diff = b - a
    return b - diff * (1 - t) if t >= 0.5 else a + diff * t


def rounding_query(search: QuantileSearch) -> dict[str, list[float]]:
    """The old extra round (k > 1): the rounding-ladder thresholds around each exact
    quantile, per column."""
    exact = search.result()
    return {c: [t for _, q in sorted(v.items()) for t in rounding_thresholds(q)]
            for c, v in exact.items() if v}


def rounded(search: QuantileSearch, counts: dict[str, list[int]]) -> dict[str, dict]:
    """The released quantiles (k > 1) from the old extra round's pooled counts."""
    out: dict[str, dict] = {}
    for col, items in sorted(search.result().items()):
        if not items:
            continue
        per = len(counts[col]) // len(items)
        out[col] = {}
        for i, (p, value) in enumerate(sorted(items.items())):
            released, step = round_to_k_rows(value, counts[col][i * per:(i + 1) * per],
                                             search.k)
            out[col][p] = None if step == math.inf else released
    return out
