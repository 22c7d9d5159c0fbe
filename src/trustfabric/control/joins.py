"""One-time join tokens: how a freshly started workload proves the launcher started it.

The launcher asks for one token per service instance it is about to start
(:meth:`JoinTokens.issue`), hands it to that process alone (on its stdin), and the
bootstrap endpoint redeems it once (:meth:`JoinTokens.redeem`) for exactly the
SPIFFE ID it was issued for, before its expiry. Pure: time is passed in.
"""

from __future__ import annotations

import hmac
import secrets
import threading
from dataclasses import dataclass

from trustfabric.control.errors import BootstrapRefused

DEFAULT_JOIN_TTL_S = 120.0


@dataclass(frozen=True, slots=True)
class JoinGrant:
    spiffe_id: str
    expires_at: float


class JoinTokens:
    def __init__(self) -> None:
        self._grants: dict[str, JoinGrant] = {}
        self._used: set[str] = set()
        self._lock = threading.Lock()

    def issue(self, spiffe_id: str, now: float, ttl_s: float = DEFAULT_JOIN_TTL_S) -> str:
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._grants[token] = JoinGrant(spiffe_id, now + ttl_s)
        return token

    def redeem(self, token: str, spiffe_id: str, now: float) -> None:
        """Consume ``token`` for ``spiffe_id``; raises :class:`BootstrapRefused` with a reason code."""
        if not isinstance(token, str) or not token or len(token) > 256:
            raise BootstrapRefused("malformed join token", reason="bootstrap.join_token_unknown")
        with self._lock:
            if token in self._used:
                raise BootstrapRefused("join token already used", reason="bootstrap.join_token_reused")
            grant = self._grants.get(token)
            if grant is None:
                raise BootstrapRefused("unknown join token", reason="bootstrap.join_token_unknown")
            if not hmac.compare_digest(grant.spiffe_id, spiffe_id):
                raise BootstrapRefused(f"join token was issued for {grant.spiffe_id}, not {spiffe_id}",
                                       reason="bootstrap.identity_mismatch")
            del self._grants[token]
            self._used.add(token)
            if now >= grant.expires_at:
                raise BootstrapRefused("join token expired", reason="bootstrap.join_token_expired")
