"""The node's X25519 sealing key: study keys are sealed to it, so it never leaves the node."""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from scifed.errors import UserError


def ensure_x25519_key(dir: Path) -> bytes:
    """Create ``seal.key`` (0600) on first use and return the raw 32-byte public key."""
    path = dir / "seal.key"
    dir.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (TypeError, ValueError):
            key = None
        if not isinstance(key, X25519PrivateKey):
            raise UserError(f"{path}: not an X25519 private key") from None
    else:
        key = X25519PrivateKey.generate()
        with os.fdopen(fd, "wb") as f:
            f.write(
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
