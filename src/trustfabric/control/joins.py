"""One-time join tokens: how a freshly started workload proves the launcher started it.

The launcher asks for one token per service instance it is about to start
(:meth:`JoinTokens.issue`), hands it to that process alone (on its stdin), and the
bootstrap endpoint redeems it once (:meth:`JoinTokens.redeem`) for exactly the
SPIFFE ID it was issued for, before its expiry. Time is passed in.

With a store (the control plane's identity store) the tokens live there, as their SHA-256 only:
any control plane on the same store - a replica beside the one that issued it, the standby that
took the floor over - redeems a token once, and a redeemed token is refused as reused everywhere
(one row, marked used in one transaction). Without one they are kept in memory.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
from dataclasses import dataclass
from typing import Any

from trustfabric.control.errors import BootstrapRefused

DEFAULT_JOIN_TTL_S = 120.0


@dataclass(frozen=True, slots=True)
class JoinGrant:
    spiffe_id: str
    expires_at: float


class JoinTokens:
    def __init__(self, store: Any = None) -> None:
        self._store = store  # put_join_token / use_join_token (an IdentityStore), or None: in memory
        self._grants: dict[str, JoinGrant] = {}
        self._used: set[str] = set()
        self._lock = threading.Lock()

    def issue(self, spiffe_id: str, now: float, ttl_s: float = DEFAULT_JOIN_TTL_S) -> str:
        token = secrets.token_urlsafe(32)
        if self._store is not None:
            self._store.put_join_token(_digest(token), spiffe_id, now + ttl_s)
            return token
        with self._lock:
            self._grants[token] = JoinGrant(spiffe_id, now + ttl_s)
        return token

    def redeem(self, token: str, spiffe_id: str, now: float) -> None:
        """Consume ``token`` for ``spiffe_id``; raises :class:`BootstrapRefused` with a reason code."""
        if not isinstance(token, str) or not token or len(token) > 256:
            raise BootstrapRefused("malformed join token", reason="bootstrap.join_token_unknown")
        if self._store is not None:
            self._redeem_stored(token, spiffe_id, now)
            return
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

    def _redeem_stored(self, token: str, spiffe_id: str, now: float) -> None:
        row = self._store.use_join_token(_digest(token), spiffe_id, now)
        if row is None:
            raise BootstrapRefused("unknown join token", reason="bootstrap.join_token_unknown")
        issued_for, expires_at, used_at = row
        if used_at is not None:
            raise BootstrapRefused("join token already used", reason="bootstrap.join_token_reused")
        if not hmac.compare_digest(issued_for, spiffe_id):
            raise BootstrapRefused(f"join token was issued for {issued_for}, not {spiffe_id}",
                                   reason="bootstrap.identity_mismatch")
        if now >= expires_at:
            raise BootstrapRefused("join token expired", reason="bootstrap.join_token_expired")


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
