"""Small encodings every task payload and record uses: base64 for bytes inside JSON,
and milliseconds since the epoch for time stamps."""

from __future__ import annotations

import base64
import time


def b64e(data: bytes) -> str:
    return base64.b64encode(data).decode()


def b64d(text: str) -> bytes:
    return base64.b64decode(text)


def now_ms() -> int:
    return int(time.time() * 1000)
