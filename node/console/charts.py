"""The console's plots, as PNG bytes for ``png_data_uri`` (the CSP allows ``data:``
images only): the scorecard's dimensions and the budget spent over time."""

from __future__ import annotations

import datetime as dt

from jobs.views import figure, png

STATUS_COLOURS = {"pass": "#1a7f37", "warn": "#9a6700", "fail": "#cf222e", "n/a": "#8c959f"}


def dimensions(report: dict) -> bytes:
    """Each dimension's score of the scorecard (0-1, drawn as 0-100), with the overall
    score (0-100)."""
    dims = {k: v for k, v in report["dimensions"].items() if v is not None}
    fig, ax = figure()
    names = list(dims)[::-1]
    ax.barh(names, [100 * dims[n] for n in names], color="#1f6feb")
    ax.axvline(report["score"], color="#0d2240", linestyle="--", linewidth=1,
               label=f"score {report['score']:.1f}")
    ax.set_xlim(0, 100)
    ax.set_xlabel("dimension score")
    ax.set_title(f"quality grade {report['grade']}")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22), fontsize=8, frameon=False)
    return png(fig)


def metric_status(report: dict) -> bytes:
    """How many metrics pass, warn, fail or do not apply, per dimension."""
    per: dict[str, dict[str, int]] = {}
    for m in report["metrics"].values():
        per.setdefault(m["dimension"], {}).setdefault(m["status"], 0)
        per[m["dimension"]][m["status"]] += 1
    fig, ax = figure()
    names = sorted(per)
    left = [0] * len(names)
    for status, colour in STATUS_COLOURS.items():
        counts = [per[n].get(status, 0) for n in names]
        ax.barh(names, counts, left=left, color=colour, label=status)
        left = [a + b for a, b in zip(left, counts, strict=True)]
    ax.set_xlabel("metrics")
    ax.set_title("metric status by dimension")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22), fontsize=8, ncols=4,
              frameon=False)
    return png(fig)


def budget_over_time(rows: list[dict]) -> bytes | None:
    """Cumulative ε spent on each dataset this year, step by step, with its annual
    budget as a dashed line; None when nothing was charged."""
    charged = [r for r in rows if r.get("charges")]
    if not charged:
        return None
    import matplotlib.dates as mdates

    times = {r["dataset_id"]: [dt.datetime.fromtimestamp(c["ts_ms"] / 1000, dt.UTC)
                               for c in r["charges"]] for r in charged}
    now = dt.datetime.now(dt.UTC)
    first = min(t[0] for t in times.values())
    start = first - max((now - first) / 10, dt.timedelta(minutes=1))
    fig, ax = figure()
    for r in charged:
        total, ys = 0.0, [0.0]
        for c in r["charges"]:
            total += c["epsilon"]
            ys.append(total)
        xs = [start, *times[r["dataset_id"]], now]
        line, = ax.step(xs, [*ys, total], where="post", label=r["dataset_id"])
        ax.plot(xs[1:-1], ys[1:], "o", color=line.get_color())
        if r["annual_budget"]:
            ax.axhline(r["annual_budget"], color=line.get_color(), linestyle="--",
                       linewidth=1)
    ax.set_xlim(start, now)
    locator = mdates.AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    ax.set_ylabel("ε spent (cumulative)")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8, loc="center left")
    return png(fig)
