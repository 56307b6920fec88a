"""What every researcher view shares: figures without a screen, PNG bytes, CSV tables,
the HTML page, and the one function that picks a released result's view by its type."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pandas as pd


def figure():
    import matplotlib

    matplotlib.use("Agg")  # no screen on nodes and CI
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(6, 3.2), dpi=100)


def write_tables(tables: dict[str, pd.DataFrame], out: Path) -> list[Path]:
    """One CSV per table into ``out`` (created); the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    for name, df in tables.items():
        df.to_csv(out / f"{name}.csv", index=False)
    return [out / f"{name}.csv" for name in tables]


def png(fig) -> bytes:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()



def load_result(raw: dict) -> Any:
    """The right view of a released result, by the job type it carries."""
    from jobs import registry

    return registry.get(raw.get("type", "stats")).view(raw)
