"""A released `stats` result as pandas DataFrames, and its files: CSV tables, PNG
histograms, and an HTML report."""

from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd


def _figure():
    import matplotlib

    matplotlib.use("Agg")  # no screen on nodes and CI
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(6, 3.2), dpi=100)


def _write_tables(tables: dict[str, pd.DataFrame], out: Path) -> list[Path]:
    """One CSV per table into ``out`` (created); the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    for name, df in tables.items():
        df.to_csv(out / f"{name}.csv", index=False)
    return [out / f"{name}.csv" for name in tables]


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


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
        fig, ax = _figure()
        ax.bar(df.bin_left, df["count"], width=df.bin_right - df.bin_left, align="edge",
               color=["#bbbbbb" if s else "#3b75af" for s in df.suppressed],
               edgecolor="white")
        ax.set_xlabel(col)
        ax.set_ylabel("count (all nodes)")
        ax.set_title(f"{col}: federated histogram")
        return _png(fig)

    def write(self, out: Path) -> list[Path]:
        """CSV per table, PNG per histogram, result.json and report.html into `out`."""
        written = _write_tables(self.tables(), out)
        for col in self.histograms:
            p = out / f"histogram_{col}.png"
            p.write_bytes(self.plot_histogram(col))
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

    def write(self, out: Path) -> list[Path]:
        written = _write_tables(self.tables(), out)
        (out / "result.json").write_text(json.dumps(self.raw, indent=2))
        return [*written, out / "result.json"]


@dataclass
class TrainResult:
    """A released `train` result: per-round metrics, privacy spent, and the model."""

    metrics: pd.DataFrame
    epsilon: dict
    model_info: dict
    meta: dict = field(default_factory=dict)
    raw: dict = field(default_factory=dict)
    rows: int = 0

    @classmethod
    def from_json(cls, r: dict) -> TrainResult:
        return cls(pd.DataFrame(r.get("metrics", [])), r.get("epsilon", {}), r["model"],
                   r.get("meta", {}), r)

    def tables(self) -> dict[str, pd.DataFrame]:
        out = {"metrics": self.metrics}
        if self.epsilon:
            out["privacy"] = pd.DataFrame(list(self.epsilon.items()),
                                          columns=["node", "epsilon_spent"])
        return out

    def model(self):
        """The trained PyTorch module, weights loaded."""
        import base64
        import io

        import torch

        from scifed.models import released_model

        module = released_model(self.model_info)
        module.load_state_dict(torch.load(io.BytesIO(base64.b64decode(
            self.model_info["state_dict"])), weights_only=True))
        return module.eval()

    def plot(self) -> bytes:
        df = self.metrics
        fig, ax = _figure()
        for col in [c for c in df.columns if c.startswith(("val_", "train_")) and
                    c != "val_rows"]:
            ax.plot(df["round"], df[col], marker="o", label=col)
        ax.set_xlabel("round")
        ax.set_title("federated training: learning curve")
        ax.legend()
        return _png(fig)

    def write(self, out: Path) -> list[Path]:
        from scifed.models import save_model_file

        written = _write_tables(self.tables(), out)
        (out / "learning_curve.png").write_bytes(self.plot())
        save_model_file(self.model_info, out / "model.pt")
        slim = {k: v for k, v in self.raw.items() if k != "model"}
        (out / "result.json").write_text(json.dumps(slim, indent=2))
        return [*written, out / "learning_curve.png", out / "model.pt", out / "result.json"]


def load_result(raw: dict) -> StatsResult | QualityResult | TrainResult:
    """The right view of a released result, by the job type it carries."""
    kinds = {"quality": QualityResult, "train": TrainResult}
    return kinds.get(raw.get("type"), StatsResult).from_json(raw)
