"""Differential privacy for the node's statistics contribution: the blocks of the stats
vector and one row's L1 effect on each (the mechanism and the bounds are
:mod:`jobs.privacy`'s). Quantiles are refused under DP.
"""

from __future__ import annotations

import numpy as np

from jobs.privacy import Block, DPRequest, add_laplace, magnitude, report
from jobs.privacy import clipping_bounds as _bounds
from jobs.stats.compute import Layout
from jobs.stats.spec import StatsSpec
from scifed.errors import UserError


def blocks(layout: Layout, spec: StatsSpec,
           bounds: dict[str, tuple[float, float]]) -> list[Block]:
    out = [Block("rows", [Layout.ROWS], 1.0, True)]

    def b(col: str) -> float:
        return magnitude(bounds[col])

    for col, sl in layout.columns.items():
        s = sl.start
        out += [Block(f"{col}: n, missing", [s, s + 1], 1.0, True),
                Block(f"{col}: sum", [s + 2], b(col), False),
                Block(f"{col}: sum of squares", [s + 3], b(col) ** 2, False)]
    for col, sl in layout.histograms.items():
        out.append(Block(f"histogram {col}", list(range(sl.start, sl.stop - 1)), 1.0, True))
    for col, sl in layout.groups.items():
        out.append(Block(f"groups {col}", list(range(sl.start, sl.stop - 1)), 1.0, True))
    for (x, y), sl in layout.pairs.items():
        s = sl.start
        out += [Block(f"{x}~{y}: n", [s], 1.0, True),
                Block(f"{x}~{y}: sum {x}", [s + 1], b(x), False),
                Block(f"{x}~{y}: sum {y}", [s + 2], b(y), False),
                Block(f"{x}~{y}: sum {x}²", [s + 3], b(x) ** 2, False),
                Block(f"{x}~{y}: sum {y}²", [s + 4], b(y) ** 2, False),
                Block(f"{x}~{y}: sum {x}·{y}", [s + 5], b(x) * b(y), False)]
    return out


def clipping_bounds(spec: StatsSpec, record: dict) -> dict[str, tuple[float, float]]:
    """Bounds for every column whose sums are released."""
    request: DPRequest | None = spec.dp
    return _bounds([*spec.columns, *spec.correlation], request, record, "stats.dp.bounds")


def add_noise(vec: np.ndarray, layout: Layout, spec: StatsSpec,
              bounds: dict[str, tuple[float, float]], epsilon: float) -> dict:
    """Noise `vec` in place; returns the mechanism report released with the result."""
    if spec.quantiles:
        raise UserError("stats.quantiles: exact quantiles are not available under "
                        "differential privacy; use a histogram")
    parts = add_laplace(vec, blocks(layout, spec, bounds), epsilon)
    # The suppression flags would say whether a true count was below k: not released.
    for sl in [*layout.histograms.values(), *layout.groups.values()]:
        vec[sl.stop - 1] = 0.0
    vec[Layout.ROWS_FLAG] = 0.0
    return report(epsilon, parts, bounds)
