"""Costs of federated training, each beside its baseline measured in the same run:

1. Per-round wall time and traffic of a `train` job on a real deployment on loopback
   (coordinator, 3 nodes with penguins split by island, SuperLink with TLS and node
   auth, 3 SuperNodes), with CKKS aggregation vs the same app aggregating in clear
   (``benchmarks/plain_fab``, benchmark only).
2. The CKKS work inside one round — encrypt at each node, sum at the coordinator,
   decrypt — and ciphertext vs float32 bytes, for the penguins model and a wider MLP.
3. DP-SGD (Opacus, RDP accountant, Poisson sampling) epoch time vs plain PyTorch SGD on
   the same data and model, one thread.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import palmerpenguins
import torch
import yaml
from rich.console import Console
from rich.table import Table

from coordinator.training import train_on_flower
from harness.federation import LocalFederation
from scifed.fl import local
from scifed.fl.localcluster import FlowerCluster
from scifed.he import StudyKey, sum_ciphertexts
from scifed.models import build_model, model_to_vector
from scifed.trainspec import TrainSpec

REPO = Path(__file__).resolve().parent.parent
PLAIN_APP = REPO / "benchmarks" / "plain_fab"
ISLANDS = {"biscoe": "Biscoe", "dream": "Dream", "torgersen": "Torgersen"}
FEATURES = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"]
ROUNDS = 3


def penguin_spec(pooled) -> TrainSpec:
    return TrainSpec.model_validate({
        "features": FEATURES, "label": "species", "task": "classification",
        "classes": ["Adelie", "Chinstrap", "Gentoo"], "model": {"kind": "logistic_regression"},
        "rounds": ROUNDS, "local_epochs": 10, "batch_size": 16, "lr": 0.5,
        "validation_split": 0.1, "min_node_classes": 1,
        "standardize": {f: (float(pooled[f].mean()), float(pooled[f].std())) for f in FEATURES}})


def deployment(root: Path, console: Console) -> list[tuple[str, dict, int]]:
    """(label, final checkpoint, bytes moved) for the HE run and its plaintext twin."""
    penguins = palmerpenguins.load_penguins()
    meta = yaml.safe_load((REPO / "configs" / "datasets" / "penguins.yaml").read_text())
    fed = LocalFederation(root, {n: f"Palmer {i}" for n, i in ISLANDS.items()})
    cluster = None
    try:
        with console.status("starting coordinator, 3 nodes, SuperLink and 3 SuperNodes"):
            fed.setup()
            fed.start_all()
            for node, island in ISLANDS.items():
                fed.add_dataset(node, penguins[penguins.island == island], meta, "penguins")
            fed.create_study("bench", {n: "penguins" for n in ISLANDS})
            cluster = FlowerCluster(fed)
            cluster.start()
        spec = penguin_spec(penguins.dropna(subset=FEATURES))
        out = []
        for label, app in (("CKKS (scifed train)", None), ("plaintext twin", PLAIN_APP)):
            with console.status(f"{ROUNDS} rounds + final evaluation, {label}"):
                job_dir = cluster.job_dir(f"bench-{len(out)}", "bench", spec,
                                          {n: "penguins" for n in ISLANDS}, min_nodes=3)
                kwargs = {"app_dir": app} if app else {}
                checkpoint = train_on_flower(cluster.flower, job_dir, **kwargs)
                state = cluster.flower.run_state(checkpoint["flower_runs"][-1])
                out.append((label, checkpoint, state.bytes_sent + state.bytes_recv))
        return out
    finally:
        if cluster is not None:
            cluster.stop()
        fed.stop_all()


def he_costs(n_params: int, nodes: int = 3, repeats: int = 5) -> dict[str, float]:
    """Seconds per encrypt (one node), sum (coordinator), decrypt; bytes per ciphertext."""
    key = StudyKey.generate()
    public = key.public_bytes()
    rng = np.random.default_rng(0)
    vectors = [np.append(rng.normal(size=n_params) * 100, 100.0) for _ in range(nodes)]
    enc, add, dec = [], [], []
    for _ in range(repeats):
        t = time.perf_counter()
        blobs = [key.encrypt(v) for v in vectors]
        enc.append((time.perf_counter() - t) / nodes)
        t = time.perf_counter()
        total = sum_ciphertexts(public, blobs)
        add.append(time.perf_counter() - t)
        t = time.perf_counter()
        key.decrypt(total)
        dec.append(time.perf_counter() - t)
    return {"encrypt": statistics.median(enc), "sum": statistics.median(add),
            "decrypt": statistics.median(dec), "bytes": len(blobs[0]),
            "plain_bytes": 4 * (n_params + 1)}


def synthetic(rows: int, features: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, features)).astype(np.float32)
    w = rng.normal(size=(features, 3))
    return x, (x @ w + rng.normal(scale=2.0, size=(rows, 3))).argmax(axis=1)


def epoch_seconds(x: np.ndarray, y: np.ndarray, model: dict, dp: bool) -> float:
    """Median seconds per epoch of local.train (setup and noise calibration excluded)."""
    spec = TrainSpec.model_validate({
        "features": [f"f{i}" for i in range(x.shape[1])], "label": "y",
        "task": "classification", "classes": ["a", "b", "c"], "model": model, "rounds": 1,
        "local_epochs": 1, "batch_size": 64, "lr": 0.1, "validation_split": 0.0,
        **({"dp": {"epsilon": 3.0}} if dp else {})})
    data = local.split(x, y, spec, "bench")
    history: list[tuple[float, float, int]] = []
    times = []
    for _ in range(4):
        net = local.initial_model(spec)
        t = time.perf_counter()
        result = local.train(net, data, spec, round_no=1, node="bench",
                             dp=spec.dp, history=history)
        times.append(time.perf_counter() - t)
        history = result.history[:1]  # reuse sigma: time the epoch, not the calibration
    return statistics.median(times[1:])


def main() -> None:
    console = Console()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        runs = deployment(Path(tmp) / "fed", console)
    table = Table(title=f"train job on loopback, 3 nodes, {ROUNDS} rounds + final "
                  "evaluation (logistic regression, penguins by island)", title_justify="left")
    for col in ("aggregation", "s / round (median)", "final eval s", "bytes / round-trip",
                "run total s"):
        table.add_column(col, justify="right")
    for label, ck, moved in runs:
        rounds = [ck["round_seconds"][str(r)] for r in range(1, ROUNDS + 1)]
        table.add_row(label, f"{statistics.median(rounds):.1f}",
                      f"{ck['round_seconds']['final']:.1f}", f"{moved / (ROUNDS + 1):,.0f}",
                      f"{sum(ck['round_seconds'].values()):.1f}")
    console.print(table)

    table = Table(title="CKKS work per round (3 nodes; encrypt is per node)",
                  title_justify="left")
    for col in ("model", "parameters", "encrypt ms", "sum ms", "decrypt ms",
                "ciphertext bytes", "float32 bytes", "expansion"):
        table.add_column(col, justify="right")
    for label, n_params in (("logreg 4->3 (penguins)", 15),
                            ("mlp 30->[64,64]->3", 30 * 64 + 64 + 64 * 64 + 64 + 64 * 3 + 3)):
        c = he_costs(n_params)
        table.add_row(label, f"{n_params:,}", f"{1000 * c['encrypt']:.1f}",
                      f"{1000 * c['sum']:.1f}", f"{1000 * c['decrypt']:.1f}",
                      f"{c['bytes']:,}", f"{c['plain_bytes']:,}",
                      f"{c['bytes'] / c['plain_bytes']:.0f}x")
    console.print(table)

    table = Table(title="DP-SGD (Opacus, eps=3) vs plain SGD: seconds per epoch, 1 thread, "
                  "batch 64", title_justify="left")
    for col in ("data", "model", "plain s", "DP-SGD s", "slowdown"):
        table.add_column(col, justify="right")
    x, y = synthetic(20_000, 30)
    for label, model in (("logreg", {"kind": "logistic_regression"}),
                         ("mlp [64]", {"kind": "mlp", "hidden": [64]})):
        with console.status(f"epochs of {label}"):
            plain, private = epoch_seconds(x, y, model, False), epoch_seconds(x, y, model, True)
        n_params = len(model_to_vector(build_model(model, 30, 3)))
        table.add_row(f"synthetic 20k x 30 ({n_params} params)", label, f"{plain:.3f}",
                      f"{private:.3f}", f"{private / plain:.1f}x")
    console.print(table)


if __name__ == "__main__":
    main()
