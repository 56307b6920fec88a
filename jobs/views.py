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


def write_files(out: Path, tables: dict[str, pd.DataFrame],
                files: dict[str, bytes | str]) -> list[Path]:
    """One CSV per table, then each named file (bytes, or text as UTF-8), into ``out``;
    the paths written."""
    written = write_tables(tables, out)
    for name, content in files.items():
        (out / name).write_bytes(content.encode() if isinstance(content, str) else content)
    return [*written, *(out / name for name in files)]


_STYLE = ("<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
          "td,th{border:1px solid #ccc;padding:3px 8px}</style>")


def html_page(parts: list[str]) -> str:
    """The report page around its parts (HTML already escaped)."""
    return (f"<!doctype html><html><head><meta charset='utf-8'>{_STYLE}</head><body>"
            + "".join(parts) + "</body></html>")


def provenance(meta: dict, rows: int) -> str:
    """The report's line of where a result comes from (HTML, escaped)."""
    import html

    return (f"rows: {rows} · contributors: "
            f"{html.escape(', '.join(meta.get('contributors', [])))} · k = {meta.get('k')}"
            f" · job {html.escape(str(meta.get('job_id', '')))}")


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
