"""Who is logged in to a console, and the one-time address that logs them in.

Sessions live in the console's memory only: a restarted console logs everyone out, and
nothing a session holds (an approver's unlocked key, say) is ever written to disk. The
cookie carries a random token (HttpOnly, SameSite=Strict, Secure over TLS); each session
has its own CSRF token that every form and htmx request must echo
(:mod:`scifed.web.app`). A session ends after ``idle_s`` without a request, or at logout.

Consoles with one user on a trusted machine (the researcher's own, the operator's host)
log in by a one-time token in the address the console prints at start, as notebook
servers do: whoever can read the console's output is its user. The node console logs
people in by their approver keys instead (``node/console``).
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

COOKIE = "scifed_session"
IDLE_S = 30 * 60


@dataclass
class Session:
    token: str
    csrf: str
    user: str
    role: str
    # Server-side only (never rendered, never logged): e.g. an approver's unlocked key.
    secrets: dict[str, Any] = field(default_factory=dict, repr=False)
    last_seen: float = field(default_factory=time.monotonic)


class SessionStore:
    def __init__(self, idle_s: float = IDLE_S):
        self.idle_s = idle_s
        self._by_token: dict[str, Session] = {}
        self._lock = threading.Lock()
        self._login_tokens: set[str] = set()

    def create(self, user: str, role: str, **held: Any) -> Session:
        s = Session(token=secrets.token_urlsafe(32), csrf=secrets.token_urlsafe(24),
                    user=user, role=role, secrets=dict(held))
        with self._lock:
            self._by_token[s.token] = s
        return s

    def get(self, token: str | None) -> Session | None:
        if not token:
            return None
        now = time.monotonic()
        with self._lock:
            s = self._by_token.get(token)
            if s is None:
                return None
            if now - s.last_seen > self.idle_s:
                del self._by_token[token]
                return None
            s.last_seen = now
            return s

    def drop(self, token: str | None) -> None:
        with self._lock:
            self._by_token.pop(token or "", None)

    def login_token(self) -> str:
        """A one-time token for the address a single-user console prints at start."""
        tok = secrets.token_urlsafe(24)
        with self._lock:
            self._login_tokens.add(tok)
        return tok

    def redeem(self, token: str) -> bool:
        """True once for a token :meth:`login_token` issued; never again."""
        with self._lock:
            if token in self._login_tokens:
                self._login_tokens.discard(token)
                return True
            return False
