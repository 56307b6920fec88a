"""The training and DP-SGD areas' tables, from ``benchmarks.train_bench``'s measurements
(it measures; this module only picks its figures and lays them out with
``benchmarks.table``, as every area does)."""

from __future__ import annotations

import itertools
import statistics
import tempfile
from pathlib import Path

import torch
from rich.console import Console

from benchmarks import train_bench as tb
from benchmarks.table import Figure, print_area

MLP = ("mlp 30->[64,64]->3", 30 * 64 + 64 + 64 * 64 + 64 + 64 * 3 + 3)


def training(console: Console | None = None) -> None:
    """Round times of the penguin job (BFV) beside its plaintext twin and Flower's no-op
    floor on the same deployment (SuperNode pacing on), and the BFV work of a round."""
    console = console or Console()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        runs = {label: (ck, moved) for label, ck, moved in
                tb.deployment(Path(tmp) / "fed", console, "on")}
    median = {label: statistics.median(tb.round_times(ck)) for label, (ck, _) in runs.items()}
    trips = {label: moved / len(ck["round_seconds"]) for label, (ck, moved) in runs.items()}
    he, plain, floor = "BFV (scifed train)", "plaintext twin", "no-op (Flower floor)"
    figures = [
        Figure(f"penguin train round, 3 nodes (median of {tb.ROUNDS})", median[he],
               median[plain], "≤ 3", "s"),
        Figure("Flower's own no-op round, same deployment (floor)", median[floor], None, "",
               "s"),
        Figure("penguin round above the floor", median[he] - median[floor],
               median[plain] - median[floor], "", "s"),
        Figure("bytes per round-trip through the SuperLink", trips[he], trips[plain], "",
               "B"),
    ]
    for (label, n_params), later in ((("logreg 4->3 (penguins)", 15), True), (MLP, False),
                                     (MLP, True)):
        c = tb.he_costs(n_params, later)
        name = f"{label}, round {'2+' if later else '1'}"
        figures += [
            Figure(f"{name}: ciphertext bytes per parameter", c["bytes"] / n_params,
                   c["plain_bytes"] / n_params, "≤ 4.0 (model updates)", "B/param"),
            Figure(f"{name}: encrypt at a node + sum + decrypt",
                   1000 * (c["encrypt"] + c["sum"] + c["decrypt"]), None, "", "ms"),
        ]
    for nodes in (3, 5, 10):
        c = tb.reveal_costs(15, nodes)
        name = f"round unmask by t-of-n shares, {nodes} nodes (penguins model)"
        figures += [
            Figure(f"{name}: CPU per node (shares out, view answered)", c["node_ms"],
                   c["node_ms_direct"], "", "ms"),
            Figure(f"{name}: CPU at the ServerApp (seeds rebuilt, masks made)",
                   c["server_ms"], c["server_ms_direct"], "", "ms"),
            Figure(f"{name}: bytes per node", c["bytes"], c["bytes_direct"], "", "B"),
        ]
    print_area(console, "training: a train job on loopback (coordinator's SuperLink, 3 "
               "nodes' SuperNodes, mTLS, pacing on)", figures, "the same app aggregating "
               "in clear on the same SuperLink and SuperNodes; float32 for bytes; for "
               "the unmask by shares, the direct reveal of each node's own seed (sets of "
               "two)",
               "Anchor: issue 14 item 5.")


# 4 -> 1000 -> 1000 -> 3: 1,009,003 parameters, the 1M-parameter model
MILLION = {"kind": "mlp", "hidden": [1000, 1000]}


def million(console: Console | None = None) -> None:
    """A training round of a 1M-parameter MLP on the penguins (BFV, pairwise masks, the
    unmask) beside its plaintext twin and Flower's no-op floor, in one deployment."""
    console = console or Console()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        runs = {label: (ck, moved) for label, ck, moved in
                tb.deployment(Path(tmp) / "fed", console, "on", MILLION, lr=0.01)}
    median = {label: statistics.median(tb.round_times(ck)) for label, (ck, _) in runs.items()}
    trips = {label: moved / len(ck["round_seconds"]) for label, (ck, moved) in runs.items()}
    he, plain, floor = "BFV (scifed train)", "plaintext twin", "no-op (Flower floor)"
    params = 4 * 1000 + 1000 + 1000 * 1000 + 1000 + 1000 * 3 + 3
    figures = [
        Figure(f"{params:,}-parameter MLP: s per round (baseline: plaintext twin)",
               median[he], median[plain], "", "s"),
        Figure("HE round / plaintext round", median[he] / median[plain], None, "≤ 1.05", "×"),
        Figure("Flower's no-op round, same deployment", median[floor], None, "", "s"),
        Figure("bytes per round trip (baseline: plaintext twin)", trips[he], trips[plain],
               "", "B"),
    ]
    print_area(console, f"1M-parameter training round, 3 nodes on loopback, {tb.ROUNDS} "
               "rounds + final evaluation (benchmarks/train_bench.py deployment)", figures,
               "the same app aggregating in clear, same SuperLink and SuperNodes",
               "Anchor: issue 14 item 1 (HE round ≤ 1.05 × plaintext round).")


def dpsgd(console: Console | None = None) -> None:
    """CPU seconds per epoch of DP-SGD (Opacus' accountant and sampling, per-sample clipping
    fused into the backward pass) beside plain SGD on the same data, model and batch, and
    beside the Opacus hooks path scifed used before; CPU time of one thread, so the ratio
    holds on a loaded machine."""
    console = console or Console()
    torch.set_num_threads(1)
    x, y = tb.synthetic(20_000, 30)
    figures = []
    for (label, model), batch in itertools.product(
            (("logreg", {"kind": "logistic_regression"}),
             ("mlp [64]", {"kind": "mlp", "hidden": [64]})), (64, 256)):
        with console.status(f"epochs of {label} at batch {batch}"):
            t = {path: tb.epoch_cpu_seconds(x, y, model, batch, path)
                 for path in ("plain", "dp", "hooks-before")}
        name = f"{label}, batch {batch}"
        figures += [Figure(f"{name}: DP-SGD CPU s per epoch (baseline: plain SGD)", t["dp"],
                           t["plain"], "", "s"),
                    Figure(f"{name}: DP-SGD / plain (baseline: Opacus hooks / plain)",
                           t["dp"] / t["plain"], t["hooks-before"] / t["plain"],
                           "≤ 1.5" if batch >= 256 else "", "×")]
    print_area(console, "DP-SGD: Opacus, ε = 3, RDP accountant, Poisson sampling, 20k × 30 "
               f"synthetic, {tb.DP_EPOCHS} epochs per call, 1 thread, CPU time "
               "(benchmarks/train_bench.py)", figures, "plain PyTorch SGD, same data, "
               "model and batch", "Anchor: issue 14 item 5 (≤ 1.5 at batch ≥ 256), "
               "performance anchors T12 (Opacus hooks 2.1-3.8).")


def release(console: Console | None = None) -> None:
    """The release node's check of a training run's attested rounds beside the release
    before it (decrypting the coordinator's sums), and the bytes it adds."""
    console = console or Console()
    figures = []
    for label, n_params in (("logreg 4->3 (penguins)", 15), MLP):
        c = tb.release_costs(n_params)
        name = f"{label}, 3 nodes, {tb.ROUNDS} rounds + final evaluation"
        figures += [
            Figure(f"{name}: release node's check of every round", 1000 * c["check"],
                   1000 * c["before"], "", "ms"),
            Figure(f"{name}: the release task's rounds", c["rounds_bytes"],
                   c["sums_bytes"], "", "B"),
            Figure(f"{name}: added to each node's round reply (trained_from)",
                   c["per_reply"], None, "", "B"),
        ]
    print_area(console, "training release: the attested rounds checked at the release "
               "node (node/round_updates.py verify_rounds)", figures,
               "the release before: decrypting the sums the coordinator handed it",
               "No anchor in the notes; the round trip itself is unchanged.")
