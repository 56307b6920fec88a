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

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from opacus.accountants import IAccountant
from opacus.data_loader import DPDataLoader
from opacus.optimizers import DPOptimizerFastGradientClipping
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
        for _ in range(self.steps):
            yield self.draw()

    def chunk(self) -> int:
        """Gaps drawn at a time: enough for almost every batch in one go (mean + 6 sd)."""
        expected = self.num_samples * self.sample_rate
        return int(expected + 6 * math.sqrt(expected) + 16)

    def draw(self) -> torch.Tensor:
        """One batch: the chosen row indices, ascending."""
        n, q = self.num_samples, self.sample_rate
        if q >= 1:
            return torch.arange(n)
        chunk = self.chunk()
        parts, last = [], -1
        while True:
            gaps = torch.empty(chunk, dtype=torch.float64).geometric_(q, generator=self.generator)
            rows = gaps.cumsum_(0).add_(last)
            inside = rows[rows < n]
            parts.append(inside)
            if len(inside) < chunk:
                break
            last = int(inside[-1])
        return torch.cat(parts).long()


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
