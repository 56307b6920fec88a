"""Costs of federated training, each beside its baseline measured in the same run:

1. Per-round wall time and traffic of a `train` job on a real deployment on loopback
   (coordinator supervising its SuperLink with TLS and node auth, 3 nodes with penguins
   split by island each supervising its SuperNode), submitted as a researcher does, with
   BFV aggregation vs the same app aggregating in clear (``benchmarks/plain_fab``,
   benchmark only, run on the same SuperLink and SuperNodes).
2. The BFV work inside one round — encrypt at each node, sum at the coordinator,
   decrypt — and ciphertext vs float32 bytes, for the penguins model and a wider MLP,
   in round 1's exact encoding and later rounds' quantised one.
3. DP-SGD (Opacus, RDP accountant, Poisson sampling) epoch time vs plain PyTorch SGD on
   the same data and model, one thread.
"""

from __future__ import annotations

import itertools
import json
import shutil
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

from coordinator.flower import SuperLink
from harness.federation import LocalFederation
from jobs.train import local
from jobs.train.coordinate import read_checkpoint, train_on_flower
from jobs.train.models import build_model, model_to_vector
from jobs.train.protocol import PUBLIC_CONTEXT_FILE, RUN_FILE, contribution, write_json
from jobs.train.spec import TrainSpec
from scifed.config import CoordinatorConfig, load_config
from scifed.errors import UserError
from scifed.flower_apps import build_fab
from scifed.he import StudyKey, sum_ciphertexts

REPO = Path(__file__).resolve().parent.parent
PLAIN_APP = REPO / "benchmarks" / "plain_fab"
ISLANDS = {"biscoe": "Biscoe", "dream": "Dream", "torgersen": "Torgersen"}
FEATURES = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"]
ROUNDS = 3


def penguin_job(pooled) -> str:
    """The job.yaml a researcher would submit."""
    return yaml.safe_dump({
        "study": "bench", "type": "train", "datasets": {n: "penguins" for n in ISLANDS},
        "train": {
            "features": FEATURES, "label": "species", "task": "classification",
            "classes": ["Adelie", "Chinstrap", "Gentoo"],
            "model": {"kind": "logistic_regression"}, "rounds": ROUNDS, "local_epochs": 10,
            "batch_size": 16, "lr": 0.5, "validation_split": 0.1, "min_node_classes": 1,
            "min_nodes": len(ISLANDS),
            "standardize": {f: [float(pooled[f].mean()), float(pooled[f].std())]
                            for f in FEATURES}}})


def superlink(fed: LocalFederation) -> SuperLink:
    """A Control API client of the coordinator's (supervised) SuperLink."""
    cfg = load_config(fed.coord_dir / "coordinator.yaml", CoordinatorConfig)
    return SuperLink(cfg.state_dir, cfg.tls.files(), port=cfg.flower_port)


def plaintext_twin(link: SuperLink, he_dir: Path) -> dict:
    """The same job as a run of the plaintext FAB on the same SuperLink and SuperNodes: a
    copy of the HE job's directory (job, public context; no checkpoint) under a job id of
    its own. Its ClientApps ask each node's local API for the same grant."""
    job_dir = he_dir.with_name(he_dir.name + "-plain")
    job_dir.mkdir()
    run = json.loads((he_dir / RUN_FILE).read_text())
    write_json(job_dir / RUN_FILE, {**run, "job_id": job_dir.name})
    shutil.copy(he_dir / PUBLIC_CONTEXT_FILE, job_dir / PUBLIC_CONTEXT_FILE)
    return train_on_flower(link, job_dir, app_dir=PLAIN_APP)


def deployment(root: Path, console: Console) -> list[tuple[str, dict, int]]:
    """(label, final checkpoint, bytes moved) for the HE job and its plaintext twin."""
    penguins = palmerpenguins.load_penguins()
    meta = yaml.safe_load((REPO / "configs" / "datasets" / "penguins.yaml").read_text())
    fed = LocalFederation(root, {n: f"Palmer {i}" for n, i in ISLANDS.items()}, flower=True,
                          task_timeout_seconds=120)
    link = None
    try:
        with console.status("starting the coordinator (it supervises the SuperLink) and 3 "
                            "nodes (each supervises its SuperNode)"):
            fed.setup()
            plain = build_fab(PLAIN_APP).hash_str  # code of its own: each officer approves it
            for node in ISLANDS:
                path = fed.node_config(node)
                cfg = yaml.safe_load(path.read_text())
                path.write_text(yaml.safe_dump({**cfg, "trusted_apps": [plain]}))
            fed.start_all()
            for node, island in ISLANDS.items():
                fed.add_dataset(node, penguins[penguins.island == island], meta, "penguins")
            fed.create_study("bench", {n: "penguins" for n in ISLANDS})
        link = superlink(fed)
        out = []
        with console.status(f"{ROUNDS} rounds + final evaluation, BFV (scifed train job)"):
            with fed.researcher() as r:
                job_id = r.submit(penguin_job(penguins.dropna(subset=FEATURES)))
                info = r.wait(job_id, timeout=900)
            if info.status != "done":
                raise UserError(f"benchmark job {job_id} {info.status}: {info.error}")
            he_dir = link.jobs_dir / job_id
            checkpoint = read_checkpoint(he_dir)
            assert checkpoint is not None
            state = link.run_state(checkpoint["flower_runs"][-1])
            out.append(("BFV (scifed train)", checkpoint, state.bytes_sent + state.bytes_recv))
        with console.status(f"{ROUNDS} rounds + final evaluation, plaintext twin"):
            checkpoint = plaintext_twin(link, he_dir)
            state = link.run_state(checkpoint["flower_runs"][-1])
            out.append(("plaintext twin", checkpoint, state.bytes_sent + state.bytes_recv))
        return out
    finally:
        if link is not None:  # closes its Control API client (the coordinator owns the
            link.stop()       # process): a keep-alive connection delays its shutdown
        fed.stop_all()


def he_costs(n_params: int, later_round: bool, nodes: int = 3,
             repeats: int = 5) -> dict[str, float]:
    """Seconds per encrypt (one node), sum (coordinator), decrypt; bytes per ciphertext;
    for round 1's exact update or a later round's quantised one (protocol.contribution)."""
    key = StudyKey.generate()
    public = key.public_bytes()
    rng = np.random.default_rng(0)
    start = rng.normal(size=n_params)
    thetas = [start + rng.normal(scale=0.1, size=n_params) for _ in range(nodes)]
    rows = [100 + 10 * i for i in range(nodes)]
    later = {"pooled": float(sum(rows)), "theta_start": start, "capacity": nodes}

    def encrypt(theta: np.ndarray, n: int) -> bytes:
        return contribution(key, theta, n, **(later if later_round else {}))[0]

    enc, add, dec = [], [], []
    for _ in range(repeats):
        t = time.perf_counter()
        blobs = [encrypt(theta, n) for theta, n in zip(thetas, rows, strict=True)]
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

    table = Table(title="BFV work per round (3 nodes; encrypt is per node): round 1 exact, "
                  "later rounds quantised", title_justify="left")
    for col in ("model", "parameters", "round", "encrypt ms", "sum ms", "decrypt ms",
                "ciphertext bytes", "float32 bytes", "expansion"):
        table.add_column(col, justify="right")
    for (label, n_params), later_round in itertools.product(
            (("logreg 4->3 (penguins)", 15),
             ("mlp 30->[64,64]->3", 30 * 64 + 64 + 64 * 64 + 64 + 64 * 3 + 3)), (False, True)):
        c = he_costs(n_params, later_round)
        table.add_row(label, f"{n_params:,}", "2+" if later_round else "1",
                      f"{1000 * c['encrypt']:.1f}",
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
