"""A released ``psi`` result for the researcher: the size of the intersection as a
pandas table (``res.intersection``: one row with the count, the identifier column per
node, the normalisation and where DP noise was added), a bar plot of it, and the files
``scifed job result --out DIR`` writes — ``intersection.csv``, ``intersection.png``,
``result.json`` and ``report.html``."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from jobs.views import figure, page, png, provenance, write_files


@dataclass
class PsiResult:
    size: int
    on: dict[str, str]
    normalise: list[str]
    noised_at: list[str]
    meta: dict = field(default_factory=dict)
    raw: dict = field(default_factory=dict)

    @classmethod
    def from_json(cls, r: dict) -> PsiResult:
        return cls(int(r.get("intersection", 0)), dict(r.get("on", {})),
                   list(r.get("normalise", [])), list(r.get("noised_at", [])),
                   r.get("meta", {}), r)

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

    def tables(self) -> dict[str, pd.DataFrame]:
        return {"intersection": self.intersection}

    def plot(self) -> bytes:
        fig, ax = figure()
        ax.barh(["∩ " + " ∩ ".join(sorted(self.on))], [self.size], color="#3b75af")
        ax.set_xlabel("identifiers held by every node" + (" (DP noise added)"
                                                          if self.noised_at else ""))
        ax.bar_label(ax.containers[0], padding=3)
        ax.set_xlim(0, max(1, self.size) * 1.15)
        return png(fig)

    def write(self, out: Path) -> list[Path]:
        """intersection.csv, intersection.png, result.json and report.html into ``out``."""
        return write_files(out, self.tables(), {
            "intersection.png": self.plot(), "result.json": json.dumps(self.raw, indent=2),
            "report.html": self.html()})

    def html(self, title: str = "") -> str:
        return page(title or "scifed private set intersection",
                    f"{self.size} identifiers are held by every node · "
                    f"{provenance(self.meta)}", self.tables(), {"intersection": self.plot()})
