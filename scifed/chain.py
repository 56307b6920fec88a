"""Hash chains (the node's audit log and the coordinator's own) and the one byte-exact
JSON form of everything scifed hashes or signs (chain entries, signed statements and
results). Keys sorted, no spaces, UTF-8 kept, so the party that writes and the party that
checks compute the same bytes."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

GENESIS = "0" * 64  # the previous hash of a chain's first entry


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def entry_hash(prev_hash: str, body: dict) -> str:
    """The hash of one chain entry: the previous entry's hash and this entry's body."""
    return hashlib.sha256((prev_hash + canonical(body)).encode()).hexdigest()


def sha256_hex(data: bytes | str) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


@dataclass(frozen=True)
class ChainEntry:
    seq: int
    ts_ms: int
    actor: str
    action: str
    subject: str
    details: dict
    prev_hash: str
    hash: str

    def body(self) -> dict:
        """What the entry's hash covers (with the previous hash)."""
        return {"seq": self.seq, "ts_ms": self.ts_ms, "actor": self.actor,
                "action": self.action, "subject": self.subject, "details": self.details}

    def as_dict(self) -> dict:
        return {**self.body(), "prev_hash": self.prev_hash, "hash": self.hash}


@dataclass(frozen=True)
class Verification:
    ok: bool
    entries: int
    head_seq: int
    head_hash: str
    problem: str = ""
