"""Counting rounds of the exact quantile search: the grid search (`jobs/stats/quantiles.py`)
beside the bisection it replaced (`benchmarks/quantile_search_v1.py`, 64 splits per round
and, where k > 1, one more round for the rounding), on the same pooled counts. The
release node's side only: each node's counts are taken from its rows with numpy, as
`count_le` takes them with DuckDB, and summed as the coordinator sums ciphertexts. Every
result is checked against pandas on the pooled rows (rounded by the disclosure rule
where k > 1). The anchor is issue 14's aim: at most 4 rounds."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pandas as pd
from palmerpenguins import load_penguins
from rich.console import Console

from benchmarks import quantile_search_v1 as v1
from benchmarks.table import Figure, print_area
from jobs.stats.disclosure import round_to_k_rows, rounding_thresholds
from jobs.stats.quantiles import QuantileSearch, key_sums
from jobs.stats.spec import StatsSpec

PROBS = [0.1, 0.25, 0.5, 0.75, 0.9]
AIM = 4


def datasets() -> dict[str, tuple[pd.DataFrame, list[float]]]:
    rng = np.random.default_rng(14)
    penguins = load_penguins()
    return {
        "penguins: body mass, p = 0.5": (penguins[["body_mass_g"]], [0.5]),
        "penguins: 3 columns × 5 p": (
            penguins[["body_mass_g", "bill_length_mm", "flipper_length_mm"]], PROBS),
        "salaries to the cent: 5 p": (
            pd.DataFrame({"salary": np.round(rng.lognormal(9.5, 0.7, 1200), 2)}), PROBS),
        "doubles with ties: 5 p": (pd.DataFrame({"x": np.repeat(
            rng.normal(3.0, 2.0, 400), rng.integers(1, 4, 400))}), PROBS),
        "normal, 100k rows: 3 p": (pd.DataFrame({"x": rng.normal(size=100_000)}),
                                   [0.25, 0.5, 0.75]),
    }


def _nodes(df: pd.DataFrame, parts: int = 3) -> list[dict[str, np.ndarray]]:
    return [{c: np.sort(df[c].iloc[i::parts].dropna().to_numpy(float)) for c in df}
            for i in range(parts)]


def _pooled(nodes: list[dict[str, np.ndarray]]) -> Callable[[dict], dict]:
    def counts(asked: dict[str, list[float]]) -> dict[str, list[int]]:
        return {c: np.sum([np.searchsorted(n[c], ts, side="right") for n in nodes],
                          axis=0).tolist() for c, ts in asked.items()}
    return counts


def _pooled_vector(nodes: list[dict[str, np.ndarray]]) -> Callable[[dict], np.ndarray]:
    """The pooled round vector (`round_vector`'s layout: counts, then key sums)."""
    def vector(query: dict) -> np.ndarray:
        def one(n: dict[str, np.ndarray]) -> np.ndarray:
            parts = [np.searchsorted(n[c], ts, side="right").astype(float)
                     for c, ts in sorted(query["thresholds"].items())]
            parts += [key_sums(n[c], bs) for c, bs in sorted(query.get("sums", {}).items())]
            return np.concatenate(parts) if parts else np.zeros(0)
        return np.sum([one(n) for n in nodes], axis=0)
    return vector


def _truth(x: pd.Series, p: float, k: int) -> float | None:
    q = float(x.quantile(p))
    if k <= 1:
        return q
    values = np.sort(x.dropna().to_numpy(float))
    released, step = round_to_k_rows(
        q, np.searchsorted(values, rounding_thresholds(q), side="right").tolist(), k)
    return None if step == math.inf else released


def new_rounds(df: pd.DataFrame, probs: list[float], k: int, guide: bool) -> tuple[int, bool]:
    spec = StatsSpec(quantiles={c: probs for c in df})
    vector = _pooled_vector(_nodes(df))
    aims = {c: (df[c].mean(), df[c].std()) for c in df} if guide else None
    search = QuantileSearch.start(spec, {c: int(df[c].count()) for c in df}, k=k,
                                  guide=aims)
    while not search.done:
        search.learn(vector(search.query()))
    got = search.result()
    exact = all(got[c][str(p)] == _truth(df[c], p, k) for c in search.probs
                for p in search.probs[c])
    return search.rounds, exact


def old_rounds(df: pd.DataFrame, probs: list[float], k: int) -> tuple[int, bool]:
    spec = StatsSpec(quantiles={c: probs for c in df})
    counts = _pooled(_nodes(df))
    search = v1.QuantileSearch.start(spec, {c: int(df[c].count()) for c in df}, k=k)
    while not search.done:
        search.update(counts(search.thresholds()))
    if k <= 1:
        got, extra = search.result(), 0
    else:
        got, extra = v1.rounded(search, counts(v1.rounding_query(search))), 1
    exact = all(got[c][str(p)] == _truth(df[c], p, k) for c in search.probs
                for p in search.probs[c])
    return search.rounds + extra, exact


def main(console: Console | None = None) -> None:
    console = console or Console()
    figures, exact = [], True
    with console.status("quantile searches"):
        for name, (df, probs) in datasets().items():
            for k in (1, 5):
                old, old_ok = old_rounds(df, probs, k)
                new, new_ok = new_rounds(df, probs, k, guide=False)
                aimed, aimed_ok = new_rounds(df, probs, k, guide=True)
                exact = exact and old_ok and new_ok and aimed_ok
                figures.append(Figure(f"{name}, k = {k}", f"{aimed} ({new} unaimed)", old,
                                      f"≤ {AIM}", "rounds"))
    figures.append(Figure("every search's quantiles equal pandas' on the pooled rows", exact,
                          None, "yes", ""))
    print_area(console, "exact quantiles: counting rounds of the grid search (aimed by the "
               "released mean and sd; in brackets without)", figures, "the bisection it "
               "replaced (64 splits per round, one more round for the k-row rounding), on "
               "the same pooled counts", "Anchor: issue 14 item 4.")


if __name__ == "__main__":
    main()
