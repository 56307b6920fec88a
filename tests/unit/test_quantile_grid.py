"""The grid quantile search against pooled ground truth: real data split over nodes, each
node's counts from its own file (`count_le`, as in a round), pooled counts summed as the
coordinator sums ciphertexts, and the result compared with pandas on the pooled values,
rounded (k > 1) by the disclosure rule applied to the pooled values directly. Also what a
round may ask, and the round counts users rely on ("exact quantiles in ≤ 4 rounds")."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmarks import quantile_search_v1 as v1
from jobs.base import Limits
from jobs.limits import MAX_ROUND_THRESHOLDS, MAX_TOTAL_ROUND_THRESHOLDS
from jobs.stats import StatsJob
from jobs.stats import quantile_grid as grid
from jobs.stats.disclosure import quantile_margin, round_to_k_rows, rounding_thresholds
from jobs.stats.quantiles import SUM_DIGITS, QuantileSearch, count_le, round_vector
from jobs.stats.spec import StatsSpec
from node.data import DataFile
from scifed.errors import UserError

PROBS = [0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95]


def split(root: Path, name: str, df: pd.DataFrame, parts: int = 3) -> list[Path]:
    """The rows dealt to ``parts`` nodes (one holds Parquet, the others CSV)."""
    paths = []
    for i in range(parts):
        part = df.iloc[i::parts]
        path = root / f"{name}{i}.{'parquet' if i == 0 else 'csv'}"
        part.to_parquet(path, index=False) if i == 0 else part.to_csv(path, index=False)
        paths.append(path)
    return paths


def expected(x: pd.Series, p: float, k: int) -> float | None:
    """Ground truth: pandas' quantile of the pooled values, rounded (k > 1) by
    `round_to_k_rows` with counts taken from the pooled values by numpy."""
    values = np.sort(x.dropna().to_numpy(dtype=float))
    q = float(x.quantile(p))
    if k <= 1:
        return q
    counts = np.searchsorted(values, rounding_thresholds(q), side="right").tolist()
    released, step = round_to_k_rows(q, counts, k)
    return None if step == math.inf else released


def federate(paths: list[Path], spec: StatsSpec, df: pd.DataFrame, *, k: int,
             guide: bool = False, budget: int = MAX_ROUND_THRESHOLDS) -> QuantileSearch:
    """The search as the release node runs it, with plaintext sums for ciphertexts."""
    files = [DataFile(p) for p in paths]
    aims = {c: (df[c].mean(), df[c].std()) for c in spec.quantiles} if guide else None
    search = QuantileSearch.start(spec, {c: int(df[c].count()) for c in spec.quantiles},
                                  k=k, guide=aims, budget=budget)
    while not search.done:
        query = search.query()
        sums = query.get("sums", {})
        size = {c: len(query["thresholds"].get(c, [])) + SUM_DIGITS * len(sums.get(c, []))
                for c in {*query["thresholds"], *sums}}
        assert 0 < max(size.values()) <= budget
        assert sum(size.values()) <= MAX_TOTAL_ROUND_THRESHOLDS
        assert k <= 1 or "sums" not in query  # a rounded release never sums values
        pooled = np.sum([round_vector(f, spec, query, k=k) for f in files], axis=0)
        search = QuantileSearch.from_json(search.to_json())  # travels sealed between rounds
        search.learn(pooled)
        assert search.rounds <= 20, "the search does not converge"
    for f in files:
        f.close()
    got = search.result()
    for col, probs in spec.quantiles.items():
        for p in probs:
            if not quantile_margin(p, int(df[col].count()), k):
                assert str(p) not in got.get(col, {})  # too close to 0 or 1 for this k
                continue
            assert got[col][str(p)] == expected(df[col], p, k), (col, p, k)  # bit-exact
    return search


@pytest.fixture(scope="module")
def datasets(tmp_path_factory, penguins) -> dict[str, tuple[list[Path], pd.DataFrame]]:
    root = tmp_path_factory.mktemp("grid")
    rng = np.random.default_rng(7)
    frames = {
        # few digits, many ties (grams in steps of 25, millimetres to 0.1)
        "penguins": penguins[["body_mass_g", "bill_length_mm", "flipper_length_mm"]],
        # skewed, to the cent, few ties
        "salaries": pd.DataFrame({"salary": np.round(rng.lognormal(9.5, 0.7, 1200), 2)}),
        # full-precision doubles, each repeated 1 to 3 times, with negatives
        "ties": pd.DataFrame({"x": np.repeat(rng.normal(3.0, 2.0, 400),
                                             rng.integers(1, 4, 400))}),
        "normal": pd.DataFrame({"x": rng.normal(size=100_000)}),
    }
    return {name: (split(root, name, df), df) for name, df in frames.items()}


@pytest.mark.parametrize("guide", [False, True], ids=["alone", "with-mean-sd"])
@pytest.mark.parametrize("name", ["penguins", "salaries", "ties", "normal"])
def test_a_rounded_release_is_exact_in_at_most_four_rounds(datasets, name, guide):
    """k > 1: the released quantile equals the pooled one rounded by the disclosure rule,
    and the grid on the rounding ladder settles it within 4 rounds (no rounding round)."""
    paths, df = datasets[name]
    spec = StatsSpec(quantiles={c: PROBS for c in df.columns})
    search = federate(paths, spec, df, k=5, guide=guide)
    assert 1 <= search.rounds <= 4
    assert all(v > 0 for v in search.resolution().values())


@pytest.mark.parametrize("name", ["penguins", "salaries"])
def test_an_exact_release_of_values_with_few_digits_takes_few_rounds(datasets, name):
    """k ≤ 1: the order statistics are pinned to the bit; values written with a few digits
    lie on the decimal grid and are pinned in a few rounds: penguins (3–4 digits) in 3,
    salaries to the cent (6–7 digits, five probabilities sharing a round) in 4, where the
    sums of a bracket of one or two values pin them."""
    paths, df = datasets[name]
    spec = StatsSpec(quantiles={c: [0.1, 0.25, 0.5, 0.75, 0.9] for c in df.columns})
    search = federate(paths, spec, df, k=1)
    assert search.rounds <= (3 if name == "penguins" else 4)


@pytest.mark.parametrize("name", ["ties", "normal"])
def test_an_exact_release_of_full_precision_doubles_is_bit_exact(datasets, name):
    """k ≤ 1 on full-precision doubles: still bit-exact, within 4 rounds (counts alone
    give ~10 bits a round, a double has ~60: 9 rounds before the bracket sums), fewer than
    the bisection baseline."""
    paths, df = datasets[name]
    spec = StatsSpec(quantiles={"x": [0.25, 0.5, 0.75]})
    search = federate(paths, spec, df, k=1)
    assert search.rounds <= 4
    assert search.rounds < baseline_rounds(paths, spec, df, k=1)


def baseline_rounds(paths: list[Path], spec: StatsSpec, df: pd.DataFrame, *, k: int) -> int:
    """Rounds the bisection search (benchmarks/quantile_search_v1.py) needs, with its
    rounding round where k > 1."""
    files = [DataFile(p) for p in paths]
    search = v1.QuantileSearch.start(spec, {c: int(df[c].count()) for c in spec.quantiles},
                                     k=k)
    while not search.done:
        asked = search.thresholds()
        search.update({c: np.sum([count_le(f, c, ts) for f in files], axis=0).tolist()
                       for c, ts in asked.items()})
    for f in files:
        f.close()
    return search.rounds + (1 if k > 1 else 0)


def test_fewer_rounds_than_the_bisection_on_penguins(datasets):
    paths, df = datasets["penguins"]
    spec = StatsSpec(quantiles={"body_mass_g": [0.25, 0.5, 0.75]})
    for k in (1, 5):
        assert federate(paths, spec, df, k=k).rounds < baseline_rounds(paths, spec, df, k=k)


def test_a_median_with_released_moments_takes_one_round(datasets):
    """The job's released mean and sd aim the first grid: the median of body mass at
    k = 5 is settled by the first counting round."""
    paths, df = datasets["penguins"]
    spec = StatsSpec(quantiles={"body_mass_g": [0.5]})
    assert federate(paths, spec, df, k=5, guide=True).rounds == 1


def test_a_small_budget_still_finishes_exactly(datasets):
    """With few thresholds per column (here 25) the search takes more rounds but stays
    exact and within the budget every round."""
    paths, df = datasets["penguins"]
    spec = StatsSpec(quantiles={c: [0.25, 0.5] for c in df.columns})
    assert federate(paths, spec, df, k=1, budget=25).rounds <= 20
    assert federate(paths, spec, df, k=5, budget=25).rounds <= 20


def test_values_exactly_on_a_bucket_edge_are_rounded_as_the_rule_says(tmp_path):
    """Quantiles that land exactly on the edge of a ladder bucket (x.5 at step 1, odd at
    step 2) and a bucket whose count is exactly k: the interval logic must not guess."""
    df = pd.DataFrame({"v": np.array([1.5] * 5 + [2.5] * 5 + [3.0] * 4 + [7.0] * 6 +
                                     [9.5] * 5, dtype=float)})
    paths = split(tmp_path, "edge", df)
    spec = StatsSpec(quantiles={"v": [0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]})
    for k in (4, 5, 6):
        federate(paths, spec, df, k=k)


def test_the_rule_is_decided_from_bounds_only_when_they_settle_it():
    """`quantile_grid.rounding` answers from count bounds only when every pooled data
    the known counts allow gives the same answer as `round_to_k_rows`."""
    known = [grid.BOTTOM, grid.key(math.nextafter(99.5, -math.inf)), grid.key(100.4),
             grid.key(100.5), grid.TOP]
    bounds = grid.count_bounds(known, [0, 10, 10, 17, 30])
    # nothing in (99.5⁻, 100.4], 7 values in (100.4, 100.5]: every bucket finer than 1
    # around 100 holds none, the bucket [99.5, 100.5] holds 7
    assert grid.rounding(100.0, 100.0, bounds, 5) == (100.0, 1.0)
    # at k = 8 step 1 fails, and step 2's bucket [99, 101] holds 7 to 30: unknown
    assert grid.rounding(100.0, 100.0, bounds, 8) is None
    # a quantile known only to lie in [99.6, 100.45] may sit among the 7: unknown
    assert grid.rounding(99.6, 100.45, bounds, 5) is None
    # an unbounded interval is never decided; 3 values in all never reach k = 5
    assert grid.rounding(-math.inf, 100.0, bounds, 5) is None
    value, step = grid.rounding(1.0, 2.0, grid.count_bounds([grid.BOTTOM, grid.TOP],
                                                            [0, 3]), 5)
    assert math.isnan(value) and step == math.inf


def test_a_round_asking_more_than_the_limits_is_refused(tmp_path):
    """A node refuses a counting round beyond MAX_ROUND_THRESHOLDS for one column or
    MAX_TOTAL_ROUND_THRESHOLDS over all, or for a column the job asks no quantile of,
    before reading data; the search itself never plans such a round."""
    columns = [f"c{i}" for i in range(9)]
    path = tmp_path / "wide.csv"
    pd.DataFrame({c: np.arange(10.0) for c in [*columns, "other"]}).to_csv(path, index=False)
    spec = StatsSpec(quantiles={c: [0.5] for c in columns})
    table = DataFile(path)
    job, limits = StatsJob(), Limits(node="dream", k=1, record={})
    per = MAX_TOTAL_ROUND_THRESHOLDS // len(columns)
    within = {"thresholds": {c: [float(i) for i in range(per)] for c in columns}}
    counts = job.round(spec, table, within, limits)
    assert counts.shape == (per * len(columns),) and counts[:11].tolist() == [*range(1, 11), 10]
    one = {"thresholds": {"c0": [4.0] * (MAX_ROUND_THRESHOLDS + 1)}}
    with pytest.raises(UserError, match=f"stats.quantiles.c0: a counting round asks "
                                        f"{MAX_ROUND_THRESHOLDS + 1} thresholds of one column; "
                                        f"at most {MAX_ROUND_THRESHOLDS}"):
        job.round(spec, table, one, limits)
    over = {"thresholds": {c: [4.0] * MAX_ROUND_THRESHOLDS for c in columns}}
    with pytest.raises(UserError, match=f"asks {MAX_ROUND_THRESHOLDS * len(columns)} "
                                        f"thresholds; at most {MAX_TOTAL_ROUND_THRESHOLDS} "
                                        "over all columns"):
        job.round(spec, table, over, limits)
    with pytest.raises(UserError, match="'other', which the job does not ask"):
        job.round(spec, table, {"thresholds": {"other": [2.0]}}, limits)
    with pytest.raises(UserError, match="numeric thresholds"):
        job.round(spec, table, {"thresholds": {"c0": ["4"]}}, limits)
    table.close()
    search = QuantileSearch.start(spec, {c: 10 for c in columns}, k=1)
    asked = search.thresholds()
    assert max(map(len, asked.values())) <= MAX_ROUND_THRESHOLDS
    assert sum(map(len, asked.values())) <= MAX_TOTAL_ROUND_THRESHOLDS


def test_search_state_rejects_counts_that_contradict_an_earlier_round(datasets):
    paths, df = datasets["penguins"]
    spec = StatsSpec(quantiles={"body_mass_g": [0.5]})
    files = [DataFile(p) for p in paths]
    search = QuantileSearch.start(spec, {"body_mass_g": 342}, k=1)
    for _ in range(2):
        asked = search.thresholds()["body_mass_g"]
        counts = np.sum([count_le(f, "body_mass_g", asked) for f in files], axis=0)
        before = search.to_json()
        search.update({"body_mass_g": counts.tolist()})
    # a later round whose counts sit below what an earlier threshold below them counted
    again = QuantileSearch.from_json(before)
    with pytest.raises(ValueError, match="not cumulative"):
        again.update({"body_mass_g": [0] * len(counts)})
    assert again.to_json() == before  # nothing learnt from a refused aggregate
    for f in files:
        f.close()


def test_exact_quantiles_equal_numpy_on_fresh_data_within_four_rounds(tmp_path):
    """Data drawn here for this test alone (nothing tuned on it): heavy tails, a tiny
    scale, large magnitudes with both signs, a point mass among continuous values and
    rounded values; three nodes (Parquet and CSV), through each node's `round_vector`.
    At k = 1 every quantile equals numpy's linear interpolation on the pooled values bit
    for bit, with or without the released mean and sd aiming the grid, within 4 rounds."""
    rng = np.random.default_rng(20261203)
    n = 30_000
    df = pd.DataFrame({
        "heavy": rng.standard_t(2, n) * 1e3 + 17.0,
        "tiny": rng.uniform(0, 1e-9, n),
        "wide": rng.choice([-1, 1], n) * 10 ** rng.uniform(-3, 12, n),
        "mixed": np.where(rng.random(n) < 0.3, 42.0, rng.exponential(40.0, n)),
        "rounded": np.round(rng.gamma(3.0, 7.0, n), 3),
    })
    paths = split(tmp_path, "fresh", df)
    probs = [0.001, 0.1, 0.37, 0.5, 0.9, 0.999]
    spec = StatsSpec(quantiles={c: probs for c in df.columns})
    for guide in (False, True):
        search = federate(paths, spec, df, k=1, guide=guide)
        got = search.result()
        for col in df.columns:
            truth = np.quantile(df[col].to_numpy(), probs)  # numpy, not pandas
            assert [got[col][str(p)] for p in probs] == truth.tolist(), (col, guide)
        assert search.rounds <= 4, (guide, search.rounds)
