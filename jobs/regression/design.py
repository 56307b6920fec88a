"""The design matrix, at a node: the model's complete rows of the node's filtered data,
and the dummy columns fixed by the federated vocabulary.

The column layout is a pure function of the model and the vocabulary (the union of every
node's levels), so every node builds the same columns in the same order and the release
node can name them: ``Intercept``, a numeric column under its name, and a categorical
column as one dummy per level but the reference, named as statsmodels does
(``C(origin)[T.Japan]``). The reference level is the first in sorted order (numerically
sorted where every level reads as a number, as pandas sorts such a column). Without an
intercept the first categorical term is coded in full (``C(origin)[Europe]``), as patsy
does, so the model spans the same space.

Rows with a missing value in any model column are dropped (statsmodels' ``missing='drop'``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from jobs.base import Table
from jobs.regression.formula import Model
from scifed.errors import UserError


def sort_levels(levels: list[str]) -> list[str]:
    """Sorted as pandas sorts the column: by value where every level is a number."""
    try:
        return sorted(levels, key=float)
    except ValueError:
        return sorted(levels)


@dataclass(frozen=True)
class Layout:
    names: list[str]                       # design columns, in order
    levels: dict[str, list[str]]           # categorical column -> its coded levels
    known: dict[str, list[str]]            # categorical column -> every level (sorted)
    full: str | None                       # the categorical coded in full (no intercept)

    @property
    def p(self) -> int:
        return len(self.names)

    @classmethod
    def build(cls, model: Model, vocab: dict[str, list[str]]) -> Layout:
        names = ["Intercept"] if model.intercept else []
        levels: dict[str, list[str]] = {}
        known: dict[str, list[str]] = {}
        full = None
        for term in model.terms:
            if not term.categorical:
                names.append(term.column)
                continue
            if term.column not in vocab:
                raise ValueError(f"the vocabulary lacks categorical column {term.column!r}")
            ordered = sort_levels(list(vocab[term.column]))
            known[term.column] = ordered
            if not model.intercept and full is None:
                full = term.column
                levels[term.column] = ordered
                names += [f"C({term.column})[{v}]" for v in ordered]
            else:
                levels[term.column] = ordered[1:]
                names += [f"C({term.column})[T.{v}]" for v in ordered[1:]]
        return cls(names, levels, known, full)


def check_columns(model: Model, table: Table, family: str) -> None:
    """Unknown columns, and a text predictor written without C(), refused by name."""
    table.require(model.columns, "regression", numeric=False)
    check_terms(model, table, "regression")
    for col in model.offsets:
        try:
            table.require([col], "regression", numeric=True)
        except UserError:
            raise UserError(f"regression: the offset column {col!r} is not numeric") from None
    try:
        table.require([model.response], "regression", numeric=True)
    except UserError:
        raise UserError(f"regression: the response {model.response!r} is not numeric; a "
                        f"{family} model needs numbers"
                        + (" (0 and 1)" if family == "binomial" else "")) from None


def check_terms(model: Model, table: Table, field: str) -> None:
    """A predictor must be numeric unless written C(column); ``field`` names the spec field
    in the message."""
    for term in model.terms:
        if term.categorical:
            continue
        try:
            table.require([term.column], field, numeric=True)
        except UserError:
            raise UserError(f"{field}: predictor {term.column!r} is not numeric; write "
                            f"C({term.column}) to use it as a categorical predictor") from None


@dataclass(frozen=True)
class Rows:
    """This node's complete rows: the response and each model column's values."""

    y: np.ndarray
    numeric: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]   # categorical column -> text labels

    @property
    def n(self) -> int:
        return int(self.y.size)


def read(model: Model, table: Table) -> Rows:
    """The filtered rows with every model column present (one query)."""
    cols = model.columns
    cats = set(model.factors)
    exprs = [table.category(c) if c in cats else table.number(c) for c in cols]
    present = " AND ".join(f"c{i} IS NOT NULL" for i in range(len(cols)))
    rows = table.query(exprs, f"SELECT * FROM d WHERE {present}")
    data = list(zip(*rows, strict=True)) if rows else [() for _ in cols]
    values = dict(zip(cols, data, strict=True))
    numeric = {c: np.asarray(values[c], dtype=np.float64) for c in cols if c not in cats}
    labels = {c: np.asarray(values[c], dtype=object) for c in cols if c in cats}
    return Rows(numeric[model.response], numeric, labels)


def offset(model: Model, rows: Rows, node: str) -> np.ndarray:
    """The linear predictor's offset per row: the offset column plus log(exposure)."""
    out = np.zeros(rows.n)
    if model.offset is not None:
        out += rows.numeric[model.offset]
    if model.exposure is not None:
        exposure = rows.numeric[model.exposure]
        if (exposure <= 0).any():
            raise UserError(f"node {node}: regression: the exposure {model.exposure!r} must "
                            "be positive in every complete row")
        out += np.log(exposure)
    return out


def matrix(model: Model, layout: Layout, rows: Rows) -> np.ndarray:
    """The n × p design matrix in layout order."""
    parts = [np.ones(rows.n)] if model.intercept else []
    for term in model.terms:
        if term.categorical:
            labels = rows.labels[term.column]
            coded = layout.levels[term.column]
            unknown = set(labels.tolist()) - set(layout.known[term.column])
            if unknown:
                raise UserError(f"regression: column {term.column!r} has {len(unknown)} "
                                "level(s) outside the agreed vocabulary; the data changed "
                                "during the job")
            parts += [(labels == v).astype(np.float64) for v in coded]
        else:
            parts.append(rows.numeric[term.column])
    return np.column_stack(parts) if parts else np.zeros((rows.n, 0))

