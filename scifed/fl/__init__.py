"""Federated training on Flower 1.41: the ServerApp (HE FedAvg over CKKS ciphertexts),
the ClientApp (gated by the node's local API, PyTorch with Opacus DP-SGD), and the
supervisor both sides use for their Flower processes.

``APP_DIR`` holds the FAB's ``pyproject.toml``; the FAB carries no code because the
components are imported from this installed package.
"""

from pathlib import Path

APP_DIR = Path(__file__).resolve().parent / "app"
