"""The release node's side of a ``pca`` job: the pooled covariance (or correlation) from
the pooled sums, its eigendecomposition, and the result.

* covariance: S / (n − 1) with S the centred cross-products (ddof = 1, as scikit-learn's
  ``PCA`` and pandas);
* correlation (``standardize: true``): the covariance of the columns scaled as
  scikit-learn's ``StandardScaler`` scales them (by their ddof = 0 standard deviation),
  i.e. the correlation matrix times n / (n − 1). Its eigenvalues are therefore those of
  ``PCA`` after ``StandardScaler``; the ratios are those of the correlation matrix.

Eigenvalues are released in decreasing order (``explained_variance`` — scikit-learn's
``explained_variance_``), with their share of the total variance and the cumulative
share. A component's sign is arbitrary; the released loadings fix it deterministically:
the entry of largest absolute value is positive (the first such entry on a tie).
"""

from __future__ import annotations

import numpy as np

from jobs.base import Pooled, Released
from jobs.pca import disclosure
from jobs.pca.compute import Moments
from jobs.pca.dp import NOTE
from jobs.pca.spec import PcaSpec
from scifed.errors import UserError


def release(spec: PcaSpec, pooled: Pooled) -> Released:
    p = len(spec.columns)
    try:
        m = Moments.decode(pooled.totals["sum"], p, noisy=bool(pooled.dp))
    except ValueError as exc:
        raise UserError(f"pca: {exc}") from None
    if pooled.dp and m.n <= p + 1:
        raise UserError("pca: the noisy sums give no valid covariance (the noise is large "
                        "for so few rows): pool more rows, narrow the bounds or ask for a "
                        "larger ε")
    disclosure.check_pooled(m.n, p, pooled.k)
    cov = m.covariance()
    variances = np.diag(cov).copy()
    if spec.standardize:
        flat = [c for c, v in zip(spec.columns, variances, strict=True) if not v > 0]
        if flat:
            raise UserError(f"pca: column {flat[0]!r} has no variance in the complete rows; "
                            "a correlation needs it (drop the column or set standardize: "
                            "false)")
        scale = np.sqrt(variances * (m.n - 1) / m.n)  # StandardScaler: ddof = 0
        matrix = cov / np.outer(scale, scale)
    else:
        matrix = cov
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    order = np.argsort(values)[::-1]
    values = np.maximum(values[order], 0.0)
    vectors = signed(vectors[:, order])
    total = float(values.sum())
    q = spec.components
    ratio = values / total if total > 0 else np.zeros_like(values)
    result = {
        "columns": list(spec.columns),
        "matrix": "correlation" if spec.standardize else "covariance",
        "n": m.n,
        "components": [f"PC{i + 1}" for i in range(q)],
        "explained_variance": values[:q].tolist(),
        "explained_variance_ratio": ratio[:q].tolist(),
        "cumulative_ratio": np.cumsum(ratio)[:q].tolist(),
        "total_variance": total,
        "loadings": vectors[:, :q].T.tolist(),   # components × columns
        "means": m.means.tolist(),
        "sign_rule": "the largest absolute loading of each component is positive",
    }
    if spec.standardize:
        result["stds"] = np.sqrt(variances).tolist()   # ddof = 1, as pandas
    if pooled.dp:
        result["privacy"], result["privacy_note"] = pooled.dp, NOTE
    return Released(result)


def signed(vectors: np.ndarray) -> np.ndarray:
    """Each column's sign fixed: its entry of largest |value| (the first on a tie) > 0."""
    out = vectors.copy()
    for j in range(out.shape[1]):
        if out[np.argmax(np.abs(out[:, j])), j] < 0:
            out[:, j] = -out[:, j]
    return out

