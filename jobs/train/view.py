"""A released ``train`` result: per-round metrics, privacy spent, and the model."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from jobs.views import figure, png, write_tables

R2_FLOOR = -1.0  # the learning curve's lowest score shown (an R² below it is far off)


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

    def headline(self) -> str:
        """What `scifed job result` prints first: how many rounds trained what, the
        validation after the last round, which round's model is released (the best
        validated, ``jobs.train.release``) with its validation, and who took part."""
        info, df = self.model_info, self.metrics
        rounds = int(df["round"].max()) if "round" in df and len(df) else 0
        line = (f"train: {rounds} round(s) of a {info.get('kind')} ({info.get('task')}) on "
                f"{len(info.get('features') or [])} feature(s) predicting "
                f"{info.get('label')}")
        names = [c for c in ("val_loss", "val_accuracy", "val_r2") if c in df]
        validated = df.dropna(subset=names, how="all") if names else df.iloc[0:0]
        if len(validated):
            last = validated.iloc[-1]
            shown = ", ".join(f"{c} {last[c]:.4f}" for c in names if pd.notna(last[c]))
            rows = f" on {int(last['val_rows'])} rows" if pd.notna(last.get("val_rows")) \
                else ""
            line += f"; final validation (after round {int(last['round'])}{rows}): {shown}"
        else:
            line += "; no validation metrics (validation_split: 0)"
        if info.get("round") is not None:  # results from before a round was named lack it
            line += f"; released model: after round {info['round']}"
            chosen = df[df["round"] == info["round"]] if "round" in df else df.iloc[0:0]
            shown = ", ".join(f"{c} {chosen.iloc[0][c]:.4f}" for c in names
                              if len(chosen) and pd.notna(chosen.iloc[0][c]))
            if info.get("selected_by"):
                line += f" ({info['selected_by']}{': ' + shown if shown else ''})"
        line += f"; contributors: {', '.join(self.meta.get('contributors', []))}"
        if self.epsilon:
            line += "; ε spent: " + ", ".join(
                f"{n} {e:g}" if isinstance(e, int | float) else f"{n} {e}"
                for n, e in self.epsilon.items())
        return line

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

        from jobs.train.models import released_model

        module = released_model(self.model_info)
        module.load_state_dict(torch.load(io.BytesIO(base64.b64decode(
            self.model_info["state_dict"])), weights_only=True))
        return module.eval()

    def plot(self) -> bytes:
        return png(self.learning_curve())

    def learning_curve(self):
        """Losses on the left axis, accuracy or R² on the right: they live on different
        scales (an MSE in label units against an R² of at most 1), so one axis would
        flatten the score to a line. Each axis fits its own data; R² below
        :data:`R2_FLOOR` (an initial model far off the mean) is cut off, and said so, so
        as not to squash the rounds that matter, and a loss that falls over orders of
        magnitude gets a log scale."""
        df = self.metrics
        fig, ax = figure()
        losses = [c for c in ("train_loss", "val_loss") if c in df and df[c].notna().any()]
        scores = [c for c in ("val_accuracy", "val_r2") if c in df and df[c].notna().any()]
        for col in losses:
            ax.plot(df["round"], df[col], marker="o", label=col)
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("round")
        ax.set_ylabel("loss")
        values = df[losses].to_numpy(dtype=float).ravel() if losses else np.array([])
        values = values[np.isfinite(values)]
        if len(values) and values.min() > 0 and values.max() / values.min() > 50:
            ax.set_yscale("log")
        handles, labels = ax.get_legend_handles_labels()
        if scores:
            right = ax.twinx()
            for i, col in enumerate(scores, start=len(losses)):
                right.plot(df["round"], df[col], marker="s", linestyle="--",
                           color=f"C{i}", label=col)
            right.set_ylabel(" / ".join({"val_accuracy": "accuracy", "val_r2": "R²"}[c]
                                        for c in scores))
            got = df[scores].to_numpy(dtype=float).ravel()
            got = got[np.isfinite(got)]
            if len(got):
                low, high = max(float(got.min()), R2_FLOOR), float(got.max())
                pad = max(high - low, 0.02) * 0.08
                right.set_ylim(low - pad, high + pad)
                if got.min() < R2_FLOOR:
                    right.set_ylabel(f"{right.get_ylabel()} (below {R2_FLOOR:g} not shown)")
            more_h, more_l = right.get_legend_handles_labels()
            handles, labels = handles + more_h, labels + more_l
        ax.set_title("federated training: learning curve")
        if handles:
            ax.legend(handles, labels, fontsize="small", loc="upper center",  # below
                      bbox_to_anchor=(0.5, -0.22), ncol=len(labels), frameon=False)
        return fig

    def plots(self) -> dict[str, bytes]:
        """Each plot as PNG by its file name (what ``write`` saves, a console shows)."""
        return {"learning_curve.png": self.plot()}

    def write(self, out: Path) -> list[Path]:
        from jobs.train.models import save_model_file

        written = write_tables(self.tables(), out)
        (out / "learning_curve.png").write_bytes(self.plots()["learning_curve.png"])
        save_model_file(self.model_info, out / "model.pt")
        slim = {k: v for k, v in self.raw.items() if k != "model"}
        (out / "result.json").write_text(json.dumps(slim, indent=2))
        return [*written, out / "learning_curve.png", out / "model.pt", out / "result.json"]
