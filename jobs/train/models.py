"""The model zoo for ``train`` jobs, and the flat parameter vector that nodes encrypt.

Every model is a ``torch.nn.Sequential`` whose first layer is a fixed standardisation
(buffers, not parameters), so the released model takes raw features and the scaling never
travels through the encrypted average. No BatchNorm or other layer Opacus refuses.

The flat vector holds the trainable parameters in module order. Opacus wraps a model in
a ``GradSampleModule`` whose parameter names gain a ``_module.`` prefix; the helpers read
the wrapped module itself, so a vector made under DP-SGD and one made without it line up.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from jobs.train.spec import ModelSpec, TrainSpec
from scifed.errors import UserError


class Standardize(nn.Module):
    """``(x - mean) / std`` with fixed statistics held as buffers (saved, never trained)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class Rescale(nn.Module):
    """``x * std + mean``: a regression model's output in label units (fixed buffers)."""

    def __init__(self, mean: float, std: float) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(float(mean)))
        self.register_buffer("std", torch.tensor(float(std)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.std + self.mean


def build_model(spec: dict[str, Any] | ModelSpec, n_features: int, n_outputs: int, *,
                scaling: tuple[Sequence[float], Sequence[float]] | None = None,
                target_scaling: tuple[float, float] | None = None) -> nn.Sequential:
    """A zoo model for ``spec`` (``{kind, hidden}``); ``scaling`` is (means, stds) per
    feature, ``target_scaling`` the (mean, std) of a regression label.

    Logistic regression has one output per class (softmax); linear regression one output.
    """
    model_spec = spec if isinstance(spec, ModelSpec) else ModelSpec.model_validate(spec)
    if n_features < 1 or n_outputs < 1:
        raise UserError(f"a model needs at least one input and one output, got "
                        f"{n_features} and {n_outputs}")
    mean, std = scaling if scaling is not None else ([0.0] * n_features, [1.0] * n_features)
    if len(mean) != n_features or len(std) != n_features:
        raise UserError(f"scaling has {len(mean)} means and {len(std)} stds for "
                        f"{n_features} features")
    layers: list[nn.Module] = [Standardize(mean, std)]
    width = n_features
    for hidden in model_spec.hidden:
        layers += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    layers.append(nn.Linear(width, n_outputs))
    if target_scaling is not None:
        layers.append(Rescale(*target_scaling))
    return nn.Sequential(*layers)


def released_model(info: dict[str, Any]) -> nn.Sequential:
    """The architecture of a released `train` result's ``model`` section, ready for
    ``load_state_dict`` (the scaling buffers come with the state dict)."""
    spec = TrainSpec.model_validate({
        "features": info["features"], "label": info["label"], "task": info["task"],
        "classes": info["classes"], "model": {"kind": info["kind"], "hidden": info["hidden"]},
        "standardize": info["standardize"], "rounds": 1})
    return build_model(spec.model, len(spec.features), spec.n_outputs,
                       scaling=spec.scaling(), target_scaling=spec.target_scaling())


def _unwrapped(model: nn.Module) -> nn.Module:
    """The user's module, also when Opacus has wrapped it in a GradSampleModule."""
    return getattr(model, "_module", model)


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in _unwrapped(model).parameters())


def model_to_vector(model: nn.Module) -> np.ndarray:
    """All trainable parameters as one float64 vector, in module order."""
    params = [p.detach().reshape(-1).to(torch.float64) for p in _unwrapped(model).parameters()]
    return torch.cat(params).numpy()


def vector_to_model(model: nn.Module, vector: np.ndarray) -> None:
    """Copy a vector from :func:`model_to_vector` into the parameters, in place, so an
    optimizer (or Opacus) holding references to them keeps working."""
    flat = np.asarray(vector, dtype=np.float64).reshape(-1)
    expected = parameter_count(model)
    if flat.size != expected:
        raise UserError(f"parameter vector has {flat.size} values, the model {expected}")
    offset = 0
    with torch.no_grad():
        for p in _unwrapped(model).parameters():
            n = p.numel()
            p.copy_(torch.from_numpy(flat[offset:offset + n]).reshape(p.shape).to(p.dtype))
            offset += n


def save_model_file(info: dict[str, Any], path) -> None:
    """A released model as one file: the architecture description and its weights
    (`torch.load(path)` gives both; `load_model_file` rebuilds the module)."""
    import base64
    import io

    state = torch.load(io.BytesIO(base64.b64decode(info["state_dict"])), weights_only=True)
    torch.save({"scifed_model": {k: v for k, v in info.items() if k != "state_dict"},
                "state_dict": state}, path)


def load_model_file(path) -> tuple[nn.Module, dict[str, Any]]:
    """The module of a saved model file, weights loaded, and its description."""
    from scifed.errors import UserError

    try:
        blob = torch.load(path, weights_only=True)
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror}") from None
    except Exception:  # torch raises several kinds for a file that is not its format
        raise UserError(f"{path} is not a scifed model file") from None
    if not isinstance(blob, dict) or "scifed_model" not in blob:
        raise UserError(f"{path} is not a scifed model file")
    model = released_model(blob["scifed_model"])
    model.load_state_dict(blob["state_dict"])
    model.eval()
    return model, blob["scifed_model"]
