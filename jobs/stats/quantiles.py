"""Exact federated quantiles by a multi-round counting search.

Pandas' default quantile interpolates between two order statistics of the pooled values:
h = (N−1)p, q = x_(⌊h⌋) + (h−⌊h⌋)(x_(⌊h⌋+1) − x_(⌊h⌋)). An order statistic x_(r) is the
smallest t with count(x ≤ t) ≥ r+1, and counts add across nodes, so the release node can
find it from pooled counts alone: each round every node counts its values ≤ each of a
list of thresholds (one vector, summed under encryption), and the release node keeps
every pooled count it has learnt. They bracket each wanted order statistic in (lo, hi].

Each round asks a grid of up to :data:`jobs.limits.MAX_ROUND_THRESHOLDS` thresholds
per column, shared by its probabilities, and :data:`jobs.limits.MAX_TOTAL_ROUND_THRESHOLDS`
over all columns (`quantile_grid.py` chooses them): a k-ary search, so a bracket shrinks
by a factor of hundreds per round, not two. For an exact release (k ≤ 1) a quantile is
done when its order statistics are pinned (lo and hi adjacent floats, x_(r) = hi). For a
rounded release (k > 1) it is done as soon as the counts decide the rounding rule
(`disclosure.round_to_k_rows`), usually before the order statistics are pinned: the grid
lies on the rounding ladder's buckets, so no separate rounding round is needed. Values
written with a few digits take 1–3 rounds.

Counts alone give log2(thresholds + 1) ≈ 10 bits per round, and a double has ~60, so an
exact release of full-precision doubles would take ~9. An exact release therefore also
asks, for each bracket holding at most :data:`SUM_ROWS` pooled values, the sums Σd and
Σd² of the key offsets d = key(x) − lo of the values there (:func:`key_sums`, exact
integer digits): one or two values, or a tie of several, are then known bit for bit in
the round that sums them, and full-precision doubles take 3–4 rounds. Only an exact
release asks them: a sum over a bracket holding one value is that value, which the
release publishes anyway when k ≤ 1, and a node whose own k is above 1 refuses any sum.
"""

from __future__ import annotations

import bisect
import json
import math
from dataclasses import dataclass, field, fields

import numpy as np

from jobs.base import Table
from jobs.limits import MAX_ROUND_THRESHOLDS, MAX_TOTAL_ROUND_THRESHOLDS
from jobs.stats import quantile_grid as grid
from jobs.stats.compute import pooled_count
from jobs.stats.disclosure import quantile_margin, rounding_thresholds
from jobs.stats.spec import StatsSpec
from scifed.errors import UserError

SUM_DIGIT_BITS = 24
# a node's sums of key offsets d and of d² over a bracket, in base-2^24 digits (each
# exact in the stats encoding, and their pooled sums too): Σd < 2^96, Σd² < 2^168
POWER_DIGITS = (4, 7)
SUM_DIGITS = sum(POWER_DIGITS)  # what one bracket costs in a round's vector
SUM_ROWS = 64  # an exact release sums a bracket's keys once it holds at most this many


def _ranks(n: int, p: float) -> tuple[int, float]:
    """(r, f): quantile p of n values is x_(r) + f·(x_(r+1) − x_(r)), as pandas."""
    h = (n - 1) * p
    r = math.floor(h)
    return r, h - r


@dataclass
class QuantileSearch:
    """The release node's search state; JSON-serialisable so it can travel sealed between
    rounds. ``known``: per column, every (key, pooled count ≤ that threshold) learnt so
    far, sorted, between the sentinels BOTTOM (0) and TOP (+inf, N). ``asked``: the keys
    of this round's thresholds. ``guide``: per column, a released (mean, sd) to aim the
    first grid with. ``refused`` gives the reason for each column whose quantiles are
    withheld. ``summed``: the brackets [lo, hi] of keys whose sums this round asks (an
    exact release only); ``tried``: every bracket summed so far, never asked again.
    ``budget``, ``total``: thresholds per column and over all columns a round may ask (at
    most the limits; a bracket sum counts as :data:`SUM_DIGITS` of them)."""

    k: int
    n: dict[str, int]
    probs: dict[str, list[float]]
    known: dict[str, list[list[int]]] = field(default_factory=dict)
    asked: dict[str, list[int]] = field(default_factory=dict)
    guide: dict[str, list[float]] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)
    summed: dict[str, list[list[int]]] = field(default_factory=dict)
    tried: dict[str, list[list[int]]] = field(default_factory=dict)
    rounds: int = 0
    budget: int = MAX_ROUND_THRESHOLDS
    total: int = MAX_TOTAL_ROUND_THRESHOLDS

    @classmethod
    def start(cls, spec: StatsSpec, pooled_n: dict[str, int], *, k: int,
              guide: dict[str, tuple[float, float]] | None = None,
              budget: int = MAX_ROUND_THRESHOLDS,
              total: int = MAX_TOTAL_ROUND_THRESHOLDS) -> QuantileSearch:
        """Plan the search; a column with pooled N < 2k (k > 1) gets no quantiles, and a
        probability outside [k/N, 1 − k/N] none either, since extreme quantiles would
        come too close to single records. ``guide``: (mean, sd) of columns whose moments
        the job released (they only aim the grid; results never depend on them)."""
        if not (1 <= budget <= MAX_ROUND_THRESHOLDS
                and 1 <= total <= MAX_TOTAL_ROUND_THRESHOLDS):
            raise ValueError(f"a round may ask 1 to {MAX_ROUND_THRESHOLDS} thresholds per "
                             f"column, {MAX_TOTAL_ROUND_THRESHOLDS} in all")
        need = 2 * k if k > 1 else 1
        n: dict[str, int] = {}
        probs: dict[str, list[float]] = {}
        refused: dict[str, str] = {}
        for col, ps in spec.quantiles.items():
            if col not in pooled_n:
                raise ValueError(f"no pooled count for quantile column {col!r}")
            held = pooled_n[col]
            if held < need:
                refused[col] = (f"too few values for a quantile at k={k}" if held
                                else "no values")
                continue
            kept = [p for p in ps if quantile_margin(p, held, k)]
            if len(kept) < len(ps):  # name the probabilities asked, never a count
                refused[col] = (f"probabilities too close to 0 or 1 for k={k} are not "
                                "answered: " + ", ".join(str(p) for p in ps if p not in kept))
            if not kept:
                continue
            n[col], probs[col] = held, kept
        aims = {c: [float(m), float(sd)] for c, (m, sd) in (guide or {}).items()
                if c in n and math.isfinite(m) and math.isfinite(sd) and sd > 0}
        search = cls(k, n, probs, {c: [[grid.BOTTOM, 0], [grid.TOP, n[c]]] for c in n},
                     guide=aims, refused=refused, budget=budget, total=total)
        search._replan()
        return search

    # -- what is known ---------------------------------------------------------------------
    def __post_init__(self) -> None:
        self._tables: dict[str, tuple[list[int], list[int]]] = {}  # not state: a cache

    def _table(self, col: str) -> tuple[list[int], list[int]]:
        """(keys, counts) known for ``col``, as two sorted lists."""
        if col not in self._tables:
            keys, counts = zip(*self.known[col], strict=True)
            self._tables[col] = list(keys), list(counts)
        return self._tables[col]

    def _bracket(self, col: str, rank: int) -> tuple[int, int]:
        """(lo, hi) keys with C(lo) ≤ rank < C(hi), the tightest known."""
        keys, counts = self._table(col)
        i = bisect.bisect_right(counts, rank)
        return keys[i - 1], keys[i]

    def _interval(self, col: str, p: float) -> tuple[float, float, list[tuple[int, int]]]:
        """[lo, hi] holding quantile p of ``col`` (lo == hi: known exactly), and the
        brackets of its order statistics not yet pinned."""
        r, f = _ranks(self.n[col], p)
        ranks = [r] if f == 0 else [r, r + 1]
        brackets = [self._bracket(col, x) for x in ranks]
        ends = [(grid.value(lo + 1), grid.value(hi)) for lo, hi in brackets]
        open_ = [b for b in brackets if b[1] - b[0] > 1]
        if f == 0:
            lo, hi = ends[0][0], ends[0][1]
        elif not open_:
            lo = hi = _lerp(ends[0][1], ends[1][1], f)
        elif not all(math.isfinite(x) for e in ends for x in e):
            lo, hi = -math.inf, math.inf
        else:  # float interpolation is monotone up to a few ulps: widen by those
            lo, hi = _lerp(ends[0][0], ends[1][0], f), _lerp(ends[0][1], ends[1][1], f)
            slack = 4 * math.ulp(max(abs(x) for e in ends for x in e))
            lo, hi = lo - slack, hi + slack
        return lo, hi, open_

    def _decided(self, col: str, p: float) -> tuple[float, float] | None:
        """(released value, step) once the counts decide it, else None. Step 0: exact
        (k ≤ 1); inf: withheld."""
        lo, hi, open_ = self._interval(col, p)
        if self.k <= 1:
            return None if open_ else (lo, 0.0)
        keys, counts = self._table(col)
        return grid.rounding(lo, hi, grid.count_bounds(keys, counts), self.k)

    @property
    def done(self) -> bool:
        return not any(self.asked.values()) and not any(self.summed.values())

    # -- the next round ------------------------------------------------------------------
    def _count(self, col: str, k: int) -> int:
        """The pooled count at a key known for ``col``."""
        keys, counts = self._table(col)
        return counts[bisect.bisect_left(keys, k)]

    def _replan(self) -> None:
        """This round's threshold keys per column (``asked``) and, for an exact release,
        the brackets whose sums it asks (``summed``), within the budget: a sum costs
        :data:`SUM_DIGITS` thresholds."""
        pending = {c: [p for p in ps if self._decided(c, p) is None]
                   for c, ps in self.probs.items()}
        pending = {c: ps for c, ps in pending.items() if ps}
        self.asked, self.summed = {}, {}
        if not pending:
            return
        share = max(1, min(self.budget, self.total // len(pending)))
        for col in sorted(pending)[: self.total]:
            sums = self._sum_plan(col, pending[col], share) if self.k <= 1 else []
            lone = {(lo, hi) for lo, hi in sums  # their sums decide them: no grid needed
                    if self._count(col, hi) - self._count(col, lo) <= 2}
            keys = self._column_plan(col, pending[col], share - SUM_DIGITS * len(sums), lone)
            if keys:
                self.asked[col] = keys
            if sums:
                self.summed[col] = [list(b) for b in sums]

    def _sum_plan(self, col: str, probs: list[float], budget: int) -> list[tuple[int, int]]:
        """The open brackets of an exact release holding at most :data:`SUM_ROWS` pooled
        values and not summed before: Σd and Σd² of their key offsets d give one or two
        values exactly, and several that are all equal (a tie: held·Σd² = (Σd)²)."""
        out: list[tuple[int, int]] = []
        tried = {tuple(b) for b in self.tried.get(col, [])}
        for p in probs:
            for lo, hi in self._interval(col, p)[2]:
                held = self._count(col, hi) - self._count(col, lo)
                if 1 <= held <= SUM_ROWS and (lo, hi) not in tried and (lo, hi) not in out:
                    out.append((lo, hi))
        return out[: budget // (2 * SUM_DIGITS)]

    def _column_plan(self, col: str, probs: list[float], budget: int,
                     lone: set[tuple[int, int]] = frozenset()) -> list[int]:
        """Threshold keys for ``col``: the ladder buckets of quantiles known but not yet
        decided, then grids inside each open bracket not in ``lone`` (one or two values,
        which this round's sums pin)."""
        keys, _ = self._table(col)
        known = set(keys)
        must: list[float] = []
        brackets: list[tuple[int, int]] = []
        for p in probs:
            lo, hi, open_ = self._interval(col, p)
            if not open_:  # known exactly, the rule still open: its ladder's buckets
                must += rounding_thresholds(lo)
            brackets += [b for b in open_ if b not in lone]
        wanted = _fresh(must, known)[:budget]
        if budget <= 0:
            return []
        merged: list[list[int]] = []
        for lo, hi in sorted(set(brackets)):
            if merged and lo < merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], hi)
            else:
                merged.append([lo, hi])
        left = budget - len(wanted)
        if merged and merged[0] == [grid.BOTTOM, grid.TOP]:  # nothing known yet
            first = grid.first_round(left // 4 if col in self.guide else left)
            wanted += [grid.TOP, *_fresh(first, known | set(wanted))]  # C(inf) checks N
            if col in self.guide:
                mean, sd = self.guide[col]
                fit = grid.ladder_grid if self.k > 1 else grid.decimal_grid
                wanted += _fresh(fit(mean - 4 * sd, mean + 4 * sd, budget - len(wanted)),
                                 known | set(wanted))
            return sorted(wanted)[:budget]
        merged = merged[: max(1, left // 2)]
        for i, (lo, hi) in enumerate(merged):
            share = (budget - len(wanted)) // (len(merged) - i)
            vlo, vhi = grid.value(lo + 1), grid.value(hi)
            # a rounded release needs the ladder's buckets; both need values on a
            # decimal grid pinned (with ties ≥ k that decides the finest step at once)
            aimed = grid.ladder_grid(vlo, vhi, share // 2) if self.k > 1 else []
            aimed += grid.decimal_grid(vlo, vhi, (share - len(aimed)) * 7 // 8)
            aimed = _fresh(aimed, known | set(wanted))[:share]
            splits = grid.key_splits(lo, hi, share - len(aimed))
            wanted += aimed + _fresh(splits, known | set(wanted) | set(aimed))
        return sorted(set(wanted))[:budget]

    def thresholds(self) -> dict[str, list[float]]:
        """What every node counts this round: per column, sorted distinct thresholds."""
        return {col: [grid.value(k) for k in keys] for col, keys in sorted(self.asked.items())}

    def query(self) -> dict:
        """This round's question to every node: thresholds to count values at and (an
        exact release only) brackets of keys to sum values' keys over."""
        out: dict = {"thresholds": self.thresholds()}
        if self.summed:
            out["sums"] = {c: [list(b) for b in bs] for c, bs in sorted(self.summed.items())}
        return out

    def learn(self, total: np.ndarray) -> None:
        """:meth:`update` from the pooled round vector (the layout of :func:`round_vector`)."""
        counts, sums, offset = {}, {}, 0
        for col, ts in self.thresholds().items():
            counts[col] = [pooled_count(v, f"count of {col} below a threshold")
                           for v in total[offset:offset + len(ts)]]
            offset += len(ts)
        for col, brackets in sorted(self.summed.items()):
            sums[col] = []
            for _ in brackets:
                powers = []
                for size in POWER_DIGITS:
                    digits = [pooled_count(v, f"a key sum of {col}")
                              for v in total[offset:offset + size]]
                    powers.append(sum(d << (SUM_DIGIT_BITS * i) for i, d in enumerate(digits)))
                    offset += size
                sums[col].append(powers)
        if offset != len(total):
            raise ValueError(f"corrupted aggregate: a round of {len(total)} values, expected "
                             f"{offset}")
        self.update(counts, sums)

    def update(self, pooled_counts: dict[str, list[int]],
               pooled_sums: dict[str, list[list[int]]] | None = None) -> None:
        """Learn this round's pooled counts (aligned with :meth:`thresholds`) and key sums
        [Σd, Σd²] (aligned with ``summed``), and plan the next. Raises ValueError if they cannot be
        true counts and sums."""
        asked = self.thresholds()
        pooled_sums = pooled_sums or {}
        if set(pooled_counts) != set(asked):
            raise ValueError(f"counts for columns {sorted(pooled_counts)}, expected "
                             f"{sorted(asked)}")
        if set(pooled_sums) != set(self.summed):
            raise ValueError(f"sums for columns {sorted(pooled_sums)}, expected "
                             f"{sorted(self.summed)}")
        learnt: dict[str, list[list[int]]] = {}
        for col in sorted(set(asked) | set(self.summed)):
            ts = asked.get(col, [])
            given = pooled_counts.get(col, [])
            if len(given) != len(ts):
                raise ValueError(f"{len(given)} counts for {col!r}, expected {len(ts)}")
            counts = [pooled_count(c, f"a count of {col}") for c in given]
            if any(b < a for a, b in zip(counts, counts[1:], strict=False)) or \
                    (counts and counts[-1] > self.n[col]):
                raise ValueError(f"corrupted aggregate: counts of {col!r} are not cumulative")
            if ts and ts[-1] == math.inf and counts[-1] != self.n[col]:
                raise ValueError(f"{col!r}: the nodes now hold {counts[-1]} values, the "
                                 f"statistics round counted {self.n[col]}; data or "
                                 "membership changed during the job")
            table = dict(map(tuple, self.known[col]))
            facts = list(zip(self.asked.get(col, []), counts, strict=True))
            brackets = self.summed.get(col, [])
            if len(pooled_sums.get(col, [])) != len(brackets):
                raise ValueError(f"{len(pooled_sums.get(col, []))} sums for {col!r}, "
                                 f"expected {len(brackets)}")
            for (lo, hi), powers in zip(brackets, pooled_sums.get(col, []), strict=True):
                offsets = _offsets(table[hi] - table[lo], *powers, hi - lo)
                if offsets is None:
                    raise ValueError(f"corrupted aggregate: key sums of {col!r} no values "
                                     "of their bracket can have")
                below = table[lo]
                for d in sorted(set(offsets)):  # C just below and at each value found
                    facts += [(lo + d - 1, below), (lo + d, below + offsets.count(d))]
                    below += offsets.count(d)
            for k, c in facts:
                if table.setdefault(k, c) != c:
                    raise ValueError(f"corrupted aggregate: counts of {col!r} contradict "
                                     "an earlier round")
            merged = sorted(table.items())
            if any(b[1] < a[1] for a, b in zip(merged, merged[1:], strict=False)):
                raise ValueError(f"corrupted aggregate: counts of {col!r} are not cumulative")
            learnt[col] = [list(kc) for kc in merged]
        self.known.update(learnt)  # all columns or none
        for col, brackets in self.summed.items():
            self.tried.setdefault(col, []).extend(brackets)
        self._tables.clear()
        self.rounds += 1
        self._replan()

    # -- the answer ------------------------------------------------------------------------
    def result(self) -> dict[str, dict[str, float | None]]:
        """Column -> {str(p): quantile}: exact, by pandas' linear interpolation (k ≤ 1),
        or rounded by the ladder rule (k > 1; None where no step holds k values)."""
        if not self.done:
            raise ValueError("the quantile search has not finished")
        out: dict[str, dict[str, float | None]] = {}
        for col, ps in self.probs.items():
            out[col] = {}
            for p in ps:
                decided = self._decided(col, p)
                assert decided is not None
                out[col][str(p)] = None if decided[1] == math.inf else decided[0]
        return out

    def resolution(self) -> dict[str, float]:
        """Column -> the coarsest rounding step among its released quantiles (k > 1)."""
        out: dict[str, float] = {}
        for col, ps in self.probs.items():
            for p in ps:
                decided = self._decided(col, p)
                assert decided is not None
                out[col] = max(out.get(col, 0.0), decided[1])
        return out

    def to_json(self) -> str:
        return json.dumps({f.name: getattr(self, f.name) for f in fields(self)})

    @classmethod
    def from_json(cls, text: str) -> QuantileSearch:
        return cls(**json.loads(text))


def _offsets(held: int, s1: int, s2: int, gap: int) -> list[int] | None:
    """The key offsets d (1 ≤ d ≤ gap) of ``held`` values with Σd = s1 and Σd² = s2 where
    these sums decide them: all equal (held·s2 = s1²) or two values; [] where they do
    not, None where no such values exist (a corrupted aggregate)."""
    if not (held <= s1 <= held * gap and s1 * s1 <= held * s2 <= held * held * gap * gap):
        return None
    if held * s2 == s1 * s1:
        return [s1 // held] * held if s1 % held == 0 else None
    if held == 2:  # d1 + d2 = s1, d1² + d2² = s2: d2 − d1 = √(2·s2 − s1²)
        root = math.isqrt(2 * s2 - s1 * s1)
        if root * root != 2 * s2 - s1 * s1 or (s1 - root) % 2 or not 1 <= (s1 - root) // 2:
            return None
        return [(s1 - root) // 2, (s1 + root) // 2]
    return []


def _fresh(thresholds: list[float], known: set[int]) -> list[int]:
    """Keys of ``thresholds`` not yet known, in order, each once (−0.0 is 0.0)."""
    out: list[int] = []
    seen = set(known)
    for t in thresholds:
        k = grid.key(t)
        if k not in seen and grid.BOTTOM < k <= grid.TOP:
            seen.add(k)
            out.append(k)
    return out


def _lerp(a: float, b: float, t: float) -> float:
    """numpy's interpolation, so results match pandas to the last bit where possible."""
    diff = b - a
    return b - diff * (1 - t) if t >= 0.5 else a + diff * t


def check_round(spec: StatsSpec, query: dict, *, k: int = 1
                ) -> tuple[dict[str, list[float]], dict[str, list[list[int]]]]:
    """A node's check of a counting round before it reads data: only the job's quantile
    columns, numbers, at most :data:`MAX_ROUND_THRESHOLDS` thresholds per column and
    :data:`MAX_TOTAL_ROUND_THRESHOLDS` in all, a bracket sum counting as
    :data:`SUM_DIGITS`; sums of keys only where this node releases exactly (k ≤ 1),
    since a sum of one value is that value. Returns (thresholds, sum brackets)."""
    asked = query.get("thresholds")
    if not isinstance(asked, dict) or not all(
            isinstance(ts, list) and all(isinstance(t, int | float) and not isinstance(t, bool)
                                         for t in ts) for ts in asked.values()):
        raise UserError("stats.quantiles: a counting round must list numeric thresholds "
                        "per column")
    sums = query.get("sums", {})
    if not isinstance(sums, dict) or not all(
            isinstance(bs, list) and all(
                isinstance(b, list) and len(b) == 2
                and all(isinstance(x, int) and not isinstance(x, bool) for x in b)
                and grid.BOTTOM <= b[0] < b[1] <= grid.TOP for b in bs)
            for bs in sums.values()):
        raise UserError("stats.quantiles: a counting round's sums must list brackets of two "
                        "increasing float keys per column")
    if sums and k > 1:
        raise UserError(f"stats.quantiles: this node releases quantiles rounded to k={k} "
                        "rows, so it sums no values in a counting round")
    foreign = sorted((set(asked) | set(sums)) - set(spec.quantiles))
    if foreign:
        raise UserError(f"stats.quantiles: a counting round asks for column(s) "
                        f"{', '.join(map(repr, foreign))}, which the job does not ask "
                        "quantiles of")
    for col in sorted(set(asked) | set(sums)):
        size = len(asked.get(col, [])) + SUM_DIGITS * len(sums.get(col, []))
        if size > MAX_ROUND_THRESHOLDS:
            raise UserError(f"stats.quantiles.{col}: a counting round asks {size} "
                            f"thresholds of one column; at most {MAX_ROUND_THRESHOLDS} "
                            "(MAX_ROUND_THRESHOLDS)")
    total = sum(len(ts) for ts in asked.values()) + SUM_DIGITS * sum(map(len, sums.values()))
    if total > MAX_TOTAL_ROUND_THRESHOLDS:
        raise UserError(f"stats.quantiles: a counting round asks {total} thresholds; at "
                        f"most {MAX_TOTAL_ROUND_THRESHOLDS} over all columns "
                        "(MAX_TOTAL_ROUND_THRESHOLDS)")
    return asked, sums


def round_vector(data: Table, spec: StatsSpec, query: dict, *, k: int) -> np.ndarray:
    """This node's answer to a counting round: its counts at each column's thresholds,
    then its key sums over each column's brackets (both in sorted column order)."""
    asked, sums = check_round(spec, query, k=k)
    values = {c: data.sorted_numbers(c) for c in sorted(set(asked) | set(sums))}
    parts = [_counts(values[col], ts) for col, ts in sorted(asked.items())]
    parts += [key_sums(values[col], bs, col) for col, bs in sorted(sums.items())]
    return np.concatenate(parts) if parts else np.zeros(0)


def count_le(data: Table, column: str, thresholds: list[float]) -> np.ndarray:
    """This node's counts of filtered non-missing values ≤ each threshold, as float64
    like the stats vector (−0.0 and 0.0 compare equal, NaN thresholds count every value,
    as DuckDB orders them)."""
    return _counts(data.sorted_numbers(column), thresholds)


def _counts(values: np.ndarray, thresholds: list[float]) -> np.ndarray:
    """:func:`count_le` of sorted values."""
    if not thresholds:
        return np.zeros(0)
    asked = np.asarray(thresholds, dtype=np.float64)
    counts = np.searchsorted(values, asked, side="right").astype(np.float64)
    counts[np.isnan(asked)] = values.size
    return counts


def _keys(values: np.ndarray) -> np.ndarray:
    """:func:`quantile_grid.key` of many floats at once."""
    bits = np.ascontiguousarray(values, dtype=np.float64).view(np.int64)
    return np.where(bits >= 0, bits, -(bits & np.int64(0x7FFF_FFFF_FFFF_FFFF)))


def key_sums(values: np.ndarray, brackets: list[list[int]], column: str = "") -> np.ndarray:
    """Per bracket (lo, hi] of keys, the sums of d = key(x) − lo and of d² over the
    ``values`` x there (this node's filtered non-missing values), as :data:`POWER_DIGITS`
    base-2^24 digits (float64, exact): pooled, a bracket holding one value gives that
    value's key, bit for bit."""
    keys = _keys(values)
    mask = (1 << SUM_DIGIT_BITS) - 1
    out: list[int] = []
    for lo, hi in brackets:
        offsets = [int(x) - lo for x in keys[(keys > lo) & (keys <= hi)]]
        for power, size in zip((1, 2), POWER_DIGITS, strict=True):
            total = sum(d ** power for d in offsets)
            if total >> (SUM_DIGIT_BITS * size):
                raise UserError(f"stats.quantiles.{column}: a bracket sum is beyond "
                                f"2^{SUM_DIGIT_BITS * size}")
            out += [(total >> (SUM_DIGIT_BITS * j)) & mask for j in range(size)]
    return np.array(out, dtype=np.float64)
