"""A released ``psi`` result for the researcher: the size of the intersection as a
pandas table (``res.intersection``: one row with the count, the identifier column per
node, the normalisation and where DP noise was added), a bar plot of it, and the files
``scifed job result --out DIR`` writes — ``intersection.csv``, ``intersection.png``,
``result.json`` and ``report.html``. With ``values`` (PSI as a filter) also
``res.values``: per column n, sum, mean, variance and std over the intersection, with
its bounds and resolution (``values.csv``), and ``values.png``, each mean ± std."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from jobs.views import figure, page, png, provenance, write_files


@dataclass
class PsiResult:
    size: int
    on: dict[str, str]
    normalise: list[str]
    noised_at: list[str]
    filtered: dict | None = None
    meta: dict = field(default_factory=dict)
    raw: dict = field(default_factory=dict)

    @classmethod
    def from_json(cls, r: dict) -> PsiResult:
        return cls(int(r.get("intersection", 0)), dict(r.get("on", {})),
                   list(r.get("normalise", [])), list(r.get("noised_at", [])),
                   r.get("values"), r.get("meta", {}), r)

    @property
    def rows(self) -> int:
        return self.size

    @property
    def intersection(self) -> pd.DataFrame:
        return pd.DataFrame([{
            "intersection": self.size,
            "nodes": ", ".join(sorted(self.on)),
            "on": ", ".join(f"{n}: {c}" for n, c in sorted(self.on.items())),
            "normalise": ", ".join(self.normalise),
            "dp_noise_at": ", ".join(self.noised_at) or "none (exact)",
            "k": self.meta.get("k")}])

    @property
    def values(self) -> pd.DataFrame:
        """Per value column, its statistics over the rows in the intersection."""
        f = self.filtered or {"columns": {}}
        return pd.DataFrame(
            [{"column": c, "node": f["node"], **m, "min": f["bounds"][c][0],
              "max": f["bounds"][c][1], "resolution": f["resolution"][c]}
             for c, m in f["columns"].items()],
            columns=["column", "node", "n", "sum", "mean", "variance", "std", "min", "max",
                     "resolution"]).set_index("column")

    def tables(self) -> dict[str, pd.DataFrame]:
        if self.filtered is None:
            return {"intersection": self.intersection}
        return {"intersection": self.intersection, "values": self.values.reset_index()}

    def plots(self) -> dict[str, bytes]:
        out = {"intersection.png": self.plot()}
        if self.filtered is not None:
            out["values.png"] = self.values_plot()
        return out

    def values_plot(self) -> bytes:
        v = self.values
        fig, _ = figure()
        fig.clear()  # one panel per column: their scales differ
        axes = np.atleast_1d(fig.subplots(1, len(v)))
        for ax, (column, row) in zip(axes, v.iterrows(), strict=True):
            ax.errorbar([0], [row["mean"]], yerr=[row["std"] or 0], fmt="o", capsize=6,
                        color="#3b75af")
            ax.set_xticks([0], [column])
            ax.set_title(f"n = {row['n']}", fontsize=9)
        axes[0].set_ylabel("mean ± std over the intersection")
        fig.tight_layout()
        return png(fig)

    def plot(self) -> bytes:
        fig, ax = figure()
        ax.barh(["∩ " + " ∩ ".join(sorted(self.on))], [self.size], color="#3b75af")
        ax.set_xlabel("identifiers held by every node" + (" (DP noise added)"
                                                          if self.noised_at else ""))
        ax.bar_label(ax.containers[0], padding=3)
        ax.set_xlim(0, max(1, self.size) * 1.15)
        return png(fig)

    def write(self, out: Path) -> list[Path]:
        """intersection.csv, intersection.png (values.csv, values.png), result.json and
        report.html into ``out``."""
        return write_files(out, self.tables(), {
            **self.plots(), "result.json": json.dumps(self.raw, indent=2),
            "report.html": self.html()})

    def html(self, title: str = "") -> str:
        return page(title or "scifed private set intersection",
                    f"{self.size} identifiers are held by every node · "
                    f"{provenance(self.meta)}", self.tables(),
                    {name.removesuffix(".png"): p for name, p in self.plots().items()})
