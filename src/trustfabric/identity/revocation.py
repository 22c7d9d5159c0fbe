"""The revocation set: revoked certificate serials, quarantined SPIFFE IDs, revoked token keys.

Enforcement points consult :meth:`RevocationSet.is_revoked` at handshake and
session renewal. The set is *versioned*: every change bumps ``version``, so a
consumer can tell it is current, and subscribers are called (push) with the new
version and the entry. Revoking a SPIFFE ID quarantines the identity: every
certificate naming it is refused, whatever its serial, until released (a
release is itself a versioned change). Revoking a token signing key (``token_key``,
by ``kid``) tells every enforcement point to close the sessions a token of that key
admitted and every verifier to drop the key. With a store, every change is persisted
and a new set loads the persisted state.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable

from trustfabric.identity.errors import IdentityError
from trustfabric.identity.spiffe import SpiffeId
from trustfabric.identity.store import IdentityStore, RevocationRow
from trustfabric.subscriptions import add_subscriber

__all__ = ["RevocationSet", "RevocationEntry", "RevocationListener", "TOKEN_KEY"]


@dataclass(frozen=True)
class RevocationEntry:
    version: int
    kind: str  # "serial" | "spiffe_id" | "release_spiffe_id" | "token_key"
    value: str
    revoked_at: float
    reason: str


TOKEN_KEY = "token_key"
RevocationListener = Callable[[RevocationEntry], None]


class RevocationSet:
    """Versioned set of revoked serials and quarantined SPIFFE IDs."""

    def __init__(self, store: IdentityStore | None = None) -> None:
        self._store = store
        self._lock = threading.RLock()
        self._serials: set[int] = set()
        self._ids: set[str] = set()
        self._token_keys: set[str] = set()
        self._listeners: list[RevocationListener] = []
        self.version = 0
        self._rows = 0  # rows of the store applied here (a replica follows the rows another writer adds)
        if store is not None:
            version, rows = store.list_revocations()
            for row in rows:
                self._apply(row.kind, row.value)
            self.version = version
            self._rows = len(rows)

    def follow(self) -> list[RevocationEntry]:
        """Apply the rows another writer of the shared store added since this set last read it (a control-plane
        replica beside the active one); each is passed to the listeners like a change made here. Rows are only
        ever added, so what was applied is never applied twice."""
        if self._store is None:
            return []
        version, rows = self._store.list_revocations()
        with self._lock:
            fresh, self._rows = rows[self._rows:], max(self._rows, len(rows))
            entries = []
            for row in fresh:
                self._apply(row.kind, row.value)
                self.version = max(self.version + 1, version if row is fresh[-1] else 0)
                entries.append(RevocationEntry(self.version, row.kind, row.value, row.revoked_at, row.reason))
            listeners = list(self._listeners)
        for entry in entries:
            for listener in listeners:
                listener(entry)
        return entries

    def _apply(self, kind: str, value: str) -> None:
        if kind == "serial":
            self._serials.add(int(value))
        elif kind == "spiffe_id":
            self._ids.add(value)
        elif kind == "release_spiffe_id":
            self._ids.discard(value)
        elif kind == TOKEN_KEY:
            self._token_keys.add(value)

    def _change(self, kind: str, value: str, now: float, reason: str) -> RevocationEntry:
        with self._lock:
            if self._store is not None:
                version = self._store.add_revocation(RevocationRow(kind, value, now, reason))
                self._rows += 1
            else:
                version = self.version + 1
            self._apply(kind, value)
            self.version = max(version, self.version + 1)
            entry = RevocationEntry(self.version, kind, value, now, reason)
            listeners = list(self._listeners)
        for listener in listeners:
            listener(entry)
        return entry

    def revoke_serial(self, serial: int, now: float, reason: str = "revoked") -> RevocationEntry:
        if not isinstance(serial, int) or serial <= 0:
            raise IdentityError(f"bad certificate serial {serial!r}", reason="revocation.bad_serial")
        return self._change("serial", str(serial), now, reason)

    def revoke_spiffe_id(self, spiffe_id: SpiffeId | str, now: float, reason: str = "quarantine") -> RevocationEntry:
        sid = spiffe_id if isinstance(spiffe_id, SpiffeId) else SpiffeId.parse(spiffe_id)
        return self._change("spiffe_id", str(sid), now, reason)

    def release_spiffe_id(self, spiffe_id: SpiffeId | str, now: float, reason: str = "released") -> RevocationEntry:
        sid = spiffe_id if isinstance(spiffe_id, SpiffeId) else SpiffeId.parse(spiffe_id)
        return self._change("release_spiffe_id", str(sid), now, reason)

    def revoke_token_key(self, kid: str, now: float, reason: str = "token.key_revoked") -> RevocationEntry:
        """Record that the token signing key ``kid`` is revoked (the key ring removes the key itself)."""
        if not isinstance(kid, str) or not kid or len(kid) > 128 or not kid.isascii():
            raise IdentityError(f"bad token key id {str(kid)[:64]!r}", reason="revocation.bad_kid")
        return self._change(TOKEN_KEY, kid, now, reason)

    def is_token_key_revoked(self, kid: str) -> bool:
        with self._lock:
            return kid in self._token_keys

    def is_revoked(self, serial: int, spiffe_id: str) -> bool:
        """True when the serial is revoked or the SPIFFE ID is quarantined."""
        with self._lock:
            return serial in self._serials or str(spiffe_id) in self._ids

    def is_quarantined(self, spiffe_id: SpiffeId | str) -> bool:
        with self._lock:
            return str(spiffe_id) in self._ids

    def subscribe(self, callback: RevocationListener) -> Callable[[], None]:
        """Call ``callback(entry)`` on every change; returns an unsubscribe function."""
        return add_subscriber(self._listeners, self._lock, callback)

    def snapshot(self) -> tuple[int, frozenset[int], frozenset[str]]:
        with self._lock:
            return self.version, frozenset(self._serials), frozenset(self._ids)
