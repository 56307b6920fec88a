"""Group labels that no one outside their holders reads until at least k rows hold them.

A label in the column dictionary's declared enumeration is public by declaration, so it
travels in the vocabulary as itself. Any other label might be one person's (a rare
department, a zip code) and must reach the researcher only if at least k rows across the
federation hold it — decided without showing the rarer ones to anyone, the other member
nodes included. So in the vocabulary a node writes an undeclared label as a *tag*: an
HMAC of the column and the label under a key derived from the study key and the job id.
Nodes holding the same label write the same tag, so the union of vocabularies still
lines the counts up, and the pooled count per tag decides. Only for the tags whose
pooled count reaches k does the release node ask, in one more round, for the label
itself: each holder adds the label's bytes (and a 1) to an encrypted sum, and the
release node divides. Labels below k are never revealed to anybody; a member node that
guesses a label can test its guess against a tag (the key is shared by members), which
is the price of not running an oblivious PRF.
"""

from __future__ import annotations

import hashlib
import hmac

import numpy as np

TAG_PREFIX = "\x00tag:"     # no label of a text file starts with NUL
LABEL_BYTES = 96            # a revealed label's bytes (longer ones end in "…")
_ELLIPSIS = "…"


def is_tag(value: str) -> bool:
    return value.startswith(TAG_PREFIX)


def tag(key: bytes, column: str, label: str) -> str:
    mac = hmac.new(key, f"{column}\0{label}".encode(), hashlib.sha256).hexdigest()[:32]
    return TAG_PREFIX + mac


def public_form(key: bytes, column: str, label: str, declared: list[str] | None) -> str:
    """How ``label`` travels in the vocabulary: itself if declared, else its tag."""
    return label if declared is not None and label in declared else tag(key, column, label)


def clipped(label: str) -> str:
    """The label as it can be revealed: at most LABEL_BYTES of UTF-8."""
    raw = label.encode()
    if len(raw) <= LABEL_BYTES:
        return label
    room = LABEL_BYTES - len(_ELLIPSIS.encode())
    return raw[:room].decode(errors="ignore") + _ELLIPSIS


def encode(labels: list[str | None]) -> np.ndarray:
    """One block of LABEL_BYTES + 1 slots per asked tag: the label's bytes and a 1 if
    this node holds it (None), zeros if not."""
    out = np.zeros(len(labels) * (LABEL_BYTES + 1))
    for i, label in enumerate(labels):
        if label is None:
            continue
        raw = clipped(label).encode()
        base = i * (LABEL_BYTES + 1)
        out[base:base + len(raw)] = np.frombuffer(raw, dtype=np.uint8)
        out[base + LABEL_BYTES] = 1.0
    return out


def decode(total: np.ndarray, n: int) -> list[str]:
    """The labels of ``n`` tags from the pooled blocks: each holder added the same
    bytes, so the sum divided by the number of holders is the label."""
    if total.size != n * (LABEL_BYTES + 1):
        raise ValueError("the pooled label blocks have the wrong size")
    labels = []
    for i in range(n):
        block = np.rint(total[i * (LABEL_BYTES + 1):(i + 1) * (LABEL_BYTES + 1)])
        holders = int(block[-1])
        if holders < 1 or np.any(block[:-1] % holders):
            raise ValueError("a pooled label does not decode: its holders disagree")
        raw = bytes(int(b) // holders for b in block[:-1]).rstrip(b"\0")
        labels.append(raw.decode(errors="replace"))
    return labels
