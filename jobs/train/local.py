"""One node's share of a federated round: split, evaluate, train — with PyTorch, and with
DP-SGD when the node requires it (Opacus' Poisson sampling, noise and RDP accountant,
with per-sample clipping fused into the backward pass: ``jobs.train.dp_sgd``).

DP-SGD accounting spans the whole job: the noise multiplier is calibrated once for all
rounds x local epochs (same inputs give the same sigma in every round, whichever process runs it),
and the RDP accountant starts each round from the history the node kept from the earlier
rounds, so the reported epsilon is what the job has spent so far at this node.

The validation split and the initial model come from the job's seed (so every round sees
the same split and every node starts from the same model), but DP noise never does: a
seed the researcher knows would let them subtract the noise.
"""

from __future__ import annotations

import math
import os
import zlib
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from jobs.train.spec import DPSpec, TrainSpec
from scifed.errors import UserError

# Sums each node encrypts per round; the release node divides pooled sums.
METRIC_FIELDS = ("val_n", "val_loss_sum", "val_correct", "val_sse", "val_sum_y",
                 "val_sum_y2", "train_n", "train_loss_sum")
# SGD momentum for local epochs: with non-IID shards (a node may hold a single class)
# it reached the centralised optimum in fewer rounds than plain SGD on the penguins.
MOMENTUM = 0.9


@dataclass(frozen=True)
class LocalData:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor


@dataclass
class LocalResult:
    n_train: int
    loss_sum: float
    epsilon: float | None = None
    history: list[tuple[float, float, int]] = field(default_factory=list)


class RowBatches(TensorDataset):
    """The training split, handing out a batch of rows with one indexing per tensor.

    A ``DataLoader`` otherwise fetches rows one by one and stacks them, which was most of
    a plain epoch's time on tabular data. Which rows form a batch is still the sampler's
    choice (shuffling, or Opacus' Poisson sampler under DP-SGD), so batches are the same
    rows as before.
    """

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, ...]:
        rows = torch.as_tensor(indices, dtype=torch.long)
        return tuple(t[rows] for t in self.tensors)


def _as_batch(batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """The collate function for :class:`RowBatches`: the batch is already stacked."""
    return batch


def split(x: np.ndarray, y: np.ndarray, spec: TrainSpec, node: str) -> LocalData:
    """The node's train/validation split; the same in every round of the job."""
    rng = np.random.default_rng([spec.seed, zlib.crc32(node.encode())])
    order = rng.permutation(len(y))
    n_val = min(round(len(y) * spec.validation_split), len(y) - 1)
    val, train = order[:n_val], order[n_val:]
    label_type = torch.long if spec.task == "classification" else torch.float32
    return LocalData(torch.from_numpy(x[train]), torch.from_numpy(y[train]).to(label_type),
                     torch.from_numpy(x[val]), torch.from_numpy(y[val]).to(label_type))


def initial_model(spec: TrainSpec) -> nn.Sequential:
    """The same starting model at every node: built right after seeding torch."""
    from jobs.train.models import build_model

    torch.manual_seed(spec.seed)
    return build_model(spec.model, len(spec.features), spec.n_outputs, scaling=spec.scaling(),
                       target_scaling=spec.target_scaling())


def loss_fn(task: str, output: torch.Tensor, target: torch.Tensor,
            reduction: str = "mean", scale: float = 1.0) -> torch.Tensor:
    """Cross-entropy, or squared error times ``scale`` (1/std^2 of a scaled label trains as
    if the label were standardised; metrics stay in label units)."""
    if task == "classification":
        return nn.functional.cross_entropy(output, target, reduction=reduction)
    return nn.functional.mse_loss(output[:, 0], target, reduction=reduction) * scale


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, task: str) -> np.ndarray:
    """Validation sums (the first six METRIC_FIELDS) of ``model`` on (x, y)."""
    out = np.zeros(6)
    if len(y) == 0:
        return out
    model.eval()
    with torch.no_grad():
        pred = model(x)
        out[0] = len(y)
        out[1] = float(loss_fn(task, pred, y, reduction="sum"))
        if task == "classification":
            out[2] = float((pred.argmax(dim=1) == y).sum())
        else:
            yy = y.double()
            out[3] = float(((pred[:, 0].double() - yy) ** 2).sum())
            out[4], out[5] = float(yy.sum()), float((yy ** 2).sum())
    return out


def train(model: nn.Module, data: LocalData, spec: TrainSpec, *, round_no: int,
          node: str, dp: DPSpec | None = None,
          history: list[tuple[float, float, int]] | None = None) -> LocalResult:
    """``spec.local_epochs`` of SGD on the training split, in place; DP-SGD if ``dp``."""
    n = len(data.y_train)
    generator = torch.Generator()
    if dp is None:
        generator.manual_seed(spec.seed * 1_000_003 + zlib.crc32(node.encode()) + round_no)
    else:
        seed = int.from_bytes(os.urandom(8), "little")
        torch.manual_seed(seed)  # Opacus draws its noise from the global generator
        generator.manual_seed(seed ^ 0x5DEECE66D)
    loader = DataLoader(RowBatches(data.x_train, data.y_train), batch_size=spec.batch_size,
                        shuffle=True, generator=generator, collate_fn=_as_batch)
    optimizer = torch.optim.SGD(model.parameters(), lr=spec.lr, momentum=MOMENTUM)
    model.train()
    target = spec.target_scaling()
    scale = 1.0 / target[1] ** 2 if target else 1.0
    accountant = None
    if dp is not None:
        from jobs.train import dp_sgd

        accountant = dp_sgd.Accountant()
        accountant.history = list(history or [])
        private = dp_sgd.make_private(
            model, optimizer, loader, accountant=accountant,
            noise_multiplier=noise_multiplier(spec, dp, n, history),
            max_grad_norm=dp.max_grad_norm)
        optimizer, loader = private.optimizer, private.loader
    loss_sum, seen = 0.0, 0
    for epoch in range(spec.local_epochs):
        last = epoch == spec.local_epochs - 1
        for xb, yb in loader:
            optimizer.zero_grad(set_to_none=True)
            if dp is None:
                loss = loss_fn(spec.task, model(xb), yb, scale=scale)
                loss.backward()
                batch_loss = loss.item() * len(yb)
            else:
                batch_loss = dp_sgd.clipped_backward(
                    model, xb, lambda out, yb=yb: loss_fn(spec.task, out, yb, "sum", scale),
                    dp.max_grad_norm).item()
            optimizer.step()
            if last and len(yb):
                loss_sum += batch_loss
                seen += len(yb)
    # The last epoch's mean loss (in label units), scaled to n so pooled sums weight
    # nodes by size.
    result = LocalResult(n, loss_sum / scale / max(seen, 1) * n)
    params = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    if not (math.isfinite(result.loss_sum) and torch.isfinite(params).all()):
        raise UserError(f"node {node}: training diverged in round {round_no}; lower `lr`, "
                        "or standardize the features (and a regression label)")
    if accountant is not None:
        assert dp is not None
        result.epsilon = float(accountant.get_epsilon(dp.delta))
        result.history = [(float(s), float(q), int(k)) for s, q, k in accountant.history]
    return result


def noise_multiplier(spec: TrainSpec, dp: DPSpec, n_train: int,
                     history: list[tuple[float, float, int]] | None = None) -> float:
    """Sigma for the whole job's budget: every round x epoch at this node's sample rate.

    Earlier rounds at the same sample rate already calibrated it (the same inputs give the
    same sigma), so their recorded sigma is reused instead of searching again (~1 s).
    """
    steps_per_epoch = math.ceil(n_train / spec.batch_size)
    sample_rate = 1 / steps_per_epoch
    if history and history[0][1] == sample_rate:
        return history[0][0]
    from opacus.accountants.utils import get_noise_multiplier

    return float(get_noise_multiplier(
        target_epsilon=dp.epsilon, target_delta=dp.delta, sample_rate=sample_rate,
        steps=spec.rounds * spec.local_epochs * steps_per_epoch, accountant="rdp"))
