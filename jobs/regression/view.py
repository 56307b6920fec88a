"""A released ``regression`` result for the researcher: the coefficient table as a pandas
DataFrame (``res.coefficients``, indexed by term), the fit statistics (``res.fit``), a
coefficient forest plot (estimates with their confidence intervals: where people look
rather than read), and the files ``scifed job result --out DIR`` writes — one CSV per
table, ``forest.png``, ``result.json`` and ``report.html``."""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from jobs.views import figure, png, write_tables


@dataclass
class RegressionResult:
    coefficients: pd.DataFrame   # term -> estimate, std_error, statistic, p_value, ci_*
    fit: dict                    # nobs, df_resid, r_squared / deviance, aic, ...
    model: dict                  # formula, family, link, reference levels
    meta: dict = field(default_factory=dict)
    raw: dict = field(default_factory=dict)

    @classmethod
    def from_json(cls, r: dict) -> RegressionResult:
        coef = pd.DataFrame(r.get("coefficients", [])).set_index("term")
        return cls(coef, dict(r.get("fit", {})), dict(r.get("model", {})),
                   r.get("meta", {}), r)

    @property
    def rows(self) -> int:
        return int(self.fit.get("nobs", 0))

    @property
    def params(self) -> pd.Series:
        return self.coefficients["estimate"]

    @property
    def bse(self) -> pd.Series:
        return self.coefficients["std_error"]

    def tables(self) -> dict[str, pd.DataFrame]:
        fit = pd.DataFrame({"statistic": list(self.fit), "value": list(self.fit.values())})
        return {"coefficients": self.coefficients.reset_index(), "fit": fit}

    def plot_forest(self) -> bytes:
        """Estimates with their confidence intervals, intercept left out (its scale
        usually dwarfs the rest)."""
        df = self.coefficients.drop(index="Intercept", errors="ignore")
        fig, ax = figure()
        fig.set_size_inches(6, max(2.0, 0.35 * len(df) + 1.2))
        ys = list(range(len(df)))[::-1]
        ax.errorbar(df.estimate, ys, xerr=[df.estimate - df.ci_low, df.ci_high - df.estimate],
                    fmt="o", color="#3b75af", ecolor="#3b75af", capsize=3)
        ax.axvline(0.0, color="#999999", lw=0.8, ls="--")
        ax.set_yticks(ys, list(df.index))
        level = self.model.get("confidence", 0.95)
        ax.set_xlabel(f"estimate ({level:.0%} confidence interval)")
        ax.set_title(f"{self.model.get('formula', '')} [{self.model.get('family', '')}]",
                     fontsize=9)
        return png(fig)

    def write(self, out: Path) -> list[Path]:
        """CSV per table, forest.png, result.json and report.html into ``out``."""
        written = write_tables(self.tables(), out)
        (out / "forest.png").write_bytes(self.plot_forest())
        (out / "result.json").write_text(json.dumps(self.raw, indent=2))
        (out / "report.html").write_text(self.html())
        return [*written, out / "forest.png", out / "result.json", out / "report.html"]

    def html(self, title: str = "") -> str:
        m = self.model
        parts = [f"<h1>{html.escape(title or 'scifed federated regression')}</h1>",
                 f"<p><code>{html.escape(str(m.get('formula', '')))}</code> · family "
                 f"{html.escape(str(m.get('family', '')))} (link "
                 f"{html.escape(str(m.get('link', '')))}) · rows: {self.rows} · "
                 f"contributors: {html.escape(', '.join(self.meta.get('contributors', [])))}"
                 f" · k = {self.meta.get('k')} · job "
                 f"{html.escape(str(self.meta.get('job_id', '')))}</p>"]
        if self.raw.get("privacy_note"):
            parts.append(f"<p><em>{html.escape(self.raw['privacy_note'])}</em></p>")
        refs = m.get("reference_levels") or {}
        if refs:
            parts.append("<p>reference levels: " + html.escape(", ".join(
                f"{c} = {v}" for c, v in refs.items())) + "</p>")
        for name, df in self.tables().items():
            parts.append(f"<h2>{html.escape(name)}</h2>{df.to_html(index=False)}")
        img = base64.b64encode(self.plot_forest()).decode()
        parts.append(f'<h2>coefficients</h2><img src="data:image/png;base64,{img}">')
        style = ("<style>body{font-family:sans-serif;margin:2em}table{border-collapse:"
                 "collapse}td,th{border:1px solid #ccc;padding:3px 8px}</style>")
        return f"<!doctype html><html><head><meta charset='utf-8'>{style}</head><body>" \
               + "".join(parts) + "</body></html>"
