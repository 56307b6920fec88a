"""Which rows of a node's dataset a training run may use: the job's features and label,
present, after the job's filter — with the checks that refuse a run before any row is
read out (unknown or non-numeric columns, labels outside the job's classes, a node with
too few classes or rows)."""

from __future__ import annotations

import numpy as np

from jobs.base import Limits, Table
from jobs.train.spec import TrainSpec
from scifed.errors import UserError
from scifed.filters import compile_filter
from scifed.record import NUMERIC_TYPES as _NUMERIC


def rows(spec: TrainSpec, table: Table, limits: Limits) -> tuple[np.ndarray, np.ndarray]:
    """Features (float32) and labels of the rows the job may use, after every check."""
    node, name = limits.node, table.name
    types = {f["name"]: f["type"] for f in limits.record.get("fields", [])}
    for col in spec.referenced_columns():
        if col not in types:
            raise UserError(f"node {node}: unknown column '{col}' in dataset {name} "
                            f"(columns: {', '.join(types)})")
    wrong = [c for c in spec.features if types[c] not in _NUMERIC]
    if spec.task == "regression" and types[spec.label] not in _NUMERIC:
        wrong.append(spec.label)
    if wrong:
        raise UserError(f"node {node}: column(s) {', '.join(wrong)} of {name} are not "
                        "numeric; features (and a regression label) must be")
    derived = spec.derived_label()
    conditions = [] if derived is None else [_condition(derived, types, limits)]
    data = table.arrays(spec.referenced_columns(), conditions)
    features = np.column_stack([np.asarray(data[c], dtype=np.float32) for c in spec.features])
    values = data["?0"] if derived is not None else np.asarray(data[spec.label])
    labels = _labels(values, spec, node, name)
    need = max(limits.k, 2)
    if len(labels) < need:
        raise UserError(f"node {node}: fewer than {need} usable rows in {name} match the "
                        "job; training needs at least that many")
    return features, labels


def _condition(expr: str, types: dict[str, str], limits: Limits) -> tuple[str, list]:
    """A derived label's SQL, checked as a filter is: known columns, matching constants,
    and thresholds on the node's grid (a label threshold splits rows as a filter's does)."""
    try:
        return compile_filter(expr, types, limits.grid)
    except UserError as exc:
        raise UserError(f"node {limits.node}: label: "
                        f"{str(exc).removeprefix('filter: ')}") from None


def _labels(values: np.ndarray, spec: TrainSpec, node: str, name: str) -> np.ndarray:
    if spec.task == "regression":
        return values.astype(np.float32)
    assert spec.classes is not None  # TrainSpec guarantees it for classification
    index = {c: i for i, c in enumerate(spec.classes)}
    mapped = np.array([index.get(label_text(v), index.get(str(v), -1)) for v in values],
                      dtype=np.int64)
    outside = int((mapped < 0).sum())
    if outside:
        raise UserError(f"node {node}: some rows of {name} have a '{spec.label}' value "
                        "outside the job's classes; list every class in `classes`")
    present = len(np.unique(mapped))
    if present < spec.min_node_classes:
        raise UserError(f"node {node}: '{spec.label}' takes fewer of the job's classes in "
                        f"{name} than the job asks of every node ({spec.min_node_classes}, "
                        "min_node_classes)")
    return mapped


def label_text(value: object) -> str:
    """A label value as the text a class is named by (``spec.class_text``): booleans as
    ``true``/``false`` and whole numbers without a decimal point, so ``classes: [0, 1]``
    matches an integer column and one the file stores as floats (``1.0``) alike."""
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    return str(value)
