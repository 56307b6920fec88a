"""Fused DP-SGD (jobs.train.dp_sgd) against Opacus' standard hooks path and against a
row-by-row autograd reference: the same clipped, noised gradient on the same batch for
every zoo model kind, Poisson batches distributed as Opacus' sampler draws them, the
same sample rate, accountant history and epsilon."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from opacus import PrivacyEngine
from opacus.accountants import RDPAccountant
from torch.utils.data import DataLoader, TensorDataset

from jobs.train import dp_sgd, local
from jobs.train.models import build_model
from jobs.train.spec import TrainSpec

C = 1.0
SIGMA = 1.3
# Every kind the zoo trains, with the fixed layers around it (scaling in, label scale out).
KINDS = {
    "logreg": ("classification", {"kind": "logistic_regression"}),
    "linreg": ("regression", {"kind": "linear_regression"}),
    "mlp": ("classification", {"kind": "mlp", "hidden": [6, 4]}),
    "mlp-regression": ("regression", {"kind": "mlp", "hidden": [5]}),
}
TARGET = (3.0, 2.0)  # a regression label's (mean, std): the model ends in Rescale
SCALE = 1 / TARGET[1] ** 2  # the loss weight local.train uses for it


def batch(task: str, n: int = 48, d: int = 4, seed: int = 0):
    """Rows of very different norms, so that some gradients are clipped and some not."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g) * torch.logspace(-2, 1, n)[:, None]
    if task == "classification":
        return x, torch.randint(0, 3, (n,), generator=g)
    return x, (x.sum(1) * 2 + 3 + torch.randn(n, generator=g))


def model_of(kind: str, d: int = 4) -> torch.nn.Sequential:
    task, spec = KINDS[kind]
    torch.manual_seed(1)
    return build_model(spec, d, 3 if task == "classification" else 1,
                       scaling=([0.5] * d, [2.0] * d),
                       target_scaling=TARGET if task == "regression" else None)


def loss_of(task: str, reduction: str):
    scale = SCALE if task == "regression" else 1.0
    return lambda out, y: local.loss_fn(task, out, y, reduction, scale)


def loader_of(x, y, batch_size: int) -> DataLoader:
    return DataLoader(TensorDataset(x, y), batch_size=batch_size)


def opacus_gradient(kind: str, x, y, *, sigma: float, seed: int) -> list[torch.Tensor]:
    """Opacus' hooks path (make_private) on the batch: the gradient its optimizer hands
    to SGD, i.e. the clipped sum plus N(0, (sigma C)^2) divided by the expected batch."""
    task = KINDS[kind][0]
    model = model_of(kind)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gsm, opt, _ = PrivacyEngine(accountant="rdp").make_private(
            module=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
            data_loader=loader_of(x, y, 16), noise_multiplier=sigma, max_grad_norm=C)
        opt.zero_grad()
        loss_of(task, "mean")(gsm(x), y).backward()
    torch.manual_seed(seed)
    assert opt.pre_step()
    return [p.grad.clone() for p in model.parameters()]


def fused_gradient(kind: str, x, y, *, sigma: float, seed: int) -> list[torch.Tensor]:
    task = KINDS[kind][0]
    model = model_of(kind)
    private = dp_sgd.make_private(model, torch.optim.SGD(model.parameters(), lr=0.1),
                                  loader_of(x, y, 16), noise_multiplier=sigma,
                                  max_grad_norm=C, accountant=RDPAccountant())
    private.optimizer.zero_grad(set_to_none=True)
    dp_sgd.clipped_backward(model, x, lambda out: loss_of(task, "sum")(out, y), C)
    torch.manual_seed(seed)
    assert private.optimizer.pre_step()
    return [p.grad.clone() for p in model.parameters()]


def row_by_row_clipped_sum(kind: str, x, y) -> tuple[list[torch.Tensor], float]:
    """Independent reference: each row's gradient by plain autograd, clipped, summed;
    and the share of rows that were clipped."""
    task = KINDS[kind][0]
    model = model_of(kind)
    params = list(model.parameters())
    total = [torch.zeros_like(p) for p in params]
    clipped = 0
    for i in range(len(x)):
        grads = torch.autograd.grad(loss_of(task, "sum")(model(x[i:i + 1]), y[i:i + 1]),
                                    params)
        norm = torch.sqrt(sum((g.double() ** 2).sum() for g in grads))
        factor = min(1.0, C / (float(norm) + dp_sgd.NORM_EPS))
        clipped += factor < 1
        for t, g in zip(total, grads, strict=True):
            t += factor * g
    return total, clipped / len(x)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_clipped_sum_matches_clipping_each_row_by_hand(kind):
    x, y = batch(KINDS[kind][0])
    model = model_of(kind)
    dp_sgd.clipped_backward(model, x, lambda out: loss_of(KINDS[kind][0], "sum")(out, y), C)
    expected, share = row_by_row_clipped_sum(kind, x, y)
    assert 0.1 < share < 0.9  # the batch exercises both sides of the clip
    for p, e in zip(model.parameters(), expected, strict=True):
        torch.testing.assert_close(p.grad, e, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("sigma,seed", [(0.0, 0), (SIGMA, 7), (SIGMA, 8)])
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_noised_gradient_equals_opacus_hooks_path(kind, sigma, seed):
    x, y = batch(KINDS[kind][0])
    ours = fused_gradient(kind, x, y, sigma=sigma, seed=seed)
    theirs = opacus_gradient(kind, x, y, sigma=sigma, seed=seed)
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    if sigma:  # the noise is really there, and another seed gives another draw
        clean = fused_gradient(kind, x, y, sigma=0.0, seed=seed)
        other = fused_gradient(kind, x, y, sigma=sigma, seed=seed + 100)
        assert not torch.allclose(ours[0], clean[0])
        assert not torch.allclose(ours[0], other[0])


def test_an_empty_poisson_batch_still_steps_with_noise_and_is_accounted():
    """Poisson sampling can draw no row; Opacus then takes a noise-only step, and so do we."""
    model = model_of("mlp")
    before = [p.detach().clone() for p in model.parameters()]
    accountant = RDPAccountant()
    x, y = batch("classification")
    private = dp_sgd.make_private(model, torch.optim.SGD(model.parameters(), lr=0.1),
                                  loader_of(x, y, 16), noise_multiplier=SIGMA,
                                  max_grad_norm=C, accountant=accountant)
    private.optimizer.zero_grad(set_to_none=True)
    loss = dp_sgd.clipped_backward(model, x[:0], lambda out: loss_of(
        "classification", "sum")(out, y[:0]), C)
    assert float(loss) == 0.0
    assert all(float(p.grad.abs().sum()) == 0 for p in model.parameters())
    private.optimizer.step()
    assert all(not torch.equal(p, b) for p, b in zip(model.parameters(), before, strict=True))
    assert accountant.history == [(SIGMA, 1 / 3, 1)]


def test_rates_are_those_of_make_private_and_batches_are_rows_of_the_split():
    x, y = batch("classification", n=200)
    model, twin = model_of("logreg"), model_of("logreg")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, ref_opt, ref_loader = PrivacyEngine(accountant="rdp").make_private(
            module=twin, optimizer=torch.optim.SGD(twin.parameters(), lr=0.1),
            data_loader=DataLoader(TensorDataset(x, y), batch_size=32),
            noise_multiplier=SIGMA, max_grad_norm=C)
    ours = dp_sgd.make_private(model, torch.optim.SGD(model.parameters(), lr=0.1),
                               DataLoader(local.RowBatches(x, y), batch_size=32,
                                          collate_fn=local._as_batch,
                                          generator=torch.Generator().manual_seed(5)),
                               noise_multiplier=SIGMA, max_grad_norm=C,
                               accountant=RDPAccountant())
    assert ours.sample_rate == ref_loader.sample_rate == 1 / 7  # ceil(200 / 32) batches
    assert ours.optimizer.expected_batch_size == ref_opt.expected_batch_size == 28
    assert ours.optimizer.noise_multiplier == SIGMA and ours.optimizer.max_grad_norm == C
    assert isinstance(ours.loader.batch_sampler, dp_sgd.PoissonBatches)
    batches = list(ours.loader)
    assert len(batches) == len(ref_loader) == 7
    rows = {tuple(r) for r in x.tolist()}
    for xb, yb in batches:  # rows of the split, none twice, labels with their rows
        assert len(xb) == len(yb) and len(set(map(tuple, xb.tolist()))) == len(xb)
        assert {tuple(r) for r in xb.tolist()} <= rows
    assert len({len(yb) for _, yb in batches}) > 1  # Poisson: the batch size varies


def sampler_statistics(draw, n: int, trials: int) -> dict[str, np.ndarray | float]:
    counts = np.zeros(n)
    pair = np.zeros((4, 4))
    sizes = []
    for _ in range(trials):
        chosen = np.zeros(n, dtype=bool)
        chosen[np.asarray(draw(), dtype=np.int64)] = True
        counts += chosen
        pair += np.outer(chosen[:4], chosen[:4])
        sizes.append(chosen.sum())
    return {"rate": counts / trials, "pair": pair / trials, "mean": float(np.mean(sizes)),
            "var": float(np.var(sizes))}


class SmallChunks(dp_sgd.PoissonBatches):
    """Draws gaps 3 at a time, so that every batch takes several rounds of the loop."""

    def chunk(self) -> int:
        return 3


def epochs_of(sampler: dp_sgd.PoissonBatches):
    """Batches as a training loop takes them: whole epochs of the sampler (drawn a block
    of batches at a time), one after the other."""
    def batches():
        while True:
            yield from sampler
    return batches().__next__


@pytest.mark.parametrize("by", ["draw", "epochs"])
@pytest.mark.parametrize("sampler", [dp_sgd.PoissonBatches, SmallChunks])
def test_poisson_batches_have_the_distribution_of_opacus_sampler(sampler, by):
    """Each row in each batch independently with probability q (the sampling the
    accountant assumes): per-row rates, pairwise co-inclusion and the Binomial batch size,
    beside Opacus' own sampler measured the same way; batch by batch and as epochs."""
    from opacus.utils.uniform_sampler import UniformWithReplacementSampler

    n, q, trials = 40, 0.15, 20_000
    ours = sampler(num_samples=n, sample_rate=q, generator=torch.Generator().manual_seed(1))
    ref = UniformWithReplacementSampler(num_samples=n, sample_rate=q,
                                        generator=torch.Generator().manual_seed(1))
    take = ours.draw if by == "draw" else epochs_of(ours)
    for stats in (sampler_statistics(take, n, trials),
                  sampler_statistics(lambda: next(iter(ref)), n, trials)):
        sd = np.sqrt(q * (1 - q) / trials)
        assert np.abs(stats["rate"] - q).max() < 4.5 * sd
        off_diagonal = stats["pair"][~np.eye(4, dtype=bool)]
        assert np.abs(off_diagonal - q * q).max() < 5 * np.sqrt(q * q / trials)
        assert stats["mean"] == pytest.approx(n * q, abs=4 * np.sqrt(n * q / trials))
        assert stats["var"] == pytest.approx(n * q * (1 - q), rel=0.05)
    # ascending, in range, never a row twice, and some batches empty at a small rate
    tiny = sampler(num_samples=5, sample_rate=0.05, generator=torch.Generator().manual_seed(2))
    take = tiny.draw if by == "draw" else epochs_of(tiny)
    draws = [take() for _ in range(2000)]
    assert all(torch.equal(d, torch.unique(d)) and (d.numel() == 0 or int(d.max()) < 5)
               for d in draws)
    assert 0.7 < sum(d.numel() == 0 for d in draws) / 2000 < 0.85  # 0.95^5 = 0.77


def test_epsilon_equals_opacus_standard_path_for_the_same_steps():
    """local.train's epsilon and accountant history against Opacus' make_private + hooks
    training the same split for the same epochs at the same sigma and sample rate."""
    spec = TrainSpec.model_validate({
        "features": ["a", "b", "c", "d"], "label": "y", "task": "classification",
        "classes": ["0", "1", "2"], "model": {"kind": "mlp", "hidden": [6, 4]},
        "rounds": 2, "local_epochs": 3, "batch_size": 25, "validation_split": 0.0,
        "dp": {"epsilon": 2.0, "delta": 1e-5}})
    x, y = batch("classification", n=180)
    data = local.split(x.numpy(), y.numpy(), spec, "n1")
    ours = local.train(local.initial_model(spec), data, spec, round_no=1, node="n1",
                       dp=spec.dp, history=[])
    sigma = local.noise_multiplier(spec, spec.dp, 180)
    assert ours.history == [(sigma, 1 / 8, 3 * 8)]  # 3 epochs x ceil(180 / 25) steps

    model = local.initial_model(spec)
    engine = PrivacyEngine(accountant="rdp")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gsm, opt, loader = engine.make_private(
            module=model, optimizer=torch.optim.SGD(model.parameters(), lr=spec.lr),
            data_loader=DataLoader(TensorDataset(data.x_train, data.y_train),
                                   batch_size=spec.batch_size),
            noise_multiplier=sigma, max_grad_norm=spec.dp.max_grad_norm)
        for _ in range(spec.local_epochs):
            for xb, yb in loader:
                opt.zero_grad()
                local.loss_fn("classification", gsm(xb), yb).backward()
                opt.step()
    assert engine.accountant.history == ours.history
    assert ours.epsilon == engine.get_epsilon(spec.dp.delta)
    # and the next round continues from the carried history, as the node replays it
    later = local.train(local.initial_model(spec), data, spec, round_no=2, node="n1",
                        dp=spec.dp, history=ours.history)
    replay = RDPAccountant()
    replay.history = [(sigma, 1 / 8, 6 * 8)]
    assert later.epsilon == pytest.approx(replay.get_epsilon(1e-5), rel=1e-12)
    assert later.epsilon <= 2.0


def test_a_trainable_layer_other_than_linear_is_refused():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4),
                                torch.nn.Linear(4, 2))
    with pytest.raises(TypeError, match="LayerNorm"):
        dp_sgd.linear_layers(model)


def test_plain_batches_are_the_rows_the_default_loader_gives():
    """RowBatches changes how rows are fetched, not which: plain SGD sees the same batches."""
    x, y = batch("classification", n=70)
    fast = DataLoader(local.RowBatches(x, y), batch_size=16, shuffle=True,
                      generator=torch.Generator().manual_seed(3), collate_fn=local._as_batch)
    slow = DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True,
                      generator=torch.Generator().manual_seed(3))
    for (xa, ya), (xb, yb) in zip(fast, slow, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_dp_training_still_learns():
    spec = TrainSpec.model_validate({
        "features": ["a", "b", "c", "d"], "label": "y", "task": "classification",
        "classes": ["0", "1"], "model": {"kind": "logistic_regression"}, "rounds": 1,
        "local_epochs": 5, "batch_size": 64, "lr": 0.5, "dp": {"epsilon": 8.0}})
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 4)).astype(np.float32)
    y = (x[:, 0] - x[:, 2] > 0).astype(np.int64)
    data = local.split(x, y, spec, "n1")
    net = local.initial_model(spec)
    res = local.train(net, data, spec, round_no=1, node="n1", dp=spec.dp, history=[])
    val = local.evaluate(net, data.x_val, data.y_val, "classification")
    assert val[2] / val[0] > 0.9 and 0 < res.epsilon <= 8.0


@pytest.mark.parametrize("history", [
    [(1.1, 1 / 79, 395)],
    [(0.8, 0.01, 1000), (1.3, 1 / 8, 24)],
    [(2.0, 0.5, 1), (2.0, 0.5, 3), (0.6, 0.02, 500)],
])
def test_the_remembering_accountant_gives_opacus_epsilon_to_the_last_digit(history):
    """dp_sgd.Accountant remembers each (rate, sigma)'s one-step RDP; epsilon and the best
    order are still exactly Opacus' RDPAccountant's, asked twice (cold, then warm)."""
    ours, theirs = dp_sgd.Accountant(), RDPAccountant()
    ours.history, theirs.history = list(history), list(history)
    for _ in range(2):
        assert ours.get_privacy_spent(delta=1e-5) == theirs.get_privacy_spent(delta=1e-5)
        assert ours.get_epsilon(1e-6) == theirs.get_epsilon(1e-6)
