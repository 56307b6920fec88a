"""Where the quantile search counts, and what its pooled counts already decide.

The search (`quantiles.py`) learns the pooled count C(t) of values ≤ t at every
threshold it asks. A round asks a *grid* of many thresholds per column (a k-ary search,
not a bisection), chosen here from what is known so far:

* first round, nothing known but N: a signed grid m·10^e (m = 1…9, or 1, 2, 5, or 1 as
  the budget allows, e = −12…15 where a whole round's budget is free, else −6…15) with
  the float just below each point, so a value on it is pinned at once; where the
  researcher's job also released the column's mean and standard deviation, part of the
  budget goes to a fine grid over mean ± 4 sd;
* later rounds, inside each open bracket (lo, hi] of an order statistic: for a rounded
  release (k > 1), the ladder buckets (`disclosure.bucket`) of every step from the finest
  that fits, so that the bucket counts the rounding rule needs come in the same round and
  no separate rounding round is needed; for an exact release (k ≤ 1), the multiples of
  the finest 1-2-5 decimal step that fits, each with the float just below it (a value
  with few digits is pinned exactly); and in both, splits uniform in the order-preserving
  integer image of float64 (:func:`key`), which take any bracket to adjacent floats.

:func:`rounding` decides the rounding rule (`disclosure.round_to_k_rows`) from an
interval holding the quantile and bounds on C, without the exact value where the counts
already settle it. Whatever thresholds are chosen, results are exact: the choice only
changes how many rounds the search needs.
"""

from __future__ import annotations

import bisect
import math
import struct
from collections.abc import Callable

from jobs.stats.disclosure import LADDER, bucket


def key(x: float) -> int:
    """Order-preserving integer for a float64 (−0.0 and 0.0 share key 0)."""
    bits = struct.unpack("<q", struct.pack("<d", x))[0]
    return bits if bits >= 0 else -(bits & 0x7FFF_FFFF_FFFF_FFFF)


def value(k: int) -> float:
    """The float64 of an integer from :func:`key`."""
    bits = k if k >= 0 else (-k) | (1 << 63)
    return struct.unpack("<d", struct.pack("<Q", bits))[0]


TOP = key(math.inf)  # C(+inf) = N
BOTTOM = key(-math.inf) - 1  # below every value, C = 0; never sent as a threshold
_NINE, _125, _ONE = (1, 2, 3, 4, 5, 6, 7, 8, 9), (1, 2, 5), (1,)
_WIDE, _USUAL, _DEEP = range(-6, 16), range(-3, 10), range(-12, 16)
# first-round grids, finest first: (mantissas, exponents, the float below each point too,
# the decades 10^−6…10^15 beside them)
_FIRST = ((_NINE, _DEEP, True, False), (_NINE, _WIDE, True, False),
          (_NINE, _USUAL, True, True), (_125, _WIDE, True, False),
          (_125, _USUAL, True, True), (_ONE, _WIDE, True, False), (_ONE, _USUAL, True, False),
          (_ONE, _USUAL, False, False), (_ONE, range(0, 7), False, False))
_STEPS = (1, 2, 5)  # the decimal steps of an exact release's grid, times 10^e


def below(x: float) -> float:
    return math.nextafter(x, -math.inf)


def pinned_grid(points: list[float]) -> list[float]:
    """Each point and the float just below it: a value on a point is then pinned."""
    return [t for g in points for t in (g, below(g))]


def first_round(budget: int) -> list[float]:
    """Thresholds of a column's first round (nothing known but N): the finest signed
    m·10^e grid that fits ``budget`` (with the float below each point where it fits),
    0, and +inf (whose count checks N)."""
    for mantissas, exponents, pin, decades in _FIRST:
        points = [s * m * 10.0 ** e for e in exponents for m in mantissas for s in (1, -1)]
        if decades:
            points += [s * 10.0 ** e for e in _WIDE for s in (1, -1)]
        grid = sorted({*(pinned_grid([0.0, *points]) if pin else [0.0, *points]), math.inf})
        if len(grid) <= budget:
            return grid
    return [*key_splits(BOTTOM, TOP, budget - 1), math.inf]


def key_splits(lo: int, hi: int, count: int) -> list[float]:
    """Up to ``count`` thresholds uniform in key space strictly inside (lo, hi)."""
    gap = hi - lo
    if count <= 0 or gap <= 1:
        return []
    if gap - 1 <= count:
        return [value(k) for k in range(lo + 1, hi)]
    return [value(lo + gap * j // (count + 1)) for j in range(1, count + 1)]


def decimal_grid(lo: float, hi: float, budget: int) -> list[float]:
    """The multiples g of the finest decimal step 10^e·(1, 2 or 5) with at most
    ``budget`` // 2 of them in (lo, hi], each with the float below it. g is the float
    nearest the decimal (as a parser reads "4050" or "0.3"), so data written with that
    many digits lies exactly on the grid."""
    points = budget // 2
    if points < 1 or not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return []
    width = hi - lo
    if not math.isfinite(width) or width / points < 1e-300:
        return []
    e = math.floor(math.log10(width / points)) - 1
    for _ in range(6):
        for step in _STEPS:
            scale = step * 10.0 ** e
            if scale == 0.0:
                return []
            first, last = math.floor(lo / scale) + 1, math.floor(hi / scale)
            if last - first + 1 <= points:
                if max(abs(first), abs(last)) > 2 ** 52:
                    return []  # finer than the floats there: key splits do it
                grid = [float(f"{j * step}e{e}") for j in range(first, last + 1)]
                return pinned_grid([g for g in grid if lo < g <= hi])
        e += 1
    return []


def ladder_grid(lo: float, hi: float, budget: int) -> list[float]:
    """For a rounded release: the bucket thresholds of every ladder step from the
    finest one whose buckets, for all steps from it up, fit ``budget``, for every centre
    a quantile in [lo, hi] may round to. After the round the quantile lies in one bucket
    of that step and every bucket count the rule needs there is known."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return []
    for i in range(len(LADDER)):
        asked: set[float] = set()
        for step in LADDER[i:]:
            first, last = round(lo / step), round(hi / step)
            if 2 * (last - first + 1) > budget:
                break
            for m in range(first, last + 1):
                asked.update(bucket(m, step))
        else:
            if len(asked) <= budget:
                return sorted(asked)
    return []


Bounds = Callable[[float], tuple[int, int]]


def count_bounds(keys: list[int], counts: list[int]) -> Bounds:
    """C(t) bounds from the counts known at sorted ``keys`` (C is non-decreasing)."""
    def bounds(t: float) -> tuple[int, int]:
        k = key(t)
        i = bisect.bisect_left(keys, k)  # keys[0] is BOTTOM and keys[-1] TOP
        if keys[i] == k:
            return counts[i], counts[i]
        return counts[i - 1], counts[i]
    return bounds


def rounding(lo: float, hi: float, bounds: Bounds, k: int) -> tuple[float, float] | None:
    """`disclosure.round_to_k_rows` for a quantile known to lie in [lo, hi], from
    bounds on the pooled counts: (released value, step) — (nan, inf) if withheld — or
    None if the counts known do not decide it yet."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return None
    for step in LADDER:
        first, last = round(lo / step), round(hi / step)
        a, b = bucket(first, step)[0], bucket(last, step)[1]
        least = bounds(b)[0] - bounds(a)[1]
        most = bounds(b)[1] - bounds(a)[0]
        if most < k:
            continue  # every bucket it may round to holds fewer than k values
        if first == last and least >= k:
            return first * step, step
        return None
    return math.nan, math.inf
