"""Trainability (Q9): whether a simple model learns the declared target from the other
columns, with fixed seeds.

Fast mode runs the permutation test of Q9b with 19 permutations instead of 99; its p
cannot go below 1/20 = 0.05, so there Q9b passes at that floor.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import balanced_accuracy_score, r2_score
from sklearn.model_selection import (
    KFold,
    StratifiedKFold,
    cross_val_predict,
    permutation_test_score,
    train_test_split,
)
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor
from sklearn.utils import resample

from node.scorecard.data import _Data
from scifed.scorecard import BANDS, Band, MetricResult, Task, labels_of, measured, not_applicable

SEED = 0
MAX_ROWS = 20_000  # Q9 trains on a stratified sample of at most this many rows
PERMUTATIONS = {"full": 99, "fast": 19}
FOLDS = 5
LEAKAGE_FOLDS = 3


def _preprocess(numeric: list[str], categorical: list[str]) -> ColumnTransformer:
    """Median impute + standardise numerics; mode impute + one-hot (min_frequency=5)."""
    return ColumnTransformer([
        ("numeric", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()),
         numeric),
        ("categorical", make_pipeline(
            SimpleImputer(strategy="most_frequent"),
            OneHotEncoder(min_frequency=5, handle_unknown="infrequent_if_exist")),
         categorical),
    ])


def _model_inputs(frame: pd.DataFrame, numeric: list[str],
                 categorical: list[str]) -> pd.DataFrame:
    """Features as scikit-learn takes them: floats, and text with NaN for missing."""
    out = frame[numeric].astype(float)
    for c in categorical:
        column = frame[c]
        out[c] = column.astype(object).where(column.notna(), np.nan).map(
            lambda v: v if v is np.nan else str(v))
    return out


def _sentinel(x: pd.Series, y: pd.Series, numeric: bool, task: Task) -> float:
    """Cross-validated score of a depth-2 tree on one feature (Q9c)."""
    encode: list[Any] = [SimpleImputer(strategy="median" if numeric else "most_frequent")]
    if not numeric:
        encode.append(OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1))
    if task == "classification":
        tree: Any = DecisionTreeClassifier(max_depth=2, random_state=SEED)
        cv: Any = StratifiedKFold(min(LEAKAGE_FOLDS, int(y.value_counts().min())),
                                  shuffle=True, random_state=SEED)
    else:
        tree, cv = DecisionTreeRegressor(max_depth=2, random_state=SEED), KFold(
            LEAKAGE_FOLDS, shuffle=True, random_state=SEED)
    pred = cross_val_predict(make_pipeline(*encode, tree), x.to_frame(), y, cv=cv)
    return _score(task, y, pred)


def _score(task: Task, y: pd.Series, pred: np.ndarray) -> float:
    if task == "classification":
        return float(balanced_accuracy_score(y, pred))
    return float(r2_score(y, pred))


def _trainability(data: _Data, mode: Literal["fast", "full"],
                  step: Callable[[str], None]) -> dict[str, MetricResult]:
    metrics = ("Q9a", "Q9b", "Q9c", "Q9d")
    if data.target is None or data.task is None:
        return {m: not_applicable(m, "no target declared") for m in metrics}
    numeric, categorical = data.features()
    if not numeric and not categorical:
        return {m: not_applicable(m, "no feature columns (all are ids, partitions, "
                                  "free text or of other types)") for m in metrics}
    task = data.task
    rows = data.frame[data.frame[data.target].notna()]
    x = _model_inputs(rows, numeric, categorical)
    if task == "classification":
        y = labels_of(rows[data.target])
        counts = y.value_counts()
        if len(counts) < 2 or counts.min() < 2:
            reason = ("the target has a single class" if len(counts) < 2 else
                      f"class {counts.index[-1]} has a single row; cross-validation needs two")
            return {m: not_applicable(m, reason) for m in metrics}
        if len(y) > MAX_ROWS:
            x, _, y, _ = train_test_split(x, y, train_size=MAX_ROWS, stratify=y,
                                          random_state=SEED)
        folds = min(FOLDS, int(y.value_counts().min()))
        cv: Any = StratifiedKFold(folds, shuffle=True, random_state=SEED)
        model: Any = LogisticRegression(max_iter=1000)
        scoring = "balanced_accuracy"
    else:
        y = rows[data.target].astype(float)
        if len(y) > MAX_ROWS:
            x, _, y, _ = train_test_split(x, y, train_size=MAX_ROWS, random_state=SEED)
        folds = FOLDS
        cv, model, scoring = KFold(FOLDS, shuffle=True, random_state=SEED), Ridge(), "r2"
    pipeline = Pipeline([("prepare", _preprocess(numeric, categorical)), ("model", model)])
    setting = (f"{len(y)} rows, {folds}-fold CV, seed {SEED}; {len(numeric)} numeric and "
               f"{len(categorical)} categorical features")

    step("trainability: cross-validated baseline")
    pred = cross_val_predict(pipeline, x, y, cv=cv)
    score = _score(task, y, pred)
    if task == "classification":
        k = y.nunique()
        lift = (score - 1 / k) / (1 - 1 / k)
        q9a = measured("Q9a", lift, f"balanced accuracy {score:.4f} over {k} classes "
                       f"(chance {1 / k:.4f}), L2 logistic regression; {setting}")
    else:
        q9a = measured("Q9a", score, f"cross-validated R² of ridge regression; {setting}")

    permutations = PERMUTATIONS[mode]
    step(f"trainability: permutation test ({permutations} permutations)")
    _, _, p = permutation_test_score(pipeline, x, y, cv=cv, n_permutations=permutations,
                                     scoring=scoring, random_state=SEED)
    floor = 1 / (permutations + 1)
    band = Band(max(BANDS["Q9b"].good, floor), BANDS["Q9b"].fair, higher=False)
    q9b = measured("Q9b", float(p), f"{permutations} permutations ({mode} mode), p cannot "
                   f"go below {floor:.4f}", band)

    step("trainability: leakage sentinel")
    best = {c: _sentinel(x[c], y, c in numeric, task) for c in x.columns}
    top = max(best, key=lambda c: best[c])
    unit = "balanced accuracy" if task == "classification" else "R²"
    q9c = measured("Q9c", best[top], f"best single feature {top}: {unit} {best[top]:.4f} "
                   f"(depth-2 tree, {LEAKAGE_FOLDS}-fold)")

    step("trainability: learning curve")
    half = np.empty(len(y), dtype=object if task == "classification" else float)
    for train, test in cv.split(x, y):
        stratify = y.iloc[train] if task == "classification" else None
        sub = resample(train, n_samples=len(train) // 2, replace=False, stratify=stratify,
                       random_state=SEED)
        fitted = pipeline.fit(x.iloc[sub], y.iloc[sub])
        half[test] = fitted.predict(x.iloc[test])
    gain = score - _score(task, y, half)
    q9d = measured("Q9d", gain, f"{unit} with all training rows minus with half of them")
    return {"Q9a": q9a, "Q9b": q9b, "Q9c": q9c, "Q9d": q9d}
