"""The ``train:`` section of a job spec: a model from the built-in zoo, trained with
federated averaging over BFV-encrypted updates, with DP-SGD where asked or required.

Nodes cannot see each other's rows, so anything that must be the same everywhere is
stated here: the class list (a node may hold only some classes, as when penguins are
split by island) and the feature scaling. For scaling, run a ``stats`` job first and copy
the pooled mean and standard deviation into ``standardize``; the nodes then scale with
the same numbers and the released model takes raw features (and, for regression with the
label listed, predicts in label units), because the scaling is part of the model. Scaling
each node by its own statistics would give every node a different input space and is
deliberately not offered.

The ``label`` is a column, or a condition over columns in the filter language
(``scifed.filters``), e.g. ``label: "body_mass_g > 4000"``: the node computes it for each
row, giving a binary classification with ``classes: [false, true]`` (the default for such
a label). Its columns count as referenced (they must exist, and rows missing one are
skipped), and its thresholds follow the node's grid as a filter's do.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from scifed.filters import condition_columns


def _nonblank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


def class_text(value: object) -> object:
    """A class as text: YAML reads ``classes: [0, 1, 2]`` as integers and ``[false, true]``
    as booleans, and the node compares each label value by the same text
    (``jobs.train.rows``), so ``0`` and ``"0"`` name the same class, as do ``true``
    and ``"true"``. Anything else is left for the string check to refuse."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return value


Column = Annotated[str, AfterValidator(_nonblank)]
ClassName = Annotated[str, BeforeValidator(class_text), AfterValidator(_nonblank)]
ModelKind = Literal["logistic_regression", "linear_regression", "mlp"]
Task = Literal["classification", "regression"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelSpec(_Strict):
    """Which zoo model; ``hidden`` lists the MLP's hidden layer widths."""

    kind: ModelKind
    hidden: list[Annotated[int, Field(ge=1, le=4096)]] = Field(default_factory=list,
                                                              max_length=8)

    @model_validator(mode="after")
    def _hidden_only_for_mlp(self) -> Self:
        if self.kind == "mlp" and not self.hidden:
            raise ValueError("an mlp needs at least one hidden layer size, e.g. hidden: [32]")
        if self.kind != "mlp" and self.hidden:
            raise ValueError(f"{self.kind} has no hidden layers; remove `hidden`")
        return self


class DPSpec(_Strict):
    """DP-SGD (Opacus) over the whole job: ``epsilon`` is the budget for all rounds."""

    epsilon: float = Field(gt=0, le=100)
    delta: float = Field(default=1e-5, gt=0, lt=1)
    max_grad_norm: float = Field(default=1.0, gt=0)


class TrainSpec(_Strict):
    """Parameters of a ``train`` job; columns must exist at every node."""

    features: list[Column] = Field(min_length=1, description="the model's input columns")
    label: Column = Field(description="a column, or a condition over columns (a derived "
                          "binary label, e.g. 'body_mass_g > 4000')")
    task: Task = Field(description="what the label is: classes or a number")
    classes: list[ClassName] | None = Field(
        default=None, description="label values, in output order (classification only); "
        "integers and booleans are kept as their text ('0', 'true')")
    model: ModelSpec = Field(description="the zoo model: kind, and an MLP's hidden "
                             "layer widths")
    rounds: int = Field(ge=1, le=200, description="federated rounds of training")
    local_epochs: int = Field(default=1, ge=1, le=50,
                              description="passes over its rows each node makes per round")
    batch_size: int = Field(default=32, ge=1, le=4096, description="rows per gradient step")
    lr: float = Field(default=0.1, gt=0, le=10, description="learning rate")
    validation_split: float = Field(default=0.2, ge=0, le=0.5, description="share of each "
                                    "node's rows held out to measure the model")
    seed: int = Field(default=0, ge=0, le=2**31 - 1,
                      description="seed of the initial weights and the splits")
    dp: DPSpec | None = Field(default=None, description="DP-SGD: the ε for all rounds, "
                              "δ and the gradient clipping norm")
    standardize: dict[Column, tuple[float, float]] = Field(
        default_factory=dict, description="feature -> (mean, std), e.g. from a stats job")
    min_nodes: int | None = Field(
        default=None, ge=1, description="fail the run when fewer nodes remain "
        "(default: the study's minimum)")
    min_node_classes: int = Field(
        default=2, ge=1, description="a node holding fewer distinct classes refuses")
    round_timeout: float = Field(default=600, ge=5, le=86400,
                                 description="seconds to wait for a round's replies")

    @field_validator("features")
    @classmethod
    def _unique_features(cls, v: list[str]) -> list[str]:
        dups = sorted({c for c in v if v.count(c) > 1})
        if dups:
            raise ValueError(f"duplicate feature: {', '.join(dups)}")
        return v

    @field_validator("standardize")
    @classmethod
    def _scales(cls, v: dict[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
        bad = [c for c, (mean, std) in v.items()
               if not (math.isfinite(mean) and math.isfinite(std) and std > 0)]
        if bad:
            raise ValueError(f"standardize needs a finite mean and a positive std for: "
                             f"{', '.join(bad)}")
        return v

    @model_validator(mode="before")
    @classmethod
    def _derived_classes(cls, data: object) -> object:
        """A derived label is false or true: those are its classes unless listed."""
        if isinstance(data, dict) and data.get("classes") is None \
                and condition_columns(data.get("label")) is not None \
                and data.get("task") == "classification":
            return {**data, "classes": ["false", "true"]}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.label in self.features:
            raise ValueError(f"the label '{self.label}' is also listed as a feature")
        derived = self.label_columns()
        if self.derived_label() is not None:
            if self.task != "classification":
                raise ValueError(f"the label '{self.label}' is a condition (false or true): "
                                 "it needs task: classification")
            if sorted(self.classes or []) != ["false", "true"]:
                raise ValueError(f"the label '{self.label}' is a condition: its classes are "
                                 "false and true (omit `classes`, or list [false, true])")
            leak = [c for c in derived if c in self.features]
            if leak:
                raise ValueError(f"the label '{self.label}' is computed from feature(s) "
                                 f"{', '.join(leak)}; remove them from `features`")
        scalable = [*self.features, *([self.label] if self.task == "regression" else [])]
        unknown = [c for c in self.standardize if c not in scalable]
        if unknown:
            raise ValueError(f"standardize names columns that are neither features nor a "
                             f"regression label: {', '.join(unknown)}")
        if self.task == "classification":
            if not self.classes or len(self.classes) < 2:
                raise ValueError("classification needs `classes`: at least 2 label values")
            if len(set(self.classes)) < len(self.classes):
                raise ValueError("a class is listed twice in `classes`")
            if self.model.kind == "linear_regression":
                raise ValueError("linear_regression is for task: regression")
        else:
            if self.classes:
                raise ValueError("`classes` is for task: classification")
            if self.model.kind == "logistic_regression":
                raise ValueError("logistic_regression is for task: classification")
        return self

    @property
    def n_outputs(self) -> int:
        return len(self.classes) if self.classes else 1

    def scaling(self) -> tuple[list[float], list[float]]:
        """Per-feature (means, stds) in feature order; unscaled features get (0, 1)."""
        pairs = [self.standardize.get(f, (0.0, 1.0)) for f in self.features]
        return [m for m, _ in pairs], [s for _, s in pairs]

    def target_scaling(self) -> tuple[float, float] | None:
        """(mean, std) of a regression label listed in ``standardize``: the model then
        predicts in label units through a fixed last layer, and trains on the scaled loss."""
        return self.standardize.get(self.label) if self.task == "regression" else None

    def derived_label(self) -> str | None:
        """The label's condition where it is derived (``body_mass_g > 4000``), else None."""
        return self.label if condition_columns(self.label) is not None else None

    def label_columns(self) -> list[str]:
        """The columns the label is read from: the label itself, or its condition's."""
        derived = condition_columns(self.label)
        return [self.label] if derived is None else derived

    def referenced_columns(self) -> list[str]:
        return list(dict.fromkeys([*self.features, *self.label_columns()]))
