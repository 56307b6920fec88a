"""The model a researcher asks for, parsed without reading any data: a statsmodels-like
formula (``mpg ~ weight + horsepower + C(origin)``) or explicit ``y`` / ``x`` lists.

Only what the federation can fit exactly is accepted: main effects of numeric columns and
of categorical ones written ``C(column)``, an intercept unless ``- 1`` or ``+ 0`` removes
it. Interactions, transforms (``I(...)``, ``np.log``) and contrasts other than treatment
coding are refused by name, so a researcher never gets a model other than the one asked.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_NAME = r"[A-Za-z_][A-Za-z0-9_.]*"
_COLUMN = re.compile(_NAME)
_CATEGORICAL = re.compile(rf"C\(\s*({_NAME})\s*\)")


@dataclass(frozen=True)
class Term:
    """One predictor: a numeric column (one design column) or a categorical one (a dummy
    column per level but the reference)."""

    column: str
    categorical: bool

    @property
    def label(self) -> str:
        return f"C({self.column})" if self.categorical else self.column


@dataclass(frozen=True)
class Model:
    response: str
    terms: tuple[Term, ...]
    intercept: bool
    offset: str | None = None     # a column added to the linear predictor
    exposure: str | None = None   # a column whose log is added to it

    @property
    def columns(self) -> list[str]:
        """Every data column the model reads, response first."""
        return list(dict.fromkeys([self.response, *(t.column for t in self.terms),
                                   *self.offsets]))

    @property
    def offsets(self) -> list[str]:
        return [c for c in (self.offset, self.exposure) if c is not None]

    @property
    def factors(self) -> list[str]:
        return [t.column for t in self.terms if t.categorical]


def parse_term(text: str) -> Term:
    """``weight`` or ``C(origin)``; anything else is refused with what is supported."""
    text = text.strip()
    m = _CATEGORICAL.fullmatch(text)
    if m:
        return Term(m.group(1), True)
    if _COLUMN.fullmatch(text):
        return Term(text, False)
    if ":" in text or "*" in text:
        raise ValueError(f"interaction {text!r} is not supported; list main effects only")
    if text.startswith("C(") and "," in text:
        raise ValueError(f"{text!r}: only treatment coding C(column) is supported "
                         "(the reference level is the first in sorted order)")
    raise ValueError(f"{text!r} is not a column name or C(column); transforms such as "
                     "I(...) or np.log(...) are not supported")


def parse_formula(formula: str) -> Model:
    """``y ~ a + b + C(g)``, ``- 1`` / ``+ 0`` for no intercept."""
    if formula.count("~") != 1:
        raise ValueError("a formula has one '~' between the response and the predictors, "
                         "e.g. 'mpg ~ weight + C(origin)'")
    left, right = (s.strip() for s in formula.split("~"))
    if not _COLUMN.fullmatch(left):
        raise ValueError(f"the response {left!r} must be one column name")
    intercept = True
    terms: list[Term] = []
    # split on + and - at the top level (no nesting beyond C(...) is accepted)
    tokens = re.findall(r"([+-]?)\s*([^+-]+)", "+" + right) if right else []
    if not tokens:
        raise ValueError("name at least one predictor (or 1 for the intercept alone)")
    for sign, body in tokens:
        body = body.strip()
        if body in ("0", "1"):
            if body == "0" or sign == "-":
                intercept = False
            continue
        if sign == "-":
            raise ValueError(f"removing {body!r} with '-' is not supported; leave it out")
        terms.append(parse_term(body))
    return build(left, terms, intercept)


def build(response: str, terms: list[Term], intercept: bool) -> Model:
    seen: set[str] = set()
    for t in terms:
        if t.column in seen:
            raise ValueError(f"column {t.column!r} appears twice among the predictors")
        if t.column == response:
            raise ValueError(f"the response {response!r} is also a predictor")
        seen.add(t.column)
    if not terms and not intercept:
        raise ValueError("the model has no predictor and no intercept")
    return Model(response, tuple(terms), intercept)
