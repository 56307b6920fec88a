"""A released ``survival`` result for the researcher: the curves as one pandas DataFrame
(``res.curve``: group, time, at_risk, events, censored, survival, ci_low, ci_high), the
log-rank test (``res.logrank``), the medians (``res.medians``), a Kaplan–Meier plot with
its confidence bands (a step per released bin), and the files ``scifed job result --out
DIR`` writes — one CSV per table, ``kaplan_meier.png``, ``result.json`` and
``report.html``."""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from jobs.views import figure, page, png, provenance, write_files

_CURVE = ["time", "at_risk", "events", "censored", "survival", "ci_low", "ci_high"]


@dataclass
class SurvivalResult:
    curve: pd.DataFrame      # one row per (group, released bin)
    logrank: pd.DataFrame    # statistic, df, p_value (empty without groups)
    medians: pd.DataFrame    # group, median, events, rows
    model: dict              # time, event, groups, confidence, edges
    meta: dict = field(default_factory=dict)
    raw: dict = field(default_factory=dict)

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
        return cls(curve, logrank, medians, dict(r.get("model", {})), r.get("meta", {}), r)

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
        """CSV per table, kaplan_meier.png, result.json and report.html into ``out``."""
        return write_files(out, self.tables(), {
            "kaplan_meier.png": self.plot(), "result.json": json.dumps(self.raw, indent=2),
            "report.html": self.html()})

    def html(self, title: str = "") -> str:
        m = self.model
        columns = " · ".join(f"{key} <code>{html.escape(str(m.get(key)))}</code>"
                             for key in ("time", "event", "groups"))
        return page(title or "scifed federated survival analysis",
                    f"{columns} · {provenance(self.meta, self.rows)}", self.tables(),
                    {"Kaplan–Meier": self.plot()}, self.raw.get("notes", []))
