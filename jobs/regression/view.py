"""A released ``regression`` result for the researcher: the coefficient table as a pandas
DataFrame (``res.coefficients``, indexed by term), the fit statistics (``res.fit``), a
coefficient forest plot (estimates with their confidence intervals: where people look
rather than read), and the files ``scifed job result --out DIR`` writes — one CSV per
table, ``forest.png``, ``result.json`` and ``report.html``."""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from jobs.views import forest, page, provenance, write_files


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
        level = self.model.get("confidence", 0.95)
        return forest(list(df.index), df.estimate, df.ci_low, df.ci_high, null=0.0,
                      xlabel=f"estimate ({level:.0%} confidence interval)",
                      title=f"{self.model.get('formula', '')} "
                            f"[{self.model.get('family', '')}]")

    def plots(self) -> dict[str, bytes]:
        """Each plot as PNG by its file name (what ``write`` saves, a console shows)."""
        return {"forest.png": self.plot_forest()}

    def write(self, out: Path) -> list[Path]:
        """CSV per table, forest.png, result.json and report.html into ``out``."""
        return write_files(out, self.tables(), {
            **self.plots(), "result.json": json.dumps(self.raw, indent=2),
            "report.html": self.html()})

    def html(self, title: str = "") -> str:
        m = self.model
        lead = (f"<code>{html.escape(str(m.get('formula', '')))}</code> · family "
                f"{html.escape(str(m.get('family', '')))} (link "
                f"{html.escape(str(m.get('link', '')))}) · {provenance(self.meta, self.rows)}")
        refs = m.get("reference_levels") or {}
        notes = [n for n in [self.raw.get("privacy_note"), "reference levels: " + ", ".join(
            f"{c} = {v}" for c, v in refs.items()) if refs else None] if n]
        return page(title or "scifed federated regression", lead, self.tables(),
                    {"coefficients": self.plot_forest()}, notes)
