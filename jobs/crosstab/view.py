"""A released ``crosstab`` result for the researcher: the table (``res.table``: one row
per (layer,) row level, one column per column level, suppressed cells as NA), the
margins (``res.margins``), the tests per layer (``res.tests``: chi-square, dof, p-value,
Cramér's V, or why there is none), the expected counts (``res.expected``), a heat map
of the counts with suppressed cells marked, and the files ``scifed job result --out DIR``
writes: one CSV per table, ``heatmap.png``, ``result.json`` and ``report.html``."""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from jobs.views import figure, page, png, provenance, write_files


@dataclass
class CrosstabResult:
    table: pd.DataFrame      # (layer,) row level × column levels; NA where suppressed
    margins: pd.DataFrame    # layer, line (row / column / total), level, total
    tests: pd.DataFrame      # layer -> statistic, dof, p_value, cramers_v, n, note
    expected: pd.DataFrame   # like table, for the layers with a test
    meta: dict = field(default_factory=dict)
    raw: dict = field(default_factory=dict)

    @classmethod
    def from_json(cls, r: dict) -> CrosstabResult:
        rows, cols, layered = r.get("row_levels", []), r.get("column_levels", []), \
            r.get("layers") is not None
        names = [r.get("layers"), r.get("rows")] if layered else [r.get("rows")]
        frames, margins, tests, expected = [], [], [], []
        for t in r.get("tables", []):
            df = pd.DataFrame(t["counts"], index=rows, columns=cols, dtype="Int64")
            df.columns.name = r.get("columns")
            frames.append(df)
            margins += [{"layer": t["layer"], "line": "row", "level": lv, "total": v}
                        for lv, v in zip(rows, t["row_totals"], strict=True)]
            margins += [{"layer": t["layer"], "line": "column", "level": lv, "total": v}
                        for lv, v in zip(cols, t["column_totals"], strict=True)]
            margins.append({"layer": t["layer"], "line": "total", "level": None,
                            "total": t["total"]})
            test = t.get("test") or {}
            tests.append({"layer": t["layer"], **{k: test.get(k) for k in (
                "statistic", "dof", "p_value", "cramers_v", "n")},
                "note": t.get("test_note", "")})
            if test:
                e = pd.DataFrame(test["expected"], index=test["rows"],
                                 columns=test["columns"])
                expected.append(e.assign(layer=t["layer"]).set_index("layer", append=True))
        table = pd.concat(frames, keys=[t["layer"] for t in r.get("tables", [])]) \
            if layered else (frames[0] if frames else pd.DataFrame())
        table.index.names = names
        exp = pd.concat(expected) if expected else pd.DataFrame()
        margins_df = pd.DataFrame(margins, columns=["layer", "line", "level", "total"])
        margins_df["total"] = margins_df["total"].astype("Int64")
        return cls(table, margins_df, pd.DataFrame(tests).set_index("layer"), exp,
                   r.get("meta", {}), r)

    @property
    def rows(self) -> int:
        return int(sum(t["total"] or 0 for t in self.raw.get("tables", [])))

    def tables(self) -> dict[str, pd.DataFrame]:
        return {"table": self.table.reset_index(), "margins": self.margins,
                "tests": self.tests.reset_index(),
                "expected": self.expected.reset_index()}

    def plot_heatmap(self) -> bytes:
        """Counts as colours, suppressed cells hatched grey, the count written in."""
        df = self.table
        values = df.to_numpy(dtype="float64", na_value=np.nan)
        fig, ax = figure()
        fig.set_size_inches(max(4.0, 0.8 * df.shape[1] + 2.5), max(2.5, 0.4 * len(df) + 1.5))
        ax.set_facecolor("#dddddd")
        im = ax.imshow(np.ma.masked_invalid(values), cmap="Blues", aspect="auto")
        for (i, j), v in np.ndenumerate(values):
            ax.text(j, i, "—" if np.isnan(v) else f"{int(v)}", ha="center", va="center",
                    fontsize=8)
        labels = [" / ".join(str(x) for x in (i if isinstance(i, tuple) else (i,)))
                  for i in df.index]
        ax.set_xticks(range(df.shape[1]), [str(c) for c in df.columns], rotation=45,
                      ha="right")
        ax.set_yticks(range(len(df)), labels)
        ax.set_xlabel(str(df.columns.name))
        fig.colorbar(im, ax=ax, label="count (— suppressed)")
        ax.set_title("contingency table")
        return png(fig)

    def plots(self) -> dict[str, bytes]:
        """Each plot as PNG by its file name (what ``write`` saves, a console shows)."""
        return {"heatmap.png": self.plot_heatmap()}

    def write(self, out: Path) -> list[Path]:
        """CSV per table, heatmap.png, result.json and report.html into ``out``."""
        return write_files(out, self.tables(), {
            **self.plots(), "result.json": json.dumps(self.raw, indent=2),
            "report.html": self.html()})

    def html(self, title: str = "") -> str:
        r = self.raw
        what = " × ".join(str(c) for c in (r.get("rows"), r.get("columns"), r.get("layers"))
                          if c)
        lead = (f"{html.escape(what)} · suppressed cells: "
                f"{r.get('suppression', {}).get('cells', 0)} · {provenance(self.meta)}")
        return page(title or "scifed federated contingency table", lead, self.tables(),
                    {"table": self.plot_heatmap()})
