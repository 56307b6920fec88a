"""A released ``psi`` result for the researcher: the size of the intersection as a
pandas table (``res.intersection``: one row with the count, the identifier column per
node, the normalisation and where DP noise was added), a bar plot of it, and the files
``scifed job result --out DIR`` writes — ``intersection.csv``, ``intersection.png``,
``result.json`` and ``report.html``."""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from jobs.views import figure, png, write_tables


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
        written = write_tables(self.tables(), out)
        (out / "intersection.png").write_bytes(self.plot())
        (out / "result.json").write_text(json.dumps(self.raw, indent=2))
        (out / "report.html").write_text(self.html())
        return [*written, out / "intersection.png", out / "result.json",
                out / "report.html"]

    def html(self, title: str = "") -> str:
        img = base64.b64encode(self.plot()).decode()
        parts = [f"<h1>{html.escape(title or 'scifed private set intersection')}</h1>",
                 f"<p>{self.size} identifiers are held by every node · job "
                 f"{html.escape(str(self.meta.get('job_id', '')))}</p>",
                 self.intersection.to_html(index=False),
                 f'<img src="data:image/png;base64,{img}">']
        style = ("<style>body{font-family:sans-serif;margin:2em}table{border-collapse:"
                 "collapse}td,th{border:1px solid #ccc;padding:3px 8px}</style>")
        return f"<!doctype html><html><head><meta charset='utf-8'>{style}</head><body>" \
               + "".join(parts) + "</body></html>"
