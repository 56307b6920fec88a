"""`make bench`: one table per area, each figure beside its baseline measured in the same
run and its anchor from the performance notes.

    python -m benchmarks                  # every area but the slow ones
    python -m benchmarks stats psi        # these areas (or AREAS="stats psi")
    make bench AREAS=stats100             # the 100-node stats job (minutes to set up)

Areas run in the order given, each in this process, one after another.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

from rich.console import Console


def _areas() -> dict[str, tuple[str, Callable[[Console], None], bool]]:
    """name → (what it measures, how, in the default run). Imported on use: an area's
    module may load what the others never need (torch, TenSEAL, statsmodels)."""

    def run(module: str, function: str = "main") -> Callable[[Console], None]:
        def go(console: Console) -> None:
            import importlib

            getattr(importlib.import_module(f"benchmarks.{module}"), function)(console)
        return go

    return {
        "he": ("HE encoding: bytes, encrypt, sum, decrypt, error", run("he_bench"), True),
        "stats": ("stats jobs end to end, 3 and 10 nodes, node memory",
                  run("stats_bench"), True),
        "stats100": ("the stats job over 100 node processes", run("stats_bench", "main_100"),
                     False),
        "quantiles": ("exact quantile rounds", run("quantile_bench"), True),
        "psi": ("private set intersection", run("psi"), True),
        "regression": ("regression jobs end to end", run("regression_bench"), True),
        "training": ("train rounds and their BFV work", run("train_tables", "training"),
                     True),
        "training1m": ("a 1M-parameter model's training round vs its plaintext twin",
                       run("train_tables", "million"), True),
        "dpsgd": ("DP-SGD epoch vs plain SGD", run("train_tables", "dpsgd"), True),
        "delivery": ("a delivery call's signature: sign + verify vs plain ECDSA",
                     run("delivery_bench"), True),
        "trainrelease": ("a training release's check of the attested rounds",
                         run("train_tables", "release"), True),
    }


def main(argv: list[str] | None = None) -> None:
    areas = _areas()
    listing = "; ".join(f"{n}: {what}" + ("" if default else " (only when asked)")
                        for n, (what, _, default) in areas.items())
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__
                                     .splitlines()[0], epilog=f"areas — {listing}")
    parser.add_argument("areas", nargs="*", help="areas to run (default: $AREAS, else all "
                        "but the ones run only when asked)")
    names = parser.parse_args(argv).areas or os.environ.get("AREAS", "").replace(",", " ") \
        .split()
    names = names or [n for n, (_, _, default) in areas.items() if default]
    unknown = [n for n in names if n not in areas]
    if unknown:
        parser.error(f"unknown area(s) {', '.join(unknown)}; known: {', '.join(areas)}")
    console = Console()
    if not console.is_terminal:  # piped to a file: rich would wrap the tables at 80
        console = Console(width=140)
    for name in names:
        start = time.perf_counter()
        areas[name][1](console)
        console.print(f"[dim]{name}: {time.perf_counter() - start:.0f} s[/dim]\n")


if __name__ == "__main__":
    main()
