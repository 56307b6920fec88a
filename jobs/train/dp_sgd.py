"""DP-SGD for the zoo's models with per-sample clipping fused into the backward pass.

Opacus' hooks mode materialises every row's gradient (batch x parameters) and runs a
few Python hooks per layer and step; on tabular models that made a DP-SGD epoch cost
2-4x a plain one. Every zoo model's trainable layers are ``nn.Linear`` applied to one
vector per row, and for such a layer row i's weight gradient is the outer product
``g_i a_i^T`` of the gradient at its output and its input, so

    ||grad_i||^2 = ||a_i||^2 * ||g_i||^2  (+ ||g_i||^2 for the bias)

and the clipped sum ``sum_i c_i g_i a_i^T`` is one matrix product. One backward pass to
the layers' outputs gives everything; no per-sample gradient is ever built.

Noise and accounting stay Opacus' own objects, set up as ``PrivacyEngine.make_private``
sets them up: ``DPOptimizerFastGradientClipping`` (adds ``N(0, (sigma C)^2)`` to the
clipped sum, divides by the expected batch size) and the accountant's step hook at the
sample rate 1 / batches of ``DPDataLoader``. Batches are Poisson samples at that rate,
as ``DPDataLoader``'s, drawn by :class:`PoissonBatches` in O(batch) work.
``tests/unit/test_dp_sgd.py`` checks the clipped, noised gradient and epsilon against
Opacus' hooks path, and the sampler's distribution against Opacus' sampler.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from opacus.accountants import IAccountant, RDPAccountant
from opacus.accountants.analysis import rdp as rdp_analysis
from opacus.data_loader import DPDataLoader
from opacus.optimizers import DPOptimizerFastGradientClipping
from opacus.optimizers.optimizer import _check_processed_flag, _generate_noise, _mark_as_processed
from opacus.utils.uniform_sampler import UniformWithReplacementSampler
from torch import nn
from torch.utils.data import DataLoader

# Added to a row's gradient norm before dividing, as Opacus' DPOptimizer does.
NORM_EPS = 1e-6


class ClippedSumOptimizer(DPOptimizerFastGradientClipping):
    """Opacus' optimizer for gradients clipped before ``step``: noise, scaling and the
    accountant's hook are Opacus'. ``p.grad`` already holds the batch's clipped sum,
    written fresh each step, so it is taken as it is rather than deep-copied (the copy
    cost more than the clipping)."""

    def accumulate(self) -> None:
        for p in self.params:
            p.summed_grad = p.grad if p.summed_grad is None else p.summed_grad + p.grad

    def pre_step(self, closure: Callable[[], float] | None = None) -> bool:
        """Opacus' ``pre_step`` (accumulate, skip check, noise, scaling, accountant hook)
        with the noise drawn as Opacus draws it (``_generate_noise`` per parameter, the
        same generator, the same order) and the clipped sum added to it and scaled in
        place: one tensor per parameter instead of three, and no per-step Python between.
        The result is the same bits as ``(summed + noise) / expected_batch_size``."""
        self.accumulate()
        if self._check_skip_next_step():
            self._is_last_step_skipped = True
            return False
        sigma = getattr(self, "_adjusted_noise_multiplier", self.noise_multiplier)
        std = sigma * self.max_grad_norm
        divisor = (self.expected_batch_size * self.accumulated_iterations
                   if self.loss_reduction == "mean" else 1)
        for p in self.params:
            summed = p.summed_grad
            _check_processed_flag(summed)
            noise = _generate_noise(std=std, reference=summed, generator=self.generator,
                                    secure_mode=self.secure_mode)
            p.grad = noise.add_(summed).view_as(p)
            if divisor != 1:
                p.grad.div_(divisor)
            _mark_as_processed(summed)
        if self.step_hook:
            self.step_hook(self)
        self._is_last_step_skipped = False
        return True


class PoissonBatches(UniformWithReplacementSampler):
    """Opacus' Poisson sampler (each row joins each batch independently with probability
    ``sample_rate``; ``1 / sample_rate`` batches an epoch), drawn in O(batch) instead of
    O(rows) work per batch.

    Opacus draws one uniform per row per batch, so an epoch costs rows^2 / batch draws:
    at 20k rows that was a quarter of a plain epoch, and it grows with the rows. In a
    sequence of independent Bernoulli(q) trials the distances between successes are
    independent Geometric(q), so walking the rows by geometric gaps picks exactly the
    same random subset distribution; the accountant's sample rate stays true.
    """

    def __iter__(self) -> Iterator[torch.Tensor]:  # type: ignore[override]
        """The epoch's batches, their gaps drawn for many batches in one tensor operation
        (a batch's draw was mostly per-call overhead: 17 us of a 140 us plain step at
        batch 256); a batch whose gaps run short is finished by :meth:`draw`'s loop."""
        n, q = self.num_samples, self.sample_rate
        if q >= 1:
            for _ in range(self.steps):
                yield torch.arange(n)
            return
        chunk = self.chunk()
        per_block = max(1, BLOCK_DRAWS // chunk)
        for start in range(0, self.steps, per_block):
            count = min(per_block, self.steps - start)
            rows = (torch.empty((count, chunk), dtype=torch.float64)
                    .geometric_(q, generator=self.generator).cumsum_(1).sub_(1))
            for row in rows:
                inside = row[row < n]
                if len(inside) == chunk:
                    inside = torch.cat([inside, self.draw(after=int(inside[-1]))])
                yield inside.long()

    def chunk(self) -> int:
        """Gaps drawn at a time: enough for almost every batch in one go (mean + 6 sd)."""
        expected = self.num_samples * self.sample_rate
        return int(expected + 6 * math.sqrt(expected) + 16)

    def draw(self, after: int = -1) -> torch.Tensor:
        """One batch (or its rows past ``after``): the chosen row indices, ascending."""
        n, q = self.num_samples, self.sample_rate
        if q >= 1:
            return torch.arange(after + 1, n)
        chunk = self.chunk()
        parts, last = [], after
        while True:
            gaps = torch.empty(chunk, dtype=torch.float64).geometric_(q, generator=self.generator)
            rows = gaps.cumsum_(0).add_(last)
            inside = rows[rows < n]
            parts.append(inside)
            if len(inside) < chunk:
                break
            last = int(inside[-1])
        return torch.cat(parts).long()


# Gaps drawn in one tensor operation by PoissonBatches (8 MB of float64): whole epochs of
# small data sets, blocks of batches of large ones.
BLOCK_DRAWS = 1 << 20


@functools.lru_cache(maxsize=64)
def _rdp_per_step(sample_rate: float, noise_multiplier: float,
                  orders: tuple[float, ...]) -> np.ndarray:
    """Opacus' RDP of one step of the sampled Gaussian mechanism at each order."""
    rdp = rdp_analysis.compute_rdp(q=sample_rate, noise_multiplier=noise_multiplier,
                                   steps=1, orders=list(orders))
    rdp.setflags(write=False)
    return rdp


class Accountant(RDPAccountant):
    """Opacus' RDP accountant, its per-step RDP remembered per (sample rate, sigma).

    ``compute_rdp(q, sigma, steps)`` is ``steps`` times the one-step RDP, and a job keeps
    the same q and sigma in every round, so the node's long-lived executor computes the
    one-step curve once (about 10 ms of series over 151 orders, which was a fifth of a
    small model's plain epoch each round) and multiplies. Epsilon is Opacus' own
    ``get_privacy_spent`` over the same sum: ``tests/unit/test_dp_sgd.py`` checks it
    equals ``RDPAccountant``'s to the last digit."""

    def get_privacy_spent(self, *, delta: float, alphas: list[float | int] | None = None
                          ) -> tuple[float, float]:
        if not self.history:
            return 0, 0
        orders = tuple(self.DEFAULT_ALPHAS if alphas is None else alphas)
        rdp = sum(_rdp_per_step(q, sigma, orders) * steps for sigma, q, steps in self.history)
        eps, best_alpha = rdp_analysis.get_privacy_spent(orders=list(orders), rdp=rdp,
                                                         delta=delta)
        return float(eps), float(best_alpha)


@dataclass(frozen=True)
class PrivateTraining:
    optimizer: ClippedSumOptimizer
    loader: DataLoader
    sample_rate: float


def make_private(model: nn.Sequential, optimizer: torch.optim.Optimizer, loader: DataLoader,
                 *, noise_multiplier: float, max_grad_norm: float,
                 accountant: IAccountant) -> PrivateTraining:
    """Poisson-sampled loader, noising optimizer and accounting for :func:`clipped_backward`,
    as ``PrivacyEngine.make_private(..., poisson_sampling=True)`` builds them (same sample
    rate, expected batch size, noise and accountant hook; batches by :class:`PoissonBatches`)."""
    linear_layers(model)  # refuses a model this path cannot clip
    rows = len(loader.dataset)  # type: ignore[arg-type]
    opacus_loader = DPDataLoader.from_data_loader(loader)  # its rate, empty-batch collation
    sample_rate = 1 / len(opacus_loader)
    sampler = PoissonBatches(num_samples=rows, sample_rate=sample_rate,
                             generator=loader.generator)
    loader = DataLoader(loader.dataset, batch_sampler=sampler,
                        collate_fn=opacus_loader.collate_fn, generator=loader.generator)
    expected_batch_size = int(rows * sample_rate)
    dp_optimizer = ClippedSumOptimizer(
        optimizer, noise_multiplier=noise_multiplier, max_grad_norm=max_grad_norm,
        expected_batch_size=expected_batch_size, loss_reduction="mean")
    dp_optimizer.attach_step_hook(accountant.get_optimizer_hook_fn(sample_rate=sample_rate))
    return PrivateTraining(dp_optimizer, loader, sample_rate)


def linear_layers(model: nn.Sequential) -> list[nn.Linear]:
    """The model's trainable layers, all ``nn.Linear``; anything else trainable is refused
    (its per-sample norm would not be the product above)."""
    layers = []
    for module in model:
        if isinstance(module, nn.Linear):
            layers.append(module)
        elif any(p.requires_grad for p in module.parameters()):
            raise TypeError(f"fused DP-SGD clips nn.Linear layers only, not "
                            f"{type(module).__name__}")
    return layers


def clipped_backward(model: nn.Sequential, x: torch.Tensor,
                     per_sample_loss_sum: Callable[[torch.Tensor], torch.Tensor],
                     max_grad_norm: float) -> torch.Tensor:
    """Forward ``x``, and set each parameter's ``.grad`` to the sum over rows of that row's
    gradient clipped to ``max_grad_norm`` (flat clipping over all parameters, Opacus'
    factor ``min(1, C / (norm + 1e-6))``). ``per_sample_loss_sum`` maps the model's output
    to the sum of the rows' losses. Returns that sum (detached)."""
    inputs, outputs = [], []
    h = x
    for module in model:
        if isinstance(module, nn.Linear):
            inputs.append(h.detach())  # the norms and sums below need no graph
            h = module(h)
            outputs.append(h)
        else:
            h = module(h)
    loss = per_sample_loss_sum(h)
    grads = torch.autograd.grad(loss, outputs)
    layers = [m for m in model if isinstance(m, nn.Linear)]
    norm_sq = None
    for layer, a, g in zip(layers, inputs, grads, strict=True):
        a_sq = torch.linalg.vecdot(a, a)
        if layer.bias is not None:
            a_sq.add_(1)
        layer_sq = a_sq.mul_(torch.linalg.vecdot(g, g))
        norm_sq = layer_sq if norm_sq is None else norm_sq.add_(layer_sq)
    if norm_sq is None:
        raise TypeError("fused DP-SGD needs a model with at least one nn.Linear layer")
    # Opacus' factor min(1, C / (norm + 1e-6)), in place
    factor = norm_sq.sqrt_().add_(NORM_EPS).reciprocal_().mul_(max_grad_norm).clamp_(max=1.0)
    column = factor.unsqueeze(1)
    for layer, a, g in zip(layers, inputs, grads, strict=True):
        scaled = g.mul(column)
        layer.weight.grad = scaled.t().mm(a)
        if layer.bias is not None:
            layer.bias.grad = scaled.sum(0)
    return loss.detach()
