"""Exact federated quantiles by a multi-round counting search.

Pandas' default quantile interpolates between two order statistics of the pooled values:
h = (N−1)p, q = x_(⌊h⌋) + (h−⌊h⌋)(x_(⌊h⌋+1) − x_(⌊h⌋)). An order statistic x_(r) is the
smallest t with count(x ≤ t) ≥ r+1, and counts add across nodes, so the release node can
find it from pooled counts alone: each round every node counts its values ≤ each of a
list of thresholds (one vector, summed under encryption), and the release node narrows a
bracket (lo, hi] around every wanted order statistic.

Brackets are split in the order-preserving integer image of float64 (``_key``), not in
value space: up to 4,096 parts per round cut up to 12 bits (512 per value the bracket
holds, so that a part likely holds x_(r) alone), values of any magnitude take the same
number of rounds, and the search ends when lo and hi are adjacent floats, where x_(r) = hi
exactly. Round 0 uses a signed decade grid so that the usual ranges are bracketed at
once. All targets share each round, so the round count does not grow with the number of
quantiles.

A bracket the pooled counts show to hold exactly one value (count(≤hi) − count(≤lo) = 1)
holds x_(r) alone; the next round asks each node instead for the sum of ``_key(x) −
lo`` over its values in (lo, hi] — an integer below 2^52, exact in the encryption — which
pools to x_(r)'s key itself. The release node learns nothing it would not learn by
splitting on to adjacent floats (x_(r) exactly), and a node holding more than one value
in such a bracket refuses (the data changed). So 100,000 distinct values take about 4
rounds, not 10; many tied values up to 6.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import asdict, dataclass, field

import numpy as np

from jobs.base import Table
from jobs.stats.compute import pooled_count
from jobs.stats.disclosure import quantile_margin
from jobs.stats.spec import StatsSpec
from scifed.errors import UserError

SPLIT_MIN, SPLIT_MAX, SPLIT_PER_VALUE = 64, 4096, 512  # parts of a bracket per round
MAX_OFFSET = 2**52  # largest bracket whose key offsets are summed (exact in float64)


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
    lo_n: int = 0  # pooled count(x ≤ lo)
    hi_n: int | None = None  # pooled count(x ≤ hi); None: not counted yet (all values)

    @property
    def done(self) -> bool:
        return self.hi - self.lo <= 1

    @property
    def single(self) -> bool:
        """Whether (lo, hi] holds x_(rank) alone, small enough to sum key offsets over."""
        return (not self.done and self.lo != _BOTTOM and self.hi_n is not None
                and self.hi_n - self.lo_n == 1 and self.hi - self.lo <= MAX_OFFSET)

    def splits(self) -> list[float]:
        """This round's thresholds in (lo, hi): the decade grid first, then SPLIT_PER_VALUE
        parts per pooled value in the bracket (SPLIT_MIN to SPLIT_MAX), so that x_(r)
        likely ends alone in its part, to be summed next round."""
        if self.lo == _BOTTOM and self.hi == _TOP:
            return _GRID
        held = SPLIT_MAX if self.hi_n is None else self.hi_n - self.lo_n
        parts = min(SPLIT_MAX, max(SPLIT_MIN, SPLIT_PER_VALUE * held))
        gap = self.hi - self.lo
        keys = range(self.lo + 1, self.hi) if gap <= parts else (
            self.lo + gap * j // parts for j in range(1, parts))
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
            if not t.done and not t.single:
                out.setdefault(t.column, set()).update(t.splits())
        return {col: sorted(out[col]) for col in sorted(out)}

    def brackets(self) -> dict[str, list[list[int]]]:
        """Brackets (lo, hi] (keys) that hold one value each: every node sums its values'
        key offsets from lo in each (:func:`offset_sums`)."""
        out: dict[str, set[tuple[int, int]]] = {}
        for t in self.targets:
            if t.single:
                out.setdefault(t.column, set()).add((t.lo, t.hi))
        return {col: [list(b) for b in sorted(out[col])] for col in sorted(out)}

    def query(self) -> dict:
        """This round's question to the nodes: counts at thresholds, offset sums in
        brackets (:meth:`update` takes the answers in this order)."""
        brackets = self.brackets()
        return {"thresholds": self.thresholds(), **({"offsets": brackets} if brackets else {})}

    def update(self, pooled_counts: dict[str, list[int]],
               pooled_offsets: dict[str, list[float]] | None = None) -> None:
        """Narrow every open bracket with this round's pooled counts (aligned with
        :meth:`thresholds`) and offset sums (aligned with :meth:`brackets`). Raises
        ValueError if they cannot be true counts or offsets."""
        asked = self.thresholds()
        singles = self.brackets()
        pooled_offsets = pooled_offsets or {}
        if set(pooled_offsets) != set(singles):
            raise ValueError(f"offsets for columns {sorted(pooled_offsets)}, expected "
                             f"{sorted(singles)}")
        for col, brackets in singles.items():
            if len(pooled_offsets[col]) != len(brackets):
                raise ValueError(f"{len(pooled_offsets[col])} offsets for {col!r}, expected "
                                 f"{len(brackets)}")
            found = {}
            for (lo, hi), value in zip(brackets, pooled_offsets[col], strict=True):
                offset = pooled_count(value, f"a key offset of {col}")
                if not 0 < offset <= hi - lo:
                    raise ValueError(f"corrupted aggregate: a key offset of {col!r} lies "
                                     "outside its bracket")
                found[(lo, hi)] = lo + offset
            for target in self.targets:
                if target.column == col and target.single:
                    target.hi = found[(target.lo, target.hi)]
                    target.lo, target.hi_n = target.hi - 1, target.lo_n + 1
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
                            target.hi, target.hi_n = key, count
                        else:
                            target.lo, target.lo_n = key, count
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


def count_le(data: Table, column: str, thresholds: list[float]) -> np.ndarray:
    """This node's counts of filtered non-missing values ≤ each threshold, in one query
    (one sort of values and thresholds together), as float64 like the stats vector."""
    data.require([column], "stats.quantiles", numeric=True)
    if not thresholds:
        return np.zeros(0)
    select = (
        "SELECT cnt FROM (SELECT i, kind, sum(1 - kind) OVER (ORDER BY x, kind ROWS "
        "UNBOUNDED PRECEDING) AS cnt FROM (SELECT c0 AS x, 0 AS kind, NULL::BIGINT AS i "
        "FROM d WHERE c0 IS NOT NULL UNION ALL SELECT unnest(?::DOUBLE[]), 1, "
        "unnest(range(?::BIGINT)))) WHERE kind = 1 ORDER BY i"
    )
    rows = data.query([data.number(column)], select,
                      [[float(t) for t in thresholds], len(thresholds)])
    return np.array([r[0] for r in rows], dtype=np.float64)


def offset_sums(data: Table, column: str, brackets: list[list[int]]) -> np.ndarray:
    """Per bracket (lo, hi] (keys, as :meth:`QuantileSearch.brackets` gives them), the
    sum of ``_key(x) − lo`` over this node's filtered values in it: 0 without one, the
    offset of the one. A bracket asked for holds a single pooled value, so a node holding
    more than one there refuses: its data changed (or the asker is not the release node's
    honest search), and it reveals no sum of several values."""
    data.require([column], "stats.quantiles", numeric=True)
    out = np.zeros(len(brackets))
    for i, bracket in enumerate(brackets):
        if not (isinstance(bracket, list) and len(bracket) == 2
                and all(isinstance(b, int) and _BOTTOM < b <= _TOP for b in bracket)
                and 0 < bracket[1] - bracket[0] <= MAX_OFFSET):
            raise UserError("stats.quantiles: a bracket of the further round is malformed")
        lo, hi = bracket
        rows = data.query([data.number(column)], "SELECT c0 FROM d WHERE c0 > ? AND c0 <= ?",
                          [_float(lo), _float(hi)])
        if len(rows) > 1:
            raise UserError(f"stats.quantiles: {column!r} holds {len(rows)} values where the "
                            "pooled counts saw one; the data changed during the job")
        if rows:
            out[i] = float(_key(float(rows[0][0])) - lo)
    return out
