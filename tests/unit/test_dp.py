"""The node's DP noise: it must change the vector it releases, by Laplace noise of the
scale its report states (a report without noise would release the exact answer)."""

from __future__ import annotations

import numpy as np
import pytest

from jobs.stats.compute import Layout
from jobs.stats.dp import add_noise
from jobs.stats.spec import StatsSpec

SPEC = StatsSpec(columns=["x"], histograms={"x": [0.0, 5.0, 10.0]})
BOUNDS = {"x": (0.0, 10.0)}


def test_add_noise_changes_every_released_block_at_the_stated_scale():
    layout = Layout.build(SPEC, {})
    draws = []
    for _ in range(400):
        vec = np.zeros(layout.size)
        report = add_noise(vec, layout, SPEC, BOUNDS, epsilon=1.0)
        draws.append(vec.copy())
    draws = np.array(draws)
    scales = {b["block"]: b["scale"] for b in report["blocks"]}
    assert report["epsilon"] == 1.0 and len(scales) >= 3
    rows = draws[:, Layout.ROWS]
    assert np.count_nonzero(rows) > 300  # noise, not the exact zero
    # a Laplace (discrete for counts) of scale b has variance ≈ 2 b²
    expected = 2 * scales["rows"] ** 2
    assert rows.var() == pytest.approx(expected, rel=0.35)
    total = draws[:, layout.columns["x"].start + 2]  # Σx, continuous Laplace
    assert total.var() > 0 and np.count_nonzero(total) == len(total)


def test_add_noise_hides_the_suppression_flags():
    layout = Layout.build(SPEC, {})
    vec = np.zeros(layout.size)
    vec[Layout.ROWS_FLAG] = 1.0
    vec[layout.histograms["x"].stop - 1] = 1.0
    add_noise(vec, layout, SPEC, BOUNDS, epsilon=1.0)
    assert vec[Layout.ROWS_FLAG] == 0.0 and vec[layout.histograms["x"].stop - 1] == 0.0
