"""Differential privacy shared by the aggregate job types: the ``dp:`` section a
researcher writes, the clipping bounds it needs, and OpenDP's Laplace mechanism.

The node adds the noise itself, to its own contribution, before encryption: whatever the
release node or the researcher does afterwards is post-processing. Neighbouring datasets
differ by adding or removing one row (unbounded DP). A type splits the query's ε over the
blocks of its vector it releases (basic composition) and names each block with one row's
largest L1 effect on it; counts get discrete Laplace noise so they stay integers, sums of
clipped values continuous Laplace noise.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import opendp.domains as dpd
import opendp.measurements as dpm
import opendp.metrics as dpx
import opendp.mod
from pydantic import Field, field_validator

from jobs.fields import Name, Strict
from jobs.limits import MAX_JOB_COLUMNS
from scifed.errors import UserError
from scifed.he import MAX_ABS_VALUE

# OpenDP's modules one by one, not ``opendp.prelude``: the prelude also loads its
# scikit-learn, Polars and NumPy extras (scikit-learn and SciPy, ~160 MB of every node's
# memory), and the Laplace mechanism needs none of them.
opendp.mod.enable_features("contrib")

MECHANISM = "Laplace (discrete for counts), OpenDP " + opendp.mod.__version__
NEIGHBOURING = "add or remove one row"


class DPRequest(Strict):
    """Differential privacy asked for by the researcher (the node's policy may also
    require it, and caps ε per query)."""

    epsilon: float | None = Field(default=None, gt=0, description="ε of this query")
    bounds: dict[Name, tuple[float, float]] = Field(
        default_factory=dict, description="column -> [min, max] clipping bounds")

    @field_validator("bounds")
    @classmethod
    def _few_bounds(cls, v: dict[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
        if len(v) > MAX_JOB_COLUMNS:
            raise ValueError(f"bounds for more than {MAX_JOB_COLUMNS} columns (the limit), "
                             f"got {len(v)}")
        return v


def clipping_bounds(columns: Iterable[str], request: DPRequest | None, record: dict,
                    field: str) -> dict[str, tuple[float, float]]:
    """Bounds for every listed column: the job's (``field``: where the researcher gives
    them, e.g. ``stats.dp.bounds``), else the dataset's declared Table Schema constraints
    (minimum / maximum). Never from the data: a bound read from the rows would leak."""
    declared = {}
    for f in record.get("fields", []):
        c = f.get("constraints") or {}
        if c.get("minimum") is not None and c.get("maximum") is not None:
            declared[f["name"]] = (float(c["minimum"]), float(c["maximum"]))
    given = {c: (float(lo), float(hi))
             for c, (lo, hi) in (request.bounds if request else {}).items()}
    out = {}
    for col in dict.fromkeys(columns):
        rng = given.get(col) or declared.get(col)
        if rng is None:
            raise UserError(f"{field}: differential privacy needs clipping bounds for "
                            f"'{col}': give {field}.{col}: [min, max] or declare "
                            "constraints.minimum/maximum in the dataset's metadata")
        if not rng[0] < rng[1]:
            raise UserError(f"{field}.{col}: minimum must be below maximum")
        out[col] = rng
    return out


def magnitude(bounds: tuple[float, float]) -> float:
    """The largest |value| a clipped column can take."""
    return max(abs(bounds[0]), abs(bounds[1]))


@dataclass(frozen=True)
class Block:
    """Vector positions released together, and one row's largest L1 effect on them."""

    name: str
    index: list[int]
    sensitivity: float
    integer: bool


def check_capacity(blocks: list[Block], epsilon: float, rows: int, field: str) -> None:
    """Refuse bounds so wide that a block could leave the range the encryption carries —
    decided from the bounds, ε and the dataset's catalogued row count alone, before any
    row is read. A check on the node's actual sums would be a refusal that depends on
    the rows (whether a filter selects anyone), outside ε."""
    limit = MAX_ABS_VALUE / 100  # what a node may add to the pooled sum of up to 100
    for b in blocks:
        scale = b.sensitivity * len(blocks) / epsilon
        if rows * b.sensitivity + 50 * scale > limit:  # the noise beyond 50 scales: e^-50
            raise UserError(f"{field}: the clipping bounds are too wide for this dataset "
                            f"({b.name} could exceed what the encryption carries); narrow "
                            "them")


def add_laplace(vec: np.ndarray, blocks: list[Block], epsilon: float) -> list[dict]:
    """Noise ``vec`` in place, ε split evenly over ``blocks``; the per-block report."""
    eps_each = epsilon / len(blocks)
    for blk in blocks:
        scale = blk.sensitivity / eps_each
        if blk.integer:
            meas = dpm.make_laplace(dpd.vector_domain(dpd.atom_domain(T=int)),
                                    dpx.l1_distance(T=int), scale=scale)
            vec[blk.index] = meas([int(round(v)) for v in vec[blk.index]])
        else:
            meas = dpm.make_laplace(dpd.vector_domain(dpd.atom_domain(T=float, nan=False)),
                                    dpx.l1_distance(T=float), scale=scale)
            vec[blk.index] = meas([float(v) for v in vec[blk.index]])
    return [{"block": b.name, "sensitivity": b.sensitivity, "scale": b.sensitivity / eps_each}
            for b in blocks]


def report(epsilon: float, blocks: list[dict], bounds: dict[str, tuple[float, float]],
           **extra) -> dict:
    """The mechanism report released with the result."""
    return {"mechanism": MECHANISM, "neighbouring": NEIGHBOURING, "epsilon": epsilon,
            "delta": 0.0, "composition": f"basic, ε/{len(blocks)} per block",
            "clipping_bounds": {c: list(b) for c, b in bounds.items()}, **extra,
            "blocks": blocks}
