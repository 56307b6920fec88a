"""Attack: a single row with extreme values (planted, or an outlier patient) dominates a
training step, so the update reveals whether that row was in the batch. DP-SGD's
guarantee rests on each row moving the summed gradient by at most ``max_grad_norm``
(the sensitivity the noise is calibrated to). The fused clipping must keep that bound
for every zoo model, with the optimizer the node trains with (noise off, to see the
bound itself)."""

from __future__ import annotations

import pytest
import torch
from opacus.accountants import RDPAccountant
from torch.utils.data import DataLoader, TensorDataset

from jobs.train import dp_sgd, local
from jobs.train.models import build_model

C = 1.0
KINDS = {
    "logreg": ("classification", {"kind": "logistic_regression"}),
    "linreg": ("regression", {"kind": "linear_regression"}),
    "mlp": ("classification", {"kind": "mlp", "hidden": [8, 4]}),
}


def rows(task: str, n: int = 64):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(n, 5, generator=g)
    y = torch.randint(0, 2, (n,), generator=g) if task == "classification" else x.sum(1)
    return x, y


def planted(kind: str, x, y):
    """The batch with one extra row far outside the data, labelled against the model's
    prediction (so its loss, and its gradient, are large)."""
    row = torch.full((1, x.shape[1]), 1e4)
    with torch.no_grad():
        out = model_of(kind)(row)
    label = out.argmin(1) if KINDS[kind][0] == "classification" else -out[:, 0]
    return torch.cat([x, row]), torch.cat([y, label.to(y.dtype)])


def flat(model) -> torch.Tensor:
    return torch.cat([p.grad.reshape(-1) for p in model.parameters()])


def model_of(kind: str):
    task, spec = KINDS[kind]
    torch.manual_seed(0)
    return build_model(spec, 5, 2 if task == "classification" else 1)


def plain_sum(kind: str, x, y) -> torch.Tensor:
    task = KINDS[kind][0]
    model = model_of(kind)
    local.loss_fn(task, model(x), y, "sum").backward()
    return flat(model)


def dp_step_gradient(kind: str, x, y) -> torch.Tensor:
    """The gradient the node's DP optimizer hands to SGD for this batch, noise off."""
    task = KINDS[kind][0]
    model = model_of(kind)
    private = dp_sgd.make_private(model, torch.optim.SGD(model.parameters(), lr=0.1),
                                  DataLoader(TensorDataset(x, y), batch_size=16),
                                  noise_multiplier=0.0, max_grad_norm=C,
                                  accountant=RDPAccountant())
    private.optimizer.zero_grad(set_to_none=True)
    dp_sgd.clipped_backward(model, x, lambda out: local.loss_fn(task, out, y, "sum"), C)
    assert private.optimizer.pre_step()
    return flat(model) * private.optimizer.expected_batch_size  # back to the summed scale


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_a_planted_extreme_row_moves_a_dp_sgd_step_by_at_most_the_clipping_norm(kind):
    x, y = rows(KINDS[kind][0])
    xp, yp = planted(kind, x, y)
    # without clipping the row is plain to see in the summed gradient
    assert float((plain_sum(kind, xp, yp) - plain_sum(kind, x, y)).norm()) > 100 * C
    # with DP-SGD it moves the sum by at most C, whatever its values
    with_row, without = dp_step_gradient(kind, xp, yp), dp_step_gradient(kind, x, y)
    moved = float((with_row - without).norm())
    assert 0.5 * C < moved <= C * (1 + 1e-5)
