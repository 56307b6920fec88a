"""pca under DP: a node's ``n, Σx, XᵀX`` run over its complete rows, each value clipped
to its bounds; a missing value keeps its row out (it is not moved to a bound). Ground
truth: the penguins' complete rows clipped by numpy."""

from __future__ import annotations

import numpy as np

from jobs.pca.compute import sums
from node.data import DataFile

BOUNDS = {"bill_length_mm": (35.0, 50.0), "body_mass_g": (3000.0, 5000.0)}


def test_clipped_sums_cover_complete_rows_only(tmp_path, penguins):
    path = tmp_path / "penguins.csv"
    penguins.to_csv(path, index=False)
    cols = list(BOUNDS)
    assert penguins[cols].isna().any(axis=1).sum() > 0  # rows a NULL must keep out
    with DataFile(path) as data:
        got = sums(data, cols, clip=BOUNDS)
    x = np.column_stack([penguins[c].clip(*BOUNDS[c]) for c in cols])
    x = x[~np.isnan(x).any(axis=1)]
    want = [len(x), *x.sum(axis=0), *(x[:, i] @ x[:, j] for i in range(2) for j in range(i, 2))]
    np.testing.assert_allclose(got, want, rtol=1e-12)
