"""A node's side of a ``crosstab`` job: its levels (the vocabulary phase), its cell
counts as one vector, and the row sets those counts sum over.

Rows where any of the table's columns is missing are dropped, as ``pd.crosstab`` does.
The layout is a function of the spec and the vocabulary (every node's levels, united
and sorted as pandas sorts them) only: one count per cell, layer by layer, row by row,
then one flag per cell. A node withholds each of its own cells with 0 < count < k (the
count becomes 0 and the cell's flag 1), so a node's small cell never enters any sum —
neither the table nor a margin, which the release node forms from these same cells.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from jobs.base import Table
from jobs.crosstab.spec import CrosstabSpec
from jobs.regression.design import sort_levels


@dataclass(frozen=True)
class Layout:
    rows: list[str]
    columns: list[str]
    layers: list[str | None]   # [None] for a two-way table

    @classmethod
    def build(cls, spec: CrosstabSpec, vocab: dict[str, list[str]]) -> Layout:
        missing = [c for c in spec.referenced_columns() if c not in vocab]
        if missing:
            raise ValueError(f"the vocabulary lacks column(s) {', '.join(missing)}")
        layers = sort_levels(list(vocab[spec.layers])) if spec.layers else [None]
        return cls(sort_levels(list(vocab[spec.rows])),
                   sort_levels(list(vocab[spec.columns])), layers)

    @property
    def shape(self) -> tuple[int, int, int]:
        return len(self.layers), len(self.rows), len(self.columns)

    @property
    def cells(self) -> int:
        a, b, c = self.shape
        return a * b * c

    def index(self) -> list[tuple[str | None, str, str]]:
        """(layer, row, column) of each cell, in vector order."""
        return [(g, r, c) for g in self.layers for r in self.rows for c in self.columns]


def counts(table: Table, spec: CrosstabSpec) -> Counter:
    """(layer, row, column) -> rows, over the complete rows (one query)."""
    cols = spec.referenced_columns()
    present = " AND ".join(f"c{i} IS NOT NULL" for i in range(len(cols)))
    names = ", ".join(f"c{i}" for i in range(len(cols)))
    got = table.query([table.category(c) for c in cols],
                      f"SELECT {names}, count(*) FROM d WHERE {present} GROUP BY {names}")
    out: Counter = Counter()
    for row in got:
        r, c = row[0], row[1]
        g = row[2] if spec.layers else None
        out[(g, r, c)] += int(row[-1])
    return out


def levels(found: Counter, spec: CrosstabSpec) -> dict[str, Counter]:
    """Each column's levels with the complete rows that hold them."""
    out: dict[str, Counter] = {c: Counter() for c in spec.referenced_columns()}
    for (g, r, c), n in found.items():
        out[spec.rows][r] += n
        out[spec.columns][c] += n
        if spec.layers:
            out[spec.layers][g] += n
    return out


def contribution(found: Counter, layout: Layout, k: int) -> np.ndarray:
    """Cells then flags; cells with 0 < count < k withheld (see the module docstring)."""
    cells = np.array([float(found.get(key, 0)) for key in layout.index()])
    withheld = (cells > 0) & (cells < k)
    cells[withheld] = 0.0
    return np.concatenate([cells, withheld.astype(np.float64)])


def row_sets(table: Table, spec: CrosstabSpec, layout: Layout) -> list[tuple[str, list]]:
    """The complete rows, and each cell's rows within them."""
    cols = spec.referenced_columns()
    exprs = [table.category(c) for c in cols]
    complete = " AND ".join(f"{e} IS NOT NULL" for e in exprs)
    cell = " AND ".join(f"{e} = ?" for e in exprs)
    sets: list[tuple[str, list]] = [(complete, [])]
    for g, r, c in layout.index():
        sets.append((cell, [r, c, *([g] if spec.layers else [])]))
    return sets
