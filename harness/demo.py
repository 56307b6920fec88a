"""`scifed demo` / `make demo`: a coordinator and three platform nodes on loopback, each
holding the Palmer penguins of one island. The nodes register their data, the operator
creates a joint study, each officer accepts it, and a researcher runs a BFV-encrypted
statistics job whose result — sealed to the researcher — is printed beside pandas on
the pooled data and written as an HTML report."""

from __future__ import annotations

import time
from pathlib import Path

import yaml

from harness.federation import LocalFederation, wait_for
from scifed.console import console, print_table

REPO = Path(__file__).resolve().parent.parent
ISLANDS = {"biscoe": "Biscoe", "dream": "Dream", "torgersen": "Torgersen"}


def penguins_by_island(fed: LocalFederation) -> None:
    """Each node's officer registers its island's rows with metadata describing them."""
    import palmerpenguins

    df = palmerpenguins.load_penguins()
    base = yaml.safe_load((REPO / "configs" / "datasets" / "penguins.yaml").read_text())
    for node, island in ISLANDS.items():
        meta = dict(base)
        meta["title"] = {"zh": f"帕尔默企鹅形态测量（{island} 岛）",
                         "en": f"Palmer penguins, {island} Island"}
        meta["spatial_coverage"] = {**base.get("spatial_coverage", {}),
                                    "place_name": f"{island} Island, Palmer Archipelago"}
        fed.add_dataset(node, df[df.island == island], meta, "penguins")


def run(out: str, keep: bool = False) -> None:
    t0 = time.monotonic()
    root = Path(out).resolve()
    if root.exists():
        import shutil

        shutil.rmtree(root)
    fed = LocalFederation(root, {n: f"Palmer Station LTER — {i}" for n, i in ISLANDS.items()})
    with console.status("enrolling the CA, coordinator, 3 nodes, an operator and a researcher"):
        fed.setup()
    console.print(f"[green]✓[/] PKI and configs in {root}")
    with fed:
        with console.status("starting the coordinator and 3 nodes"):
            fed.start_all()
        console.print(f"[green]✓[/] coordinator on {fed.address}; nodes {', '.join(ISLANDS)}")
        penguins_by_island(fed)
        console.print("[green]✓[/] each node registered its island's penguins "
                      "(sha256, rows, Table Schema, validated metadata)")
        with fed.researcher() as r, fed.operator() as op:
            wait_for(lambda: len(r.search("penguins")) == 3, 30, "the catalog to show 3 records")
            hits = r.search("penguins")
            print_table("researcher: scifed catalog search penguins",
                        ["id", "title", "platform", "grade", "category", "rows"],
                        [(h.id, h.title, h.platform, h.grade, h.category, h.rows)
                         for h in hits.itertuples()])
            by_col = r.search("", columns=["body_mass_g"], subjects=["Ecology"])
            console.print(f"datasets with a body_mass_g column in Ecology: {len(by_col)}")
            nodes = op.nodes()
            print_table("operator: scifed nodes list", ["name", "online", "datasets"],
                        [(n.name, n.online, n.datasets) for n in nodes.itertuples()])
        run_study(fed, root)
        if keep:
            console.print("federation running; Ctrl-C to stop")
            try:
                while True:
                    time.sleep(1)
            except KeyboardInterrupt:
                pass
    console.print(f"[green]✓[/] all processes stopped; demo took {time.monotonic() - t0:.1f}s")


COLS = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"]
EDGES = [2500, 3000, 3500, 4000, 4500, 5000, 5500, 6000, 6500]


def run_study(fed: LocalFederation, root: Path) -> None:
    import numpy as np
    import palmerpenguins
    import pandas as pd

    with console.status("operator creates the study; each officer accepts; lead node "
                        "generates the study key"):
        fed.create_study("penguin-morphology", {n: "penguins" for n in ISLANDS},
                         purpose="Sexual dimorphism and body size across islands")
    console.print("[green]✓[/] study penguin-morphology active: BFV study key sealed to each node")
    spec = yaml.safe_dump({
        "study": "penguin-morphology", "type": "stats",
        "datasets": {n: "penguins" for n in ISLANDS},
        "stats": {"columns": COLS, "histograms": {"body_mass_g": EDGES},
                  "quantiles": {"body_mass_g": [0.25, 0.5, 0.75]},
                  "group_counts": ["species", "sex"], "correlation": COLS}})
    (root / "job.yaml").write_text(spec)
    t = time.monotonic()
    with fed.researcher() as r:
        job_id = r.submit(spec, "job.yaml")
        with console.status(f"researcher: scifed job submit job.yaml -> {job_id}"):
            info = r.wait(job_id)
        if info.status != "done":
            raise SystemExit(f"demo job failed: {info.error}")
        res = r.result(job_id)
    console.print(f"[green]✓[/] job {job_id} released in {time.monotonic() - t:.1f}s "
                  f"(contributors: {', '.join(info.contributors)})")
    df = palmerpenguins.load_penguins()
    rows = []
    for col in COLS:
        fed_row = res.summary.loc[col]
        rows += [(col, "mean", f"{fed_row['mean']:.6f}", f"{df[col].mean():.6f}"),
                 (col, "variance", f"{fed_row['variance']:.4f}", f"{df[col].var():.4f}")]
    for p in (0.25, 0.5, 0.75):
        rows.append(("body_mass_g", f"quantile {p}",
                     f"{res.quantiles.loc['body_mass_g', str(p)]:.6f}",
                     f"{df.body_mass_g.quantile(p):.6f}"))
    counts, _ = np.histogram(df.body_mass_g.dropna(), bins=EDGES)
    rows.append(("body_mass_g", "histogram", str(res.histograms["body_mass_g"]["count"]
                                                 .tolist()), str(counts.tolist())))
    for col in ("species", "sex"):
        got = dict(zip(res.groups[col].value, res.groups[col]["count"], strict=True))
        truth = dict(sorted(df[col].value_counts().to_dict().items()))
        rows.append((col, "counts", str(got), str(truth)))
    corr = df[COLS].corr()
    rows.append(("bill_length_mm~body_mass_g", "correlation",
                 f"{res.correlation.loc['bill_length_mm', 'body_mass_g']:.8f}",
                 f"{corr.loc['bill_length_mm', 'body_mass_g']:.8f}"))
    print_table("federated result (opened by the researcher) vs pandas on the pooled data",
                ["column", "statistic", "federated", "pooled pandas"], rows)
    truth = pd.DataFrame(rows, columns=["column", "statistic", "federated", "pooled pandas"])
    report = root / "report.html"
    report.write_text(res.html({"federated vs pooled ground truth": truth},
                               title="scifed demo: penguins across three island platforms"))
    console.print(f"[green]✓[/] HTML report with plots: {report}")
