"""A released ``train`` result: per-round metrics, privacy spent, and the model."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from jobs.views import figure, png, write_tables


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

        from jobs.train.models import released_model

        module = released_model(self.model_info)
        module.load_state_dict(torch.load(io.BytesIO(base64.b64decode(
            self.model_info["state_dict"])), weights_only=True))
        return module.eval()

    def plot(self) -> bytes:
        df = self.metrics
        fig, ax = figure()
        for col in [c for c in df.columns if c.startswith(("val_", "train_")) and
                    c != "val_rows"]:
            ax.plot(df["round"], df[col], marker="o", label=col)
        ax.set_xlabel("round")
        ax.set_title("federated training: learning curve")
        ax.legend()
        return png(fig)

    def write(self, out: Path) -> list[Path]:
        from jobs.train.models import save_model_file

        written = write_tables(self.tables(), out)
        (out / "learning_curve.png").write_bytes(self.plot())
        save_model_file(self.model_info, out / "model.pt")
        slim = {k: v for k, v in self.raw.items() if k != "model"}
        (out / "result.json").write_text(json.dumps(slim, indent=2))
        return [*written, out / "learning_curve.png", out / "model.pt", out / "result.json"]
