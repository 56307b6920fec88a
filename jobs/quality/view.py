"""A released federated ``quality`` report (governance §3.4) as DataFrames."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from jobs.views import write_tables


@dataclass
class QualityResult:
    """A released federated `quality` report (governance §3.4) as DataFrames."""

    rows: int
    metrics: pd.DataFrame        # metric, dimension, value, status, detail
    completeness: pd.DataFrame   # column, completeness
    classes: pd.DataFrame | None  # label, count, suppressed
    label_shift: pd.DataFrame | None  # node, js_distance
    meta: dict = field(default_factory=dict)
    raw: dict = field(default_factory=dict)

    @classmethod
    def from_json(cls, r: dict) -> QualityResult:
        metrics = pd.DataFrame([{"metric": m, "dimension": v.get("dimension"),
                                 "value": v.get("value"), "status": v.get("status"),
                                 "detail": v.get("detail")} for m, v in r["metrics"].items()])
        completeness = pd.DataFrame(list(r.get("completeness", {}).items()),
                                    columns=["column", "completeness"])
        classes = shift = None
        if r.get("classes"):
            c = r["classes"]
            classes = pd.DataFrame({"label": c["labels"], "count": c["counts"],
                                    "suppressed": c["suppressed"]})
            shift = pd.DataFrame(list(r["label_shift"]["per_node"].items()),
                                 columns=["node", "js_distance"])
        return cls(r.get("rows", 0), metrics, completeness, classes, shift, r.get("meta", {}), r)

    def tables(self) -> dict[str, pd.DataFrame]:
        out = {"metrics": self.metrics, "completeness": self.completeness}
        if self.classes is not None:
            out |= {"classes": self.classes, "label_shift": self.label_shift}
        return out

    def plots(self) -> dict[str, bytes]:
        """None: a federated scorecard is read as its tables (metrics, dimensions)."""
        return {}

    def write(self, out: Path) -> list[Path]:
        written = write_tables(self.tables(), out)
        (out / "result.json").write_text(json.dumps(self.raw, indent=2))
        return [*written, out / "result.json"]
