"""Costs of federated training, each beside its baseline measured in the same run:

1. Per-round wall time and traffic of a `train` job on a real deployment on loopback
   (coordinator supervising its SuperLink with TLS and node auth, 3 nodes with penguins
   split by island each supervising its SuperNode), submitted as a researcher does, with
   BFV aggregation, beside the same app aggregating in clear (``benchmarks/plain_fab``)
   and beside Flower's own floor, a no-op app (``benchmarks/noop_fab``), both benchmark
   only and run on the same SuperLink and SuperNodes. All three with scifed's SuperNode
   pacing (``scifed.flower_pacing``) on, then again in a fresh federation with it off.
2. The BFV work inside one round — encrypt at each node, sum at the coordinator,
   decrypt — and ciphertext vs float32 bytes, for the penguins model and a wider MLP,
   in round 1's exact encoding and later rounds' quantised one.
3. DP-SGD (Opacus' RDP accountant, Poisson sampling and noise; per-sample clipping fused
   into the backward pass) epoch CPU time vs plain PyTorch SGD on the same data and model,
   one thread, at batch 64 and 256; beside the same two before (rows fetched one by one,
   Opacus hooks mode), measured in the same run.

``python -m benchmarks.train_bench dp`` runs one section (``rounds``, ``he``, ``dp``).
"""

from __future__ import annotations

import itertools
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
import warnings
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
from scifed import flower_pacing
from scifed.config import CoordinatorConfig, load_config
from scifed.errors import UserError
from scifed.flower_apps import build_fab
from scifed.he import StudyKey, sum_ciphertexts

REPO = Path(__file__).resolve().parent.parent
PLAIN_APP = REPO / "benchmarks" / "plain_fab"
NOOP_APP = REPO / "benchmarks" / "noop_fab"
ISLANDS = {"biscoe": "Biscoe", "dream": "Dream", "torgersen": "Torgersen"}
FEATURES = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"]
ROUNDS = 3
NOOP_ROUNDS = 5
DP_EPOCHS = 5
SECTIONS = ("rounds", "he", "dp")


def penguin_job(pooled, model: dict | None = None, lr: float = 0.5) -> str:
    """The job.yaml a researcher would submit (``model``: the zoo model, by default the
    logistic regression)."""
    return yaml.safe_dump({
        "study": "bench", "type": "train", "datasets": {n: "penguins" for n in ISLANDS},
        "train": {
            "features": FEATURES, "label": "species", "task": "classification",
            "classes": ["Adelie", "Chinstrap", "Gentoo"],
            "model": model or {"kind": "logistic_regression"}, "rounds": ROUNDS,
            "local_epochs": 10,
            "batch_size": 16, "lr": lr, "validation_split": 0.1, "min_node_classes": 1,
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


def noop_floor(link: SuperLink, he_dir: Path) -> dict:
    """Flower's own round floor in the same deployment: ``benchmarks/noop_fab`` (one
    message to every node and back per round, no work) on the same SuperLink and
    SuperNodes, through the same executor and app check."""
    job_dir = he_dir.with_name(he_dir.name + "-noop")
    job_dir.mkdir()
    write_json(job_dir / RUN_FILE, {"job_id": job_dir.name,
                                    "spec": {"rounds": NOOP_ROUNDS, "round_timeout": 60}})
    return train_on_flower(link, job_dir, app_dir=NOOP_APP)


def deployment(root: Path, console: Console, pacing: str, model: dict | None = None,
               lr: float = 0.5) -> list[tuple[str, dict, int]]:
    """(label, final checkpoint, bytes moved) for the HE job, its plaintext twin and the
    no-op app, with the nodes' SuperNodes launched with ``SCIFED_FLOWER_PACING=pacing``
    (``model``: the job's model, by default the penguins' logistic regression)."""
    penguins = palmerpenguins.load_penguins()
    meta = yaml.safe_load((REPO / "configs" / "datasets" / "penguins.yaml").read_text())
    fed = LocalFederation(root, {n: f"Palmer {i}" for n, i in ISLANDS.items()}, flower=True,
                          task_timeout_seconds=120)
    link = None
    before = os.environ.get(flower_pacing.ENV)
    os.environ[flower_pacing.ENV] = pacing  # the nodes, hence their SuperNodes, inherit it
    try:
        with console.status(f"pacing {pacing}: starting the coordinator (it supervises the "
                            "SuperLink) and 3 nodes (each supervises its SuperNode)"):
            fed.setup()
            extra = [build_fab(app).hash_str for app in (PLAIN_APP, NOOP_APP)]
            for node in ISLANDS:  # code of their own: each officer approves them
                path = fed.node_config(node)
                cfg = yaml.safe_load(path.read_text())
                path.write_text(yaml.safe_dump({**cfg, "trusted_apps": extra}))
            fed.start_all()
            for node, island in ISLANDS.items():
                fed.add_dataset(node, penguins[penguins.island == island], meta, "penguins")
            fed.create_study("bench", {n: "penguins" for n in ISLANDS})
        link = superlink(fed)
        out = []
        with console.status(f"pacing {pacing}: {ROUNDS} rounds + final evaluation, BFV "
                            "(scifed train job)"):
            with fed.researcher() as r:
                job_id = r.submit(penguin_job(penguins.dropna(subset=FEATURES), model, lr))
                info = r.wait(job_id, timeout=900)
            if info.status != "done":
                raise UserError(f"benchmark job {job_id} {info.status}: {info.error}")
            he_dir = link.jobs_dir / job_id
            checkpoint = read_checkpoint(he_dir)
            assert checkpoint is not None
            state = link.run_state(checkpoint["flower_runs"][-1])
            out.append(("BFV (scifed train)", checkpoint, state.bytes_sent + state.bytes_recv))
        for label, twin in (("plaintext twin", plaintext_twin),
                            ("no-op (Flower floor)", noop_floor)):
            with console.status(f"pacing {pacing}: {label}"):
                checkpoint = twin(link, he_dir)
                state = link.run_state(checkpoint["flower_runs"][-1])
                out.append((label, checkpoint, state.bytes_sent + state.bytes_recv))
        return out
    finally:
        if before is None:
            os.environ.pop(flower_pacing.ENV, None)
        else:
            os.environ[flower_pacing.ENV] = before
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


def dp_spec(x: np.ndarray, model: dict, batch: int, epochs: int) -> TrainSpec:
    return TrainSpec.model_validate({
        "features": [f"f{i}" for i in range(x.shape[1])], "label": "y",
        "task": "classification", "classes": ["a", "b", "c"], "model": model, "rounds": 1,
        "local_epochs": epochs, "batch_size": batch, "lr": 0.1, "validation_split": 0.0,
        "dp": {"epsilon": 3.0}})


def previous_train(net: torch.nn.Module, data: local.LocalData, spec: TrainSpec,
                   sigma: float | None) -> None:
    """The training loop as it was before fused clipping, for comparison in the same run:
    rows fetched one by one (``TensorDataset``), and under DP Opacus' hooks mode
    (``make_private``: per-sample gradients materialised, then clipped), the same Poisson
    sampling, noise and RDP accountant, epsilon read at the end."""
    from opacus import PrivacyEngine
    from torch.utils.data import DataLoader, TensorDataset

    loader = DataLoader(TensorDataset(data.x_train, data.y_train), batch_size=spec.batch_size,
                        shuffle=True, generator=torch.Generator().manual_seed(1))
    optimizer = torch.optim.SGD(net.parameters(), lr=spec.lr, momentum=local.MOMENTUM)
    engine = None
    if sigma is not None:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Secure RNG turned off")
            engine = PrivacyEngine(accountant="rdp")
        net, optimizer, loader = engine.make_private(
            module=net, optimizer=optimizer, data_loader=loader, noise_multiplier=sigma,
            max_grad_norm=1.0, poisson_sampling=True)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        for _ in range(spec.local_epochs):
            for xb, yb in loader:
                optimizer.zero_grad()
                loss = local.loss_fn(spec.task, net(xb), yb)
                loss.backward()
                optimizer.step()
                loss.item()
    if engine is not None:
        engine.get_epsilon(1e-5)


def epoch_cpu_seconds(x: np.ndarray, y: np.ndarray, model: dict, batch: int, path: str,
                      epochs: int = DP_EPOCHS, repeats: int = 5) -> float:
    """Median CPU seconds per epoch (one thread) of ``epochs`` local epochs in one call
    (so the per-round setup and the final epsilon are shared by the epochs), after one
    warm-up call. Paths: ``plain`` / ``dp`` (local.train now), ``plain-before`` /
    ``hooks-before`` (:func:`previous_train`). Sigma is calibrated once, outside the timing."""
    spec = dp_spec(x, model, batch, epochs)
    assert spec.dp is not None
    data = local.split(x, y, spec, "bench")
    sigma = local.noise_multiplier(spec, spec.dp, len(data.y_train))
    history = [(sigma, 1 / math.ceil(len(data.y_train) / batch), 0)]
    times = []
    for _ in range(repeats + 1):
        net = local.initial_model(spec)
        t = time.process_time()
        if path in ("plain", "dp"):
            local.train(net, data, spec, round_no=1, node="bench",
                        dp=spec.dp if path == "dp" else None, history=history)
        else:
            previous_train(net, data, spec, sigma if path == "hooks-before" else None)
        times.append((time.process_time() - t) / epochs)
    return statistics.median(times[1:])


def dp_table(console: Console) -> None:
    """Section 3: DP-SGD epoch vs plain epoch, now and before, at batch 64 and 256."""
    x, y = synthetic(20_000, 30)
    table = Table(title=f"DP-SGD (eps=3, RDP, Poisson sampling) vs plain SGD: CPU seconds "
                  f"per epoch, 1 thread, synthetic 20k x 30, {DP_EPOCHS} epochs per call; "
                  "'before' = rows fetched one by one, Opacus hooks mode; anchor: DP-SGD "
                  "<= 1.5x plain at batch >= 256", title_justify="left")
    for col in ("model", "batch", "plain s", "DP-SGD s", "DP / plain", "anchor",
                "before: plain s", "before: DP s", "before: DP / plain",
                "DP now / DP before"):
        table.add_column(col, justify="right")
    for (label, model), batch in itertools.product(
            (("logreg", {"kind": "logistic_regression"}),
             ("mlp [64]", {"kind": "mlp", "hidden": [64]})), (64, 256)):
        with console.status(f"epochs of {label} at batch {batch}"):
            t = {path: epoch_cpu_seconds(x, y, model, batch, path)
                 for path in ("plain", "dp", "plain-before", "hooks-before")}
        n_params = len(model_to_vector(build_model(model, 30, 3)))
        ratio = t["dp"] / t["plain"]
        table.add_row(f"{label} ({n_params} params)", str(batch), f"{t['plain']:.4f}",
                      f"{t['dp']:.4f}", f"{ratio:.2f}x",
                      ("met" if ratio <= 1.5 else "MISSED") if batch >= 256 else "-",
                      f"{t['plain-before']:.4f}", f"{t['hooks-before']:.4f}",
                      f"{t['hooks-before'] / t['plain-before']:.2f}x",
                      f"{t['dp'] / t['hooks-before']:.2f}x")
    console.print(table)
    console.print(f"load average (1, 5, 15 min) at the end: "
                  f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}")


def round_times(checkpoint: dict) -> list[float]:
    """Seconds of each training round (not the final evaluation), in order."""
    seconds = checkpoint["round_seconds"]
    return [seconds[r] for r in sorted((r for r in seconds if r != "final"), key=int)]


def rounds_table(console: Console) -> None:
    """Section 1: round times with pacing on and off, each beside the no-op floor."""
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for pacing in ("on", "off"):
            runs[pacing] = deployment(Path(tmp) / f"fed-{pacing}", console, pacing)
    table = Table(title=f"train job on loopback, 3 nodes, {ROUNDS} rounds + final "
                  "evaluation (logistic regression, penguins by island), beside Flower's "
                  f"floor ({NOOP_ROUNDS} no-op rounds), with scifed's SuperNode pacing on "
                  f"and off ({flower_pacing.ENV})", title_justify="left")
    for col in ("pacing", "app", "s / round (median)", "rounds s", "above floor s",
                "final eval s", "bytes / round-trip", "run total s"):
        table.add_column(col, justify="right")
    for pacing, results in runs.items():
        medians = {label: statistics.median(round_times(ck)) for label, ck, _ in results}
        floor = medians["no-op (Flower floor)"]
        for label, ck, moved in results:
            times = round_times(ck)
            final = ck["round_seconds"].get("final")
            table.add_row(pacing, label, f"{medians[label]:.2f}",
                          " ".join(f"{t:.2f}" for t in times),
                          f"{medians[label] - floor:.2f}",
                          "" if final is None else f"{final:.2f}",
                          f"{moved / (len(ck['round_seconds'])):,.0f}",
                          f"{sum(ck['round_seconds'].values()):.1f}")
    console.print(table)
    console.print(f"load average (1, 5, 15 min) at the end: "
                  f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")


def main(sections: list[str] | None = None) -> None:
    """Every section, or those named (``rounds``, ``he``, ``dp``)."""
    wanted = set(sections or SECTIONS)
    unknown = wanted - set(SECTIONS)
    if unknown:
        raise SystemExit(f"unknown section(s) {', '.join(sorted(unknown))}; "
                         f"choose from {', '.join(SECTIONS)}")
    console = Console()
    torch.set_num_threads(1)
    if "rounds" in wanted:
        rounds_table(console)
    if "he" in wanted:
        he_table(console)
    if "dp" in wanted:
        dp_table(console)


def he_table(console: Console) -> None:
    """Section 2: BFV work per round and ciphertext size."""
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


if __name__ == "__main__":
    main(sys.argv[1:])


def release_costs(n_params: int, rounds: int = ROUNDS, nodes: int = 3,
                  repeats: int = 3) -> dict[str, float]:
    """What the release node's check of a training run costs (node/round_updates.py
    ``verify_rounds``: every round's attested updates verified, summed, unmasked and
    decrypted, and the chain of ``trained_from`` digests checked), beside what the
    release did before (decrypt the sums the coordinator handed it); and the bytes of the
    release task's rounds beside those sums, and what ``trained_from`` adds to each
    round reply. Real CA, node certificates, attestations and self-masks, and for three
    or more nodes the real t-of-n shares and view answers each round is unmasked by
    (node/masking.py); the pairwise masks, which cancel in the sum and cost the check
    nothing, are left out."""
    import base64
    import hashlib

    from jobs.train.protocol import average, start_digest, update_values
    from node.masking import SHARED_FROM, open_shares, round_self_seed, seal_view, share_boxes
    from node.round_updates import Vector, verify_rounds
    from scifed import he, masks
    from scifed.pki import init_ca, make_key_and_csr, sign_csr
    from scifed.sealing import canonical_sha256, ensure_seal_key, sign_attestation
    from scifed.tasks import TaskHeader

    key, rng = StudyKey.generate(), np.random.default_rng(0)
    public = key.public_bytes()
    names = [f"n{i}" for i in range(nodes)]
    with tempfile.TemporaryDirectory() as tmp:
        ca = Path(tmp) / "ca"
        init_ca(ca)
        certs = {}
        for n in names:
            d = Path(tmp) / n
            csr = make_key_and_csr(d, name=n, role="node")
            certs[n] = (sign_csr(ca, csr, role="node", out_path=d / "node.crt"),
                        d / "node.key")
        ca_pem = (ca / "ca.crt").read_bytes()
        publics = {n: ensure_seal_key(Path(tmp) / f"seal-{n}") for n in names}
        header = TaskHeader(job_id="j", study_id="s", key_version=1, job_type="train",
                            n_nodes=nodes, dataset="d", spec={})
        shared = nodes >= SHARED_FROM
        spec = {"type": "train"}
        expect = {"job_id": "j", "study_id": "s", "key_version": 1, "researcher": "r",
                  "spec_sha256": canonical_sha256(spec), "dp": None}
        ledgers, sums_bytes, start, theta = {}, 0, "", rng.normal(size=n_params)
        served: list[bytes] = []  # the unmasked sums the release decrypted before
        model_sum = metrics_sum = None
        for k in [*map(str, range(1, rounds + 1)), "final"]:
            final = k == "final"
            given, seeds, blobs_of = {}, {}, {}
            round_of = ("evaluate", rounds) if final else ("train", int(k))
            boxes = {}
            for i, n in enumerate(names):
                secret = bytes([i + 1]) * 32
                seed = round_self_seed(secret, header, *round_of, 1)
                if shared:
                    boxes[n] = share_boxes(n, Path(tmp) / f"seal-{n}", secret, header,
                                           publics, 1, round_of=round_of)
                vectors = [Vector("metrics", rng.normal(size=8))]
                if not final:
                    pooled = None if model_sum is None else float(metrics_sum[6])
                    values, bound, _ = update_values(
                        theta + rng.normal(scale=0.1, size=n_params), 100 + i,
                        pooled=pooled, theta_start=None if pooled is None else theta)
                    vectors.append(Vector("model", values, bound, nodes))
                    vectors[0] = Vector("metrics", np.r_[rng.normal(size=6), 100 + i, 1.0])
                blobs = {}
                for v in vectors:
                    mask = masks.named_mask(seed, v.name, v.slots)
                    blobs[v.name] = (key.encrypt_quantised(v.values, bound=v.bound,
                                                           capacity=v.capacity, mask=mask)
                                     if v.bound else key.encrypt(v.values, mask=mask))
                statement = {
                    "job_id": "j", "stage": "evaluate" if final else "train",
                    "round": rounds if final else int(k), "query_sha256": "", "node": n,
                    "study_id": "s", "key_version": 1, "researcher": "r",
                    "spec_sha256": expect["spec_sha256"],
                    "ciphertext_sha256": hashlib.sha256(
                        b"".join(blobs[x] for x in sorted(blobs))).hexdigest(),
                    "dataset": {}, "audit_head": {"seq": 0, "hash": ""}, "dp": None, "k": 1,
                    "min_contributors": 1, "masked_with": names, "attempt": 1,
                    "output_review": False, "trained_from": start}
                given[n] = {"ciphertexts": {x: base64.b64encode(b).decode()
                                            for x, b in blobs.items()},
                            "attestation": sign_attestation(statement, node=n,
                                                            cert_path=certs[n][0],
                                                            key_path=certs[n][1])}
                seeds[n] = base64.b64encode(seed).decode()
                blobs_of[n] = blobs
            record = {"stage": "evaluate" if final else "train",
                      "round": rounds if final else int(k), "attempt": 1,
                      "contributions": given, "seeds": seeds}
            if shared:  # no seed leaves a node: each answers the view (U = all)
                views = {}
                for n in names:
                    got = open_shares(n, Path(tmp) / f"seal-{n}", header, publics, 1,
                                      {s: b[n] for s, b in boxes.items() if n in b},
                                      [m for m in names if m != n], round_of=round_of)
                    views[n] = base64.b64encode(seal_view(
                        key, "j", n, 1, names, [], got, {}, round_of=round_of)).decode()
                record = {**record, "seeds": {},
                          "view": {"dropped": [], "answers": views}}
            ledgers[k] = json.dumps(record).encode()
            for name in blobs_of[names[0]]:  # what the ServerApp summed and unmasked
                total = sum_ciphertexts(public, [blobs_of[n][name] for n in names])
                slots = he.parse(total).slots
                mask = np.zeros(slots, dtype=np.uint64)
                for n in names:
                    mask = masks.add(mask, masks.named_mask(base64.b64decode(seeds[n]),
                                                            name, slots))
                served.append(he.subtract_plain(public, total, mask))
                sums_bytes += len(served[-1])
                plain = key.decrypt(served[-1])
                if name == "model":
                    model_sum = plain
                elif not final:
                    metrics_sum = plain
            if not final:
                start, theta = start_digest(model_sum, metrics_sum), average(model_sum)
        check, before = [], []
        for _ in range(repeats):
            t = time.perf_counter()
            verify_rounds(ledgers, key=key, ca_pem=ca_pem, revoked=(), expect=expect)
            check.append(time.perf_counter() - t)
            t = time.perf_counter()
            for total in served:
                key.decrypt(total)
            before.append(time.perf_counter() - t)
    digest_field = len(', "trained_from": ""') + 64  # in the attestation's JSON
    return {"check": statistics.median(check), "before": statistics.median(before),
            "rounds_bytes": sum(len(b) for b in ledgers.values()), "sums_bytes": sums_bytes,
            "per_reply": digest_field}


def reveal_costs(n_params: int, nodes: int, repeats: int = 5) -> dict[str, float]:
    """What the unmask of a training round costs with t-of-n shares (node/masking.py:
    a set of three or more), beside the direct reveal of each node's own self-mask seed
    it replaced (the baseline, still used by sets of two), measured in the same run with
    the real functions, X25519 keys and study key (no network: the bytes are what
    travels). Per node and round: CPU to split and box its seed at the update, and to
    open its boxes and answer the view (sealed for the members and in clear), vs
    deriving its seed; the bytes it sends and receives for it, vs 32. At the ServerApp:
    CPU to rebuild every seed from the answers and make the model's and metrics' masks,
    vs making them from revealed seeds."""
    from jobs.train.protocol import METRICS, MODEL
    from node.masking import REVEAL, open_shares, round_self_seed, seal_view, share_boxes
    from scifed import he, masks
    from scifed.he import open_for_members
    from scifed.recovery import rebuilt_mask
    from scifed.sealing import ensure_seal_key
    from scifed.tasks import TaskHeader

    def best(action) -> float:
        times = []
        for _ in range(repeats):
            start = time.process_time()
            action()
            times.append(time.process_time() - start)
        return min(times)

    key = StudyKey.generate()
    names = [f"node{i:02d}" for i in range(nodes)]
    h = TaskHeader(job_id="job-bench", study_id="s", key_version=1, job_type="train",
                   n_nodes=nodes, dataset="d", spec={})
    of = ("train", 2)
    slots = {MODEL: he.slots_for(he.QUANTISED, n_params + 1, he.lanes_for(nodes)),
             METRICS: he.slots_for(he.EXACT, 8)}
    with tempfile.TemporaryDirectory() as tmp:
        dirs = {m: Path(tmp) / m for m in names}
        publics = {m: ensure_seal_key(dirs[m]) for m in names}
        secrets = {m: bytes([i + 1]) * 32 for i, m in enumerate(names)}
        boxes = {m: share_boxes(m, dirs[m], secrets[m], h, publics, 1, round_of=of)
                 for m in names}
        me = names[0]

        def answer(node: str) -> tuple[bytes, dict]:
            got = {s: b[node] for s, b in boxes.items() if node in b}
            shares = open_shares(node, dirs[node], h, publics, 1, got,
                                 [m for m in names if m != node], round_of=of)
            sealed = seal_view(key, h.job_id, node, 1, names, [], shares, {}, round_of=of)
            return sealed, open_for_members(key, REVEAL, h.job_id, sealed)

        node_s = best(lambda: share_boxes(me, dirs[me], secrets[me], h, publics, 1,
                                          round_of=of)) + best(lambda: answer(me))
        direct_s = best(lambda: round_self_seed(secrets[me], h, *of, 1))
        answers = {m: answer(m) for m in names}
        opened = {m: a[1] for m, a in answers.items()}
        seeds = {m: round_self_seed(secrets[m], h, *of, 1) for m in names}

        def rebuilt() -> dict:
            return {v: rebuilt_mask(opened, names, [], s, name=v) for v, s in slots.items()}

        def revealed() -> dict:
            out = {}
            for v, s in slots.items():
                total = np.zeros(s, dtype=np.uint64)
                for seed in seeds.values():
                    total = masks.add(total, masks.named_mask(seed, v, s))
                out[v] = total
            return out

        assert all(np.array_equal(a, b) for a, b in zip(rebuilt().values(),
                                                         revealed().values(), strict=True))
        server_s, server_direct_s = best(rebuilt), best(revealed)
        inbound = sum(len(b[me]) for s, b in boxes.items() if me in b)
        sealed, clear = answers[me]
        return {"node_ms": node_s * 1e3, "node_ms_direct": direct_s * 1e3,
                "server_ms": server_s * 1e3, "server_ms_direct": server_direct_s * 1e3,
                "bytes": sum(map(len, boxes[me].values())) + inbound + len(sealed)
                + len(json.dumps(clear)), "bytes_direct": 32}
