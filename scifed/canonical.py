"""One byte-exact JSON form for everything scifed hashes or signs: audit chain entries
(the node's and the coordinator's) and signed statements and results. Keys sorted, no
spaces, UTF-8 kept, so the party that writes and the party that checks compute the same
bytes."""

from __future__ import annotations

import hashlib
import json
from typing import Any

GENESIS = "0" * 64  # the previous hash of a chain's first entry


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def entry_hash(prev_hash: str, body: dict) -> str:
    """The hash of one chain entry: the previous entry's hash and this entry's body."""
    return hashlib.sha256((prev_hash + canonical(body)).encode()).hexdigest()


def sha256_hex(data: bytes | str) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()
