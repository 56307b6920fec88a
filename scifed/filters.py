"""A small, safe row-filter language for jobs, compiled to a parameterised DuckDB predicate.

A researcher's ``filter:`` runs inside a node against data the researcher cannot see, so
it is never spliced into SQL as text. It is parsed with Python's own parser and only a
closed set of node types is accepted: boolean logic, comparisons, membership in a literal
list and null tests over known columns and constants. Every constant becomes a ``?``
parameter and every column a quoted identifier, so no input can change the query's shape.

Columns whose names are not Python identifiers are written in backticks, as in
``pandas.DataFrame.query``: ```Culmen Length (mm)` > 40``.

Where the node audits queries, a numeric constant compared with a numeric column must lie
on the column's *grid*: its declared ``resolution``, or else numbers of at most 2
significant digits. The auditor's refusals depend on the data, so with free thresholds a
researcher bisecting ``salary > t`` on answered / refused pins one person's salary to a
fraction of a cent (disclosure-control §2.4); on a grid the most it learns is one step.
The grid refusal itself depends only on the metadata and the constant, so it leaks
nothing, and it names the two nearest allowed values.
"""

from __future__ import annotations

import ast
import decimal
import keyword
from dataclasses import dataclass, field
from decimal import Decimal

from scifed.errors import UserError, excerpt, excerpt_repr
from scifed.record import NUMERIC_TYPES as _NUMERIC

MAX_LENGTH = 2000
MAX_DEPTH = 32
SIGNIFICANT_DIGITS = 2  # the grid of a numeric column that declares no resolution

_TEXT_LIKE = {"string", "date", "datetime", "time"}  # compared with str constants
_OPS = {ast.Eq: "=", ast.NotEq: "<>", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">="}
_FORBIDDEN = {
    ast.Call: "function calls are",
    ast.Attribute: "attribute access is",
    ast.Subscript: "subscripts are",
    ast.BinOp: "arithmetic is",
    ast.Lambda: "lambdas are",
    ast.JoinedStr: "f-strings are",
    ast.FormattedValue: "f-strings are",
    ast.NamedExpr: "assignment expressions (:=) are",
    ast.IfExp: "conditional expressions are",
    ast.ListComp: "comprehensions are",
    ast.SetComp: "comprehensions are",
    ast.DictComp: "comprehensions are",
    ast.GeneratorExp: "comprehensions are",
    ast.Await: "await is",
    ast.Starred: "starred expressions are",
    ast.Dict: "dicts are",
    ast.Set: "sets are",
    ast.Slice: "slices are",
}


def check_on_grid(column: str, value: float, grid: dict[str, float | None] | None,
                  word: str) -> None:
    """The grid rule of a filter threshold for a number used the same way elsewhere (a
    histogram edge splits rows exactly as ``column < edge`` does)."""
    try:
        _Compiler("", {}, {column: "number"}, grid).on_grid(column, "number", value,
                                                            ast.Constant(value), word)
    except UserError as exc:
        raise UserError(str(exc).removeprefix("filter: ")) from None


def compile_filter(expr: str, columns: dict[str, str],
                   grid: dict[str, float | None] | None = None) -> tuple[str, list]:
    """Compile ``expr`` to ``(sql, params)`` for ``WHERE {sql}`` with ``?`` parameters.

    ``columns`` maps each column name to its Table Schema type; it decides which names
    exist and which constants they may be compared with. ``grid`` coarsens numeric
    constants where the node audits queries: it maps numeric columns to their declared
    resolution, or to None for the default of :data:`SIGNIFICANT_DIGITS` significant
    digits (a numeric column it does not list gets the default too); ``grid=None`` (G1)
    allows any constant. Raises UserError naming the first construct, column or value
    that is not allowed.
    """
    if not isinstance(expr, str) or not expr.strip():
        raise UserError("filter: empty expression")
    if len(expr) > MAX_LENGTH:
        raise UserError(f"filter: longer than {MAX_LENGTH} characters (the limit), "
                        f"got {len(expr)}")
    text, quoted = _replace_backticks(expr)
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise UserError(f"filter: not a valid expression ({excerpt(exc.msg, 100)})") from None
    except (RecursionError, MemoryError):
        raise UserError(f"filter: nested deeper than {MAX_DEPTH} levels (the limit)") from None
    compiler = _Compiler(text.strip(), quoted, columns, grid)
    sql = compiler.condition(tree.body, 1)
    return sql, compiler.params


def condition_columns(expr: str) -> list[str] | None:
    """The columns a condition names, in order of first use; None where ``expr`` is not a
    condition (a comparison, ``in``, ``is None``, and/or/not) but, say, a bare column
    name, even one that is no identifier (``Culmen Length (mm)``). For fields that take
    either a column or a condition, such as a training job's derived ``label``; the
    condition itself is checked by :func:`compile_filter`, against the node's columns."""
    if not isinstance(expr, str) or len(expr) > MAX_LENGTH:
        return None
    try:
        text, quoted = _replace_backticks(expr)
        tree = ast.parse(text.strip(), mode="eval")
    except (UserError, SyntaxError, RecursionError, MemoryError, ValueError):
        return None
    body = tree.body
    if not (isinstance(body, ast.Compare | ast.BoolOp)
            or isinstance(body, ast.UnaryOp) and isinstance(body.op, ast.Not)):
        return None
    names = [quoted.get(n.id, n.id) for n in ast.walk(body) if isinstance(n, ast.Name)]
    return list(dict.fromkeys(names))


def _replace_backticks(expr: str) -> tuple[str, dict[str, str]]:
    """Swap each `quoted name` for a placeholder identifier the parser accepts."""
    prefix = "_bq"
    while prefix in expr:
        prefix += "_"
    out: list[str] = []
    quoted: dict[str, str] = {}
    i, n = 0, len(expr)
    while i < n:
        ch = expr[i]
        if ch in "'\"":  # copy a string literal verbatim, backticks inside included
            end = _string_end(expr, i)
            out.append(expr[i:end])
            i = end
        elif ch == "`":
            close = expr.find("`", i + 1)
            if close < 0:
                raise UserError("filter: unterminated `quoted column name`")
            name = expr[i + 1 : close]
            if not name:
                raise UserError("filter: empty `quoted column name`")
            placeholder = f"{prefix}{len(quoted)}"
            quoted[placeholder] = name
            out.append(placeholder)
            i = close + 1
        else:
            out.append(ch)
            i += 1
    return "".join(out), quoted


def _string_end(text: str, start: int) -> int:
    """Index just past the string literal opening at ``start`` (the parser checks the rest)."""
    quote = text[start] * 3 if text.startswith(text[start] * 3, start) else text[start]
    i = start + len(quote)
    while i < len(text):
        if text[i] == "\\":
            i += 2
        elif text.startswith(quote, i):
            return i + len(quote)
        else:
            i += 1
    return len(text)


@dataclass
class _Compiler:
    source: str
    quoted: dict[str, str]
    columns: dict[str, str]
    grid: dict[str, float | None] | None = None
    params: list = field(default_factory=list)

    def fail(self, what: str, node: ast.AST) -> UserError:
        return UserError(f"filter: {what} ({self.snippet(node)})")

    def snippet(self, node: ast.AST) -> str:
        if isinstance(node, ast.Call):
            func = ast.get_source_segment(self.source, node.func) or "function"
            return f"`{excerpt(self.restore(func), 60)}(...)`"
        text = self.restore(ast.get_source_segment(self.source, node) or type(node).__name__)
        return f"`{text if len(text) <= 60 else text[:57] + '...'}`"

    def restore(self, text: str) -> str:
        for placeholder, name in self.quoted.items():
            text = text.replace(placeholder, f"`{name}`")
        return text

    def check(self, node: ast.AST, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise UserError(f"filter: nested deeper than {MAX_DEPTH} levels (the limit)")
        for kind, what in _FORBIDDEN.items():
            if isinstance(node, kind):
                raise self.fail(f"{what} not allowed", node)

    # -- boolean structure --------------------------------------------------------------
    def condition(self, node: ast.expr, depth: int) -> str:
        self.check(node, depth)
        if isinstance(node, ast.BoolOp):
            joiner = " AND " if isinstance(node.op, ast.And) else " OR "
            return "(" + joiner.join(self.condition(v, depth + 1) for v in node.values) + ")"
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            return f"(NOT {self.condition(node.operand, depth + 1)})"
        if isinstance(node, ast.Compare):
            return self.compare(node, depth)
        if isinstance(node, ast.Name):
            name, kind = self.column(node)
            if kind != "boolean":
                raise self.fail(f"column {excerpt_repr(name, 60)} is {kind}, not boolean; "
                                "compare it with a value", node)
            return quote_identifier(name)
        raise self.fail("expected a condition (a comparison, `in`, `is None`, and/or/not)",
                        node)

    def compare(self, node: ast.Compare, depth: int) -> str:
        parts = []
        left = node.left
        for op, right in zip(node.ops, node.comparators, strict=True):
            parts.append(self.pair(left, op, right, depth + 1))
            left = right
        return parts[0] if len(parts) == 1 else "(" + " AND ".join(parts) + ")"

    def pair(self, left: ast.expr, op: ast.cmpop, right: ast.expr, depth: int) -> str:
        self.check(left, depth)
        self.check(right, depth)
        if isinstance(op, ast.Is | ast.IsNot):
            if not (isinstance(right, ast.Constant) and right.value is None):
                raise self.fail("`is` / `is not` only test for None", right)
            name, _ = self.column(left)
            test = "IS NOT NULL" if isinstance(op, ast.IsNot) else "IS NULL"
            return f"({quote_identifier(name)} {test})"
        if isinstance(op, ast.In | ast.NotIn):
            name, kind = self.column(left)
            if not isinstance(right, ast.List | ast.Tuple):
                raise self.fail("`in` needs a list of values, like `x in ['a', 'b']`", right)
            if not right.elts:
                raise self.fail("`in` needs a non-empty list", right)
            marks = []
            for element in right.elts:
                value = self.constant(element, depth + 1)
                if value is None:
                    raise self.fail("None cannot be in an `in` list; test it with `is None`",
                                    element)
                self.match(name, kind, value, element)
                self.on_grid(name, kind, value, element, "value")
                marks.append(self.param(value))
            negate = "NOT " if isinstance(op, ast.NotIn) else ""
            return f"({quote_identifier(name)} {negate}IN ({', '.join(marks)}))"
        operands: list[str] = []
        names: list[tuple[str, str]] = []
        values: list[tuple[str | int | float | bool, ast.expr, int]] = []
        for side in (left, right):
            if isinstance(side, ast.Name):
                names.append(self.column(side))
                operands.append(quote_identifier(names[-1][0]))
            else:
                value = self.constant(side, depth)
                if value is None:
                    raise self.fail("compare with None using `is None` / `is not None`", side)
                values.append((value, side, len(operands)))
                operands.append("")
        if not names:
            raise self.fail("a comparison needs a column on one side", left)
        if len(names) == 2 and _family(names[0][1]) != _family(names[1][1]):
            (a, ka), (b, kb) = names
            raise self.fail(f"cannot compare column {excerpt_repr(a, 60)} ({ka}) with column "
                            f"{excerpt_repr(b, 60)} ({kb})", left)
        word = "value" if isinstance(op, ast.Eq | ast.NotEq) else "threshold"
        for value, side, i in values:
            self.match(*names[0], value, side)
            self.on_grid(*names[0], value, side, word)
            operands[i] = self.param(value)
        return f"({operands[0]} {_OPS[type(op)]} {operands[1]})"

    # -- leaves -------------------------------------------------------------------------
    def column(self, node: ast.expr) -> tuple[str, str]:
        if not isinstance(node, ast.Name):
            raise self.fail("expected a column name here", node)
        name = self.quoted.get(node.id, node.id)
        if name not in self.columns:
            raise UserError(f"filter: unknown column {excerpt_repr(name, 100)}")
        return name, self.columns[name]

    def constant(self, node: ast.expr, depth: int) -> str | int | float | bool | None:
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            if depth > MAX_DEPTH:
                raise UserError(f"filter: nested deeper than {MAX_DEPTH} levels (the limit)")
            value = self.constant(node.operand, depth + 1)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise self.fail("unary minus applies to numbers only", node)
            return -value
        if isinstance(node, ast.Constant) and (
            node.value is None or isinstance(node.value, str | int | float | bool)
        ):
            return node.value
        if isinstance(node, ast.Name):
            raise self.fail("expected a value here, not a column", node)
        self.check(node, depth)
        raise self.fail("only numbers, strings, True/False and None are allowed as values",
                        node)

    def match(self, name: str, kind: str, value: str | int | float | bool, node: ast.expr) -> None:
        """Refuse comparisons DuckDB would coerce silently or reject only at run time."""
        if isinstance(value, bool):
            ok = kind == "boolean"
        elif isinstance(value, int | float):
            ok = kind in _NUMERIC
        else:
            ok = kind in _TEXT_LIKE
        if not ok:
            what = ("True/False" if isinstance(value, bool)
                    else "a number" if isinstance(value, int | float) else "a string")
            raise self.fail(f"column {excerpt_repr(name, 60)} is {kind}; it cannot be compared "
                            f"with {what}",
                            node)

    def on_grid(self, name: str, kind: str, value: str | int | float | bool, node: ast.expr,
                word: str) -> None:
        """Refuse a numeric constant off the column's grid, naming the nearest grid values.

        The message holds only the column, the constant as written and values computed
        from the two, so the refusal says nothing about the data. Text has no grid, so an
        ordering threshold on a text column is refused (a bisection on ``office < 'R3'``
        finds the last office); a date or time threshold must fall on the first of a
        month."""
        if self.grid is not None and kind in _TEXT_LIKE and word == "threshold":
            self.text_threshold(name, kind, value)
            return
        if self.grid is None or kind not in _NUMERIC or isinstance(value, bool) \
                or not isinstance(value, int | float):
            return
        declared = _resolution(self.grid.get(name))
        with decimal.localcontext(_EXACT):
            number = Decimal(value) if isinstance(value, int) else Decimal(repr(value))
            column = excerpt(name if name.isidentifier() and not keyword.iskeyword(name)
                             else f"`{name}`", 60)
            written = excerpt("".join((ast.get_source_segment(self.source, node)
                                       or repr(value)).split()), 60)
            where = (f"steps of {_plain(declared)}, its declared resolution" if declared
                     else f"at most {SIGNIFICANT_DIGITS} significant digits; the column "
                          "declares no resolution")
            if not number.is_finite():
                raise UserError(f"filter: {column} {word} {written} is not on the column's "
                                f"grid ({where}): it is not a finite number")
            if number == 0:
                return
            step = declared or Decimal(1).scaleb(number.adjusted() + 1 - SIGNIFICANT_DIGITS)
            rest = number % step  # exact; the sign of ``number``
            if rest == 0:
                return
            inner = number - rest  # the grid value next to it, toward zero
            low, high = (inner, inner + step) if number > 0 else (inner - step, inner)
            raise UserError(f"filter: {column} {word} {written} is not on the column's grid "
                            f"({where}); use {_plain(low)} or {_plain(high)}")

    def text_threshold(self, name: str, kind: str, value: object) -> None:
        column = excerpt(name if name.isidentifier() else f"`{name}`", 60)
        if kind == "string":
            raise UserError(f"filter: {column} is text: where this node audits queries it "
                            "can be compared with ==, != or `in`, not ordered")
        text = str(value)
        if not (len(text) >= 10 and text[4] == "-" and text[7] == "-"
                and text[8:10] == "01" and text[10:].strip(" T:0") == ""):
            raise UserError(f"filter: {column} threshold {excerpt(text, 40)!r} is not on the "
                            "column's grid (the first of a month, e.g. "
                            f"'{excerpt(text[:7], 7)}-01', where this node audits queries)")

    def param(self, value: str | int | float | bool) -> str:
        self.params.append(value)
        return "?"


# Wide enough for every constant a filter can hold (MAX_LENGTH digits, floats' exponents),
# and trapping Inexact: grid arithmetic never rounds, so 0.3 is on a grid of 0.1.
_EXACT = decimal.Context(prec=4 * MAX_LENGTH, traps=[decimal.Inexact, decimal.InvalidOperation,
                                                     decimal.DivisionByZero])


def _resolution(value: object) -> Decimal | None:
    """A declared resolution as an exact decimal (its shortest repr, so 0.1 is 1/10);
    None where there is none (the record validates it, anything else is ignored)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    step = Decimal(value) if isinstance(value, int) else Decimal(repr(value))
    return step if step.is_finite() and step > 0 else None


def _plain(number: Decimal) -> str:
    """A grid value as a researcher writes it: 53000, -0.012, 7 (no exponent, no
    trailing zeros); in exponent form only where that would run past 40 characters."""
    number = number.normalize(_EXACT)
    if number == 0:
        return "0"
    text = format(number, "f")
    return text if len(text) <= 40 else str(number)


def _family(kind: str) -> str:
    return "number" if kind in _NUMERIC else kind


def quote_identifier(name: str) -> str:
    """A DuckDB identifier for any column name (double quotes doubled)."""
    return '"' + name.replace('"', '""') + '"'
