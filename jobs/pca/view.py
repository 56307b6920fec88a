"""A released ``pca`` result for the researcher: the loadings (``res.components``,
components × columns), the explained variance (``res.explained``: eigenvalue, ratio,
cumulative), the column means (and standard deviations where standardized), a scree plot
and a loadings heat map — where people look rather than read — and the files
``scifed job result --out DIR`` writes: one CSV per table, ``scree.png``,
``loadings.png``, ``result.json`` and ``report.html``."""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from jobs.views import figure, page, png, provenance, write_files


@dataclass
class PcaResult:
    components: pd.DataFrame   # PC1.. × columns: the loadings
    explained: pd.DataFrame    # PC1.. -> eigenvalue, ratio, cumulative
    columns: pd.DataFrame      # column -> mean (, std)
    matrix: str                # "covariance" | "correlation"
    rows: int
    meta: dict = field(default_factory=dict)
    raw: dict = field(default_factory=dict)

    @classmethod
    def from_json(cls, r: dict) -> PcaResult:
        names, cols = r.get("components", []), r.get("columns", [])
        loadings = pd.DataFrame(r.get("loadings", []), index=names, columns=cols)
        loadings.index.name = "component"
        explained = pd.DataFrame({"eigenvalue": r.get("explained_variance", []),
                                  "ratio": r.get("explained_variance_ratio", []),
                                  "cumulative": r.get("cumulative_ratio", [])}, index=names)
        explained.index.name = "component"
        summary = pd.DataFrame({"mean": r.get("means", [])}, index=cols)
        if "stds" in r:
            summary["std"] = r["stds"]
        summary.index.name = "column"
        return cls(loadings, explained, summary, r.get("matrix", ""), int(r.get("n", 0)),
                   r.get("meta", {}), r)

    def tables(self) -> dict[str, pd.DataFrame]:
        return {"components": self.components.reset_index(),
                "explained": self.explained.reset_index(),
                "columns": self.columns.reset_index()}

    def plot_scree(self) -> bytes:
        df = self.explained
        fig, ax = figure()
        xs = np.arange(1, len(df) + 1)
        ax.bar(xs, df.ratio, color="#3b75af", label="ratio")
        ax.plot(xs, df.cumulative, "o-", color="#d1603d", label="cumulative")
        ax.set_xticks(xs, list(df.index))
        ax.set_ylim(0, 1.05)
        ax.set_ylabel(f"share of the total variance ({self.matrix})")
        ax.legend(loc="center right")
        ax.set_title("scree plot")
        return png(fig)

    def plot_loadings(self) -> bytes:
        df = self.components
        fig, ax = figure()
        fig.set_size_inches(max(4.0, 0.6 * df.shape[1] + 2), max(2.5, 0.4 * len(df) + 1.5))
        im = ax.imshow(df.to_numpy(), cmap="RdBu_r", vmin=-1, vmax=1, aspect="auto")
        ax.set_xticks(range(df.shape[1]), list(df.columns), rotation=45, ha="right")
        ax.set_yticks(range(len(df)), list(df.index))
        fig.colorbar(im, ax=ax, label="loading")
        ax.set_title("loadings")
        return png(fig)

    def plots(self) -> dict[str, bytes]:
        """Each plot as PNG by its file name (what ``write`` saves, a console shows)."""
        return {"scree.png": self.plot_scree(), "loadings.png": self.plot_loadings()}

    def write(self, out: Path) -> list[Path]:
        """CSV per table, scree.png, loadings.png, result.json and report.html."""
        return write_files(out, self.tables(), {
            **self.plots(), "result.json": json.dumps(self.raw, indent=2),
            "report.html": self.html()})

    def html(self, title: str = "") -> str:
        lead = (f"principal components of the {html.escape(self.matrix)} matrix of "
                f"{html.escape(', '.join(self.columns.index))} · complete rows: {self.rows}"
                f" · {provenance(self.meta)}")
        return page(title or "scifed federated principal components", lead, self.tables(),
                    {"scree plot": self.plot_scree(), "loadings": self.plot_loadings()})
