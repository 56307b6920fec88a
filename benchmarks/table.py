"""The one table every benchmark area prints: each figure measured now, beside the
baseline measured in the same run and the anchor of the performance notes
(``specs/performance-anchors.md`` as quoted by issue 14: targets and best published
figures), with its unit.

An area's module measures; this module only lays the figures out, so every area reads
the same way and ``python -m benchmarks`` prints one table per area.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from rich.console import Console
from rich.table import Table

Value = float | int | str | None


@dataclass(frozen=True)
class Figure:
    """One measured quantity. ``baseline``: the same quantity of the reference the area
    names (measured in this run), or None where there is none; ``anchor``: the target or
    best published figure, as text (``≤ 4.0``), "" where the notes give none."""

    name: str
    now: Value
    baseline: Value
    anchor: str
    unit: str


def number(value: Value) -> str:
    """Three significant digits, thousands separated; text as it is; — for None."""
    if value is None:
        return "—"
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, int):
        return f"{value:,}"
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude < 1e-3:
        return f"{value:.1e}"
    return f"{value:.3g}"


def area_table(title: str, figures: list[Figure], baseline: str, note: str = "") -> Table:
    """The area's table; ``baseline`` says what the baseline column measured."""
    caption = f"baseline: {baseline}. 1-min load average {os.getloadavg()[0]:.1f}."
    table = Table(title=title, title_justify="left", caption=f"{caption} {note}".strip(),
                  caption_justify="left")
    table.add_column("figure", justify="left")
    for column in ("now", "baseline (same run)", "anchor (spec)"):
        table.add_column(column, justify="right")
    table.add_column("unit", justify="left")
    for f in figures:
        table.add_row(f.name, number(f.now), number(f.baseline), f.anchor or "—", f.unit)
    return table


def print_area(console: Console, title: str, figures: list[Figure], baseline: str,
               note: str = "") -> None:
    console.print(area_table(title, figures, baseline, note))
