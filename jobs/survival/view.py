"""A released ``survival`` result for the researcher: the curves as one pandas DataFrame
(``res.curve``: group, time, at_risk, events, censored, survival, ci_low, ci_high), the
log-rank test (``res.logrank``), the medians (``res.medians``), a Kaplan–Meier plot with
its confidence bands (a step per released bin), with a Cox model its coefficient table
(``res.cox``, indexed by term: estimate, std_error, z, p, CI, hazard ratio with its CI),
its fit (``res.cox_fit``) and a forest plot of the hazard ratios, and the files ``scifed
job result --out DIR`` writes — one CSV per table, ``kaplan_meier.png``,
``hazard_ratios.png`` (Cox), ``result.json`` and ``report.html``."""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from jobs.views import figure, forest, page, png, provenance, write_files

_CURVE = ["time", "at_risk", "events", "censored", "survival", "ci_low", "ci_high"]


@dataclass
class SurvivalResult:
    curve: pd.DataFrame      # one row per (group, released bin)
    logrank: pd.DataFrame    # statistic, df, p_value (empty without groups)
    medians: pd.DataFrame    # group, median, events, rows
    model: dict              # time, event, groups, confidence, edges
    meta: dict = field(default_factory=dict)
    raw: dict = field(default_factory=dict)
    cox: pd.DataFrame | None = None   # term -> estimate, std_error, ..., hazard_ratio
    cox_fit: dict = field(default_factory=dict)  # nobs, events, log_likelihood, ...

    @classmethod
    def from_json(cls, r: dict) -> SurvivalResult:
        curve = pd.concat([pd.DataFrame({"group": c["group"], **{k: c[k] for k in _CURVE}})
                           for c in r.get("curves", [])] or
                          [pd.DataFrame(columns=["group", *_CURVE])], ignore_index=True)
        test = r.get("logrank")
        logrank = pd.DataFrame([{k: test[k] for k in ("statistic", "df", "p_value")}]
                               if test else [], columns=["statistic", "df", "p_value"])
        medians = pd.DataFrame(r.get("medians", []),
                               columns=["group", "median", "events", "rows"])
        model = r.get("cox")
        cox = pd.DataFrame(model["coefficients"]).set_index("term") if model else None
        return cls(curve, logrank, medians, dict(r.get("model", {})), r.get("meta", {}), r,
                   cox, dict(model["fit"]) if model else {})

    @property
    def rows(self) -> int:
        first = self.medians[self.medians.group == self.groups[0]] if self.groups else None
        return int(first.rows.iloc[0]) if first is not None and len(first) else 0

    @property
    def groups(self) -> list[str]:
        return list(dict.fromkeys(self.curve.group))

    def tables(self) -> dict[str, pd.DataFrame]:
        out = {"curve": self.curve, "medians": self.medians}
        if len(self.logrank):
            out["logrank"] = self.logrank
        if self.cox is not None:
            out["cox"] = self.cox.reset_index()
            out["cox_fit"] = pd.DataFrame({"statistic": list(self.cox_fit),
                                           "value": list(self.cox_fit.values())})
        return out

    def plot_hazard_ratios(self) -> bytes:
        """The Cox model's hazard ratios with their confidence intervals, on a log axis."""
        assert self.cox is not None
        c = self.cox
        level = self.raw["cox"]["model"].get("confidence", 0.95)
        return forest(list(c.index), c.hazard_ratio, c.hr_ci_low, c.hr_ci_high, null=1.0,
                      xlabel=f"hazard ratio ({level:.0%} confidence interval)",
                      title=f"Cox proportional hazards ({self.model.get('time')}, Breslow "
                            "ties on the released bins)", log=True)

    def plots(self) -> dict[str, bytes]:
        out = {"kaplan_meier.png": self.plot()}
        if self.cox is not None:
            out["hazard_ratios.png"] = self.plot_hazard_ratios()
        return out

    def plot(self) -> bytes:
        """One step curve per group (the overall one alone where there are no groups),
        from S = 1 at the first edge, with its confidence band."""
        fig, ax = figure()
        fig.set_size_inches(6.4, 3.8)
        groups = self.groups[1:] if len(self.groups) > 1 else self.groups
        start = (self.model.get("edges") or [0.0])[0]
        for g in groups:
            c = self.curve[self.curve.group == g]
            t = [start, *c.time]
            line, = ax.step(t, [1.0, *c.survival], where="post", label=str(g))
            ax.fill_between(t, [1.0, *c.ci_low], [1.0, *c.ci_high], step="post",
                            alpha=0.2, color=line.get_color(), lw=0)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel(str(self.model.get("time", "time")))
        ax.set_ylabel("survival probability")
        level = self.model.get("confidence", 0.95)
        ax.set_title(f"Kaplan–Meier ({level:.0%} log-log band)", fontsize=9)
        if len(groups) > 1:
            ax.legend(title=str(self.model.get("groups")), fontsize=8)
        return png(fig)

    def write(self, out: Path) -> list[Path]:
        """CSV per table, the plots, result.json and report.html into ``out``."""
        return write_files(out, self.tables(), {
            **self.plots(), "result.json": json.dumps(self.raw, indent=2),
            "report.html": self.html()})

    def html(self, title: str = "") -> str:
        m = self.model
        columns = " · ".join(f"{key} <code>{html.escape(str(m.get(key)))}</code>"
                             for key in ("time", "event", "groups"))
        plots = self.plots()
        images = {"Kaplan–Meier": plots["kaplan_meier.png"]}
        notes = list(self.raw.get("notes", []))
        if self.cox is not None:
            images["Cox model: hazard ratios"] = plots["hazard_ratios.png"]
            refs = self.raw["cox"]["model"].get("reference_levels") or {}
            notes.append("Cox model, Breslow ties on the released bins"
                         + ("; reference levels: " + ", ".join(f"{c} = {v}" for c, v in
                                                               refs.items()) if refs else ""))
        return page(title or "scifed federated survival analysis",
                    f"{columns} · {provenance(self.meta, self.rows)}", self.tables(),
                    images, notes)
