"""Differential privacy for the node's statistics contribution, with OpenDP.

The node adds the noise itself, to its own contribution, before encryption: whatever
the release node or the researcher does afterwards is post-processing. Neighbouring
datasets differ by adding or removing one row (unbounded DP). The ε of the query is
split evenly over the released blocks (basic composition); counts get discrete Laplace
noise so they stay integers, sums of clipped values continuous Laplace noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import opendp.prelude as dp

from jobs.stats.compute import Layout
from jobs.stats.spec import StatsSpec
from scifed.errors import UserError

dp.enable_features("contrib")


@dataclass(frozen=True)
class Block:
    """Vector positions released together, and one row's largest L1 effect on them."""

    name: str
    index: list[int]
    sensitivity: float
    integer: bool


def blocks(layout: Layout, spec: StatsSpec,
           bounds: dict[str, tuple[float, float]]) -> list[Block]:
    out = [Block("rows", [Layout.ROWS], 1.0, True)]

    def b(col: str) -> float:
        lo, hi = bounds[col]
        return max(abs(lo), abs(hi))

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
    """Bounds for every column whose sums are released: the job's, else the dataset's
    declared Table Schema constraints (minimum / maximum)."""
    declared = {}
    for f in record.get("fields", []):
        c = f.get("constraints") or {}
        if c.get("minimum") is not None and c.get("maximum") is not None:
            declared[f["name"]] = (float(c["minimum"]), float(c["maximum"]))
    given = {c: (float(lo), float(hi)) for c, (lo, hi) in (spec.dp.bounds if spec.dp else {})
             .items()}
    out = {}
    for col in dict.fromkeys([*spec.columns, *spec.correlation]):
        rng = given.get(col) or declared.get(col)
        if rng is None:
            raise UserError(f"stats.dp.bounds: differential privacy needs clipping bounds for "
                            f"'{col}': give stats.dp.bounds.{col}: [min, max] or declare "
                            "constraints.minimum/maximum in the dataset's metadata")
        if not rng[0] < rng[1]:
            raise UserError(f"stats.dp.bounds.{col}: minimum must be below maximum")
        out[col] = rng
    return out


def add_noise(vec: np.ndarray, layout: Layout, spec: StatsSpec,
              bounds: dict[str, tuple[float, float]], epsilon: float) -> dict:
    """Noise `vec` in place; returns the mechanism report released with the result."""
    if spec.quantiles:
        raise UserError("stats.quantiles: exact quantiles are not available under "
                        "differential privacy; use a histogram")
    parts = blocks(layout, spec, bounds)
    eps_each = epsilon / len(parts)
    for blk in parts:
        scale = blk.sensitivity / eps_each
        if blk.integer:
            meas = dp.m.make_laplace(dp.vector_domain(dp.atom_domain(T=int)),
                                     dp.l1_distance(T=int), scale=scale)
            vec[blk.index] = meas([int(round(v)) for v in vec[blk.index]])
        else:
            meas = dp.m.make_laplace(dp.vector_domain(dp.atom_domain(T=float, nan=False)),
                                     dp.l1_distance(T=float), scale=scale)
            vec[blk.index] = meas([float(v) for v in vec[blk.index]])
    # The suppression flags would say whether a true count was below k: not released.
    for sl in [*layout.histograms.values(), *layout.groups.values()]:
        vec[sl.stop - 1] = 0.0
    vec[Layout.ROWS_FLAG] = 0.0
    return {"mechanism": "Laplace (discrete for counts), OpenDP " + dp.__version__,
            "neighbouring": "add or remove one row", "epsilon": epsilon, "delta": 0.0,
            "composition": f"basic, ε/{len(parts)} per block",
            "clipping_bounds": {c: list(b) for c, b in bounds.items()},
            "blocks": [{"block": b.name, "sensitivity": b.sensitivity,
                        "scale": b.sensitivity / eps_each} for b in parts]}
