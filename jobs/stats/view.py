"""A released ``stats`` result as pandas DataFrames, and its files: CSV tables, PNG
histograms, and an HTML report."""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from jobs.views import figure, png, write_tables


@dataclass
class StatsResult:
    rows: int
    summary: pd.DataFrame                     # one row per numeric column
    histograms: dict[str, pd.DataFrame]       # bin_left, bin_right, count, suppressed
    groups: dict[str, pd.DataFrame]           # value, count, suppressed
    correlation: pd.DataFrame | None
    quantiles: pd.DataFrame | None            # index column, columns probabilities
    meta: dict = field(default_factory=dict)
    raw: dict = field(default_factory=dict)

    @classmethod
    def from_json(cls, r: dict) -> StatsResult:
        summary = pd.DataFrame.from_dict(r.get("columns", {}), orient="index")
        summary.index.name = "column"
        hists = {}
        for col, h in r.get("histograms", {}).items():
            edges = h["edges"]
            hists[col] = pd.DataFrame({"bin_left": edges[:-1], "bin_right": edges[1:],
                                       "count": h["counts"], "suppressed": h["suppressed"]})
        groups = {col: pd.DataFrame({"value": g["values"], "count": g["counts"],
                                     "suppressed": g["suppressed"]})
                  for col, g in r.get("groups", {}).items()}
        corr = None
        if r.get("correlation"):
            c = r["correlation"]
            corr = pd.DataFrame(c["matrix"], index=c["columns"], columns=c["columns"])
        quant = None
        if r.get("quantiles"):
            quant = pd.DataFrame.from_dict(r["quantiles"], orient="index")
            quant.index.name = "column"
        return cls(r.get("rows", 0), summary, hists, groups, corr, quant, r.get("meta", {}), r)

    def tables(self) -> dict[str, pd.DataFrame]:
        out = {"summary": self.summary.reset_index()}
        out |= {f"histogram_{c}": df for c, df in self.histograms.items()}
        out |= {f"groups_{c}": df for c, df in self.groups.items()}
        if self.correlation is not None:
            out["correlation"] = self.correlation.reset_index(names="column")
        if self.quantiles is not None:
            out["quantiles"] = self.quantiles.reset_index()
        return out

    def plot_histogram(self, col: str) -> bytes:
        df = self.histograms[col]
        fig, ax = figure()
        ax.bar(df.bin_left, df["count"], width=df.bin_right - df.bin_left, align="edge",
               color=["#bbbbbb" if s else "#3b75af" for s in df.suppressed],
               edgecolor="white")
        ax.set_xlabel(col)
        ax.set_ylabel("count (all nodes)")
        ax.set_title(f"{col}: federated histogram")
        return png(fig)

    def plots(self) -> dict[str, bytes]:
        """Each plot as PNG by its file name (what ``write`` saves, a console shows)."""
        return {f"histogram_{col}.png": self.plot_histogram(col) for col in self.histograms}

    def write(self, out: Path) -> list[Path]:
        """CSV per table, PNG per histogram, result.json and report.html into `out`."""
        written = write_tables(self.tables(), out)
        for name, data in self.plots().items():
            p = out / name
            p.write_bytes(data)
            written.append(p)
        (out / "result.json").write_text(json.dumps(self.raw, indent=2))
        (out / "report.html").write_text(self.html())
        return [*written, out / "result.json", out / "report.html"]

    def html(self, extra: dict[str, pd.DataFrame] | None = None, title: str = "") -> str:
        parts = [f"<h1>{html.escape(title or 'scifed federated statistics')}</h1>",
                 f"<p>job {html.escape(str(self.meta.get('job_id', '')))} · rows matched: "
                 f"{self.rows} · contributors: "
                 f"{html.escape(', '.join(self.meta.get('contributors', [])))} · k = "
                 f"{self.meta.get('k')}</p>"]
        if conventions := self.meta.get("conventions"):
            parts.append("<ul>" + "".join(f"<li>{html.escape(k)}: {html.escape(v)}</li>"
                                          for k, v in conventions.items()) + "</ul>")
        for name, df in {**self.tables(), **(extra or {})}.items():
            parts.append(f"<h2>{html.escape(name)}</h2>{df.to_html(index=False)}")
        for col in self.histograms:
            img = base64.b64encode(self.plot_histogram(col)).decode()
            parts.append(f"<h2>histogram of {html.escape(col)}</h2>"
                         f'<img src="data:image/png;base64,{img}">')
        style = ("<style>body{font-family:sans-serif;margin:2em}table{border-collapse:"
                 "collapse}td,th{border:1px solid #ccc;padding:3px 8px}</style>")
        return f"<!doctype html><html><head><meta charset='utf-8'>{style}</head><body>" \
               + "".join(parts) + "</body></html>"
