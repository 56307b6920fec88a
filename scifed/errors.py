"""Errors shared by node, coordinator and client, and the two helpers that keep their
messages short whatever the input (limits in :mod:`scifed.limits`)."""

from __future__ import annotations

import reprlib
from collections.abc import Iterable

from scifed.limits import EXCERPT_CHARS, MAX_MESSAGE_CHARS


class UserError(Exception):
    """A user mistake: one clear message, nothing changed."""


class Invalid(UserError):
    """Settings that failed validation: the one message, and each problem as
    ``(where, message)`` (``where`` the dotted field path, ``""`` for the whole
    document), so a form can show each problem beside its own field."""

    def __init__(self, message: str, problems: list[tuple[str, str]]) -> None:
        super().__init__(message)
        self.problems = problems


class NotFound(UserError):
    """The named thing (dataset, study, job, record) does not exist."""


class Unavailable(Exception):
    """Not the user's mistake: a part of the federation (a node, the Flower SuperLink) is
    not reachable or not running. The message says which; trying later may succeed."""


class NodeUnavailable(Unavailable):
    """A node has no open task stream, or dropped it before answering."""


class TrainingUnavailable(Unavailable):
    """The coordinator's Flower SuperLink is not running or not answering."""


def excerpt(text: object, limit: int = EXCERPT_CHARS) -> str:
    """``text`` (made a string with ``str``) cut to at most ``limit`` characters.

    A cut text keeps its head and says how long it was: ``abc… (20480 characters)``. Use
    it wherever an error message quotes a user's input: a column name, a key, a path, an
    expression, a line of YAML."""
    text = text if isinstance(text, str) else str(text)
    if len(text) <= limit:
        return text
    tail = f"… ({len(text)} characters)"
    return text[: max(limit - len(tail), 0)] + tail if limit > len(tail) else text[:limit]


_repr = reprlib.Repr()
_repr.maxlevel = 3
_repr.maxstring = EXCERPT_CHARS
_repr.maxother = EXCERPT_CHARS
_repr.maxlist = _repr.maxtuple = _repr.maxdict = _repr.maxset = 8


def excerpt_repr(value: object, limit: int = EXCERPT_CHARS) -> str:
    """``repr(value)`` for a message, at most ``limit`` characters and a few levels deep
    (never recursing into a deeply nested or huge value)."""
    if isinstance(value, str):  # quotes around the excerpt, which says the whole length
        return excerpt(repr(excerpt(value, max(limit - 2, 1))), limit + 16)
    try:
        text = _repr.repr(value)
    except (RecursionError, ValueError):  # a pathological __repr__ or a huge int
        text = f"<{type(value).__name__}>"
    return excerpt(text, limit)


def join_problems(lines: Iterable[str], limit: int = MAX_MESSAGE_CHARS,
                  indent: str = "") -> str:
    """Problem lines joined by newlines, each cut to an excerpt, as many as fit in
    ``limit`` characters; the ones left out are counted in a last line."""
    out: list[str] = []
    size = 0
    left = 0
    for line in lines:
        line = indent + excerpt(line, EXCERPT_CHARS * 2)
        if left or size + len(line) + 1 > limit - 40:
            left += 1
            continue
        out.append(line)
        size += len(line) + 1
    if left:
        out.append(f"{indent}(and {left} more problem{'s' if left > 1 else ''})")
    return "\n".join(out)
