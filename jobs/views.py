"""What every researcher view shares: figures without a screen, PNG bytes, CSV tables,
the HTML page, and the one function that picks a released result's view by its type."""

from __future__ import annotations

import base64
import html
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


def png(fig) -> bytes:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def forest(labels: list[str], estimate, low, high, *, null: float, xlabel: str,
           title: str, log: bool = False) -> bytes:
    """A forest plot: one row per label, the estimate with its interval, a dashed line at
    the null value (0 for coefficients, 1 for ratios on a log axis)."""
    fig, ax = figure()
    fig.set_size_inches(6, max(2.0, 0.35 * len(labels) + 1.2))
    ys = list(range(len(labels)))[::-1]
    est = pd.Series(estimate, dtype=float).to_numpy()
    err = [est - pd.Series(low, dtype=float).to_numpy(),
           pd.Series(high, dtype=float).to_numpy() - est]
    ax.errorbar(est, ys, xerr=err, fmt="o", color="#3b75af", ecolor="#3b75af", capsize=3)
    ax.axvline(null, color="#999999", lw=0.8, ls="--")
    if log:
        ax.set_xscale("log")
    ax.set_yticks(ys, labels)
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=9)
    return png(fig)


_STYLE = ("<style>body{font-family:sans-serif;margin:2em}table{border-collapse:"
          "collapse}td,th{border:1px solid #ccc;padding:3px 8px}</style>")


def page(title: str, lead: str, tables: dict[str, pd.DataFrame],
         images: dict[str, bytes], notes: list[str] = ()) -> str:
    """A self-contained report.html: a title, a lead paragraph (HTML, already escaped),
    notes (text), each table under its name, each PNG inline under its caption."""
    parts = [f"<h1>{html.escape(title)}</h1>", f"<p>{lead}</p>",
             *(f"<p><em>{html.escape(n)}</em></p>" for n in notes)]
    for name, df in tables.items():
        parts.append(f"<h2>{html.escape(name)}</h2>{df.to_html(index=False, na_rep='')}")
    for caption, data in images.items():
        img = base64.b64encode(data).decode()
        parts.append(f'<h2>{html.escape(caption)}</h2><img src="data:image/png;base64,{img}">')
    return (f"<!doctype html><html><head><meta charset='utf-8'>{_STYLE}</head><body>"
            + "".join(parts) + "</body></html>")


def provenance(meta: dict, rows: int | None = None) -> str:
    """The report's line of where a result comes from (HTML, escaped)."""
    counted = f"rows: {rows} · " if rows is not None else ""
    return (f"{counted}contributors: {html.escape(', '.join(meta.get('contributors', [])))}"
            f" · k = {meta.get('k')} · job {html.escape(str(meta.get('job_id', '')))}")


def headline(res: Any) -> str:
    """A released result's first line: the type's own (``headline()``, e.g. ``train``'s),
    else its rows, contributors and k — what `scifed job result` and the researcher
    console print above the tables."""
    own = getattr(res, "headline", None)
    if own is not None:
        return own()
    return (f"rows: {res.rows}; contributors: {', '.join(res.meta.get('contributors', []))}; "
            f"k = {res.meta.get('k')}")


def display_rows(df: pd.DataFrame) -> list[list]:
    """A result table's cells as shown to a person: rounded to 6 decimals, missing blank."""
    return df.round(6).astype(object).where(df.notna(), "").values.tolist()


def load_result(raw: dict) -> Any:
    """The right view of a released result, by the job type it carries."""
    from jobs import registry

    return registry.get(raw.get("type", "stats")).view(raw)
