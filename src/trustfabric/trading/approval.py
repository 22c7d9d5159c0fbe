"""Pre-trade risk's approval, bound to one order, checked by the router in microseconds.

Pre-trade risk signs every approved order with HMAC-SHA256 under a key it shares
only with the order router. The MAC covers the originating principal, ClOrdID,
symbol, side, quantity, price, limits version, issue time, a random nonce and the
key id, in an unambiguous length-prefixed encoding. The router's
:class:`ApprovalVerifier` refuses:

* a forged approval (unknown key id, or a MAC that does not verify),
* an altered one (any approval field changed breaks the MAC; any order field that
  differs from the approval breaks the binding),
* a replayed one (the nonce was already used within the validity window; the
  seen-set only holds nonces still within the window, and refuses when full
  instead of forgetting: fail closed),
* an expired one, or one issued in the future beyond the allowed skew.

Time: ``now_ns`` and ``issued_ns`` are the host's monotonic clock in nanoseconds
(``Clock.monotonic_ns``; system-wide, so pre-trade-risk and the router it signs for
read the same clock on the floor's host): a wall-clock step neither expires an
approval early nor stretches its validity.

Keys rotate: a :class:`ApprovalKeyring` has one active key id used for signing
and keeps the previous keys accepted until retired, so rotation never drops
in-flight orders.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import os
from collections import deque
from typing import Callable

from trustfabric.trading.errors import ApprovalRefused
from trustfabric.trading.messages import NewOrder, RiskApproval

APPROVAL_FORGED = "approval.forged"
APPROVAL_ALTERED = "approval.altered"
APPROVAL_REPLAYED = "approval.replayed"
APPROVAL_EXPIRED = "approval.expired"
APPROVAL_FUTURE = "approval.future"
APPROVAL_UNKNOWN_KEY = "approval.unknown_key"
APPROVAL_SEEN_FULL = "approval.seen_full"
APPROVAL_MISSING = "approval.missing"

_MAC_DOMAIN = b"trustfabric.approval.v1"


def approval_payload(
    key_id: str,
    principal: str,
    cl_ord_id: str,
    symbol: str,
    side: str,
    qty: int,
    price: int,
    limits_version: int,
    issued_ns: int,
    nonce: bytes,
) -> bytes:
    """The canonical bytes the MAC covers (length-prefixed, so no field can bleed into another)."""
    text = (
        f"{len(key_id)}:{key_id}{len(principal)}:{principal}{len(cl_ord_id)}:{cl_ord_id}"
        f"{len(symbol)}:{symbol}{side}|{qty}|{price}|{limits_version}|{issued_ns}|"
    )
    return _MAC_DOMAIN + text.encode() + nonce


class ApprovalKeyring:
    """HMAC keys by id: one active signing key, plus previous keys still accepted."""

    __slots__ = ("_keys", "_macs", "active_id", "max_keys")

    def __init__(self, key_id: str, key: bytes, *, max_keys: int = 2) -> None:
        if len(key) < 32:
            raise ValueError("approval keys must be at least 32 bytes")
        self._keys: dict[str, bytes] = {key_id: key}
        self._macs = {key_id: hmac.new(key, digestmod=hashlib.sha256)}
        self.active_id = key_id
        self.max_keys = max_keys

    def mac(self, key_id: str, payload: bytes) -> bytes | None:
        """HMAC-SHA256 of ``payload`` under ``key_id`` (None for an unknown key); keyed state is precomputed."""
        base = self._macs.get(key_id)
        if base is None:
            return None
        h = base.copy()
        h.update(payload)
        return h.digest()

    @classmethod
    def generate(cls, key_id: str = "k1") -> "ApprovalKeyring":
        return cls(key_id, os.urandom(32))

    @property
    def active_key(self) -> bytes:
        return self._keys[self.active_id]

    def key(self, key_id: str) -> bytes | None:
        return self._keys.get(key_id)

    def key_ids(self) -> tuple[str, ...]:
        return tuple(self._keys)

    def rotate(self, key_id: str, key: bytes) -> None:
        """Make ``key_id`` active; keep the newest ``max_keys`` keys, retire older ones."""
        if len(key) < 32:
            raise ValueError("approval keys must be at least 32 bytes")
        if key_id in self._keys:
            raise ValueError(f"key id {key_id!r} already used")
        self._keys[key_id] = key
        self._macs[key_id] = hmac.new(key, digestmod=hashlib.sha256)
        self.active_id = key_id
        while len(self._keys) > self.max_keys:
            oldest = next(iter(self._keys))
            del self._keys[oldest]
            del self._macs[oldest]

    def retire(self, key_id: str) -> None:
        if key_id == self.active_id:
            raise ValueError("cannot retire the active key")
        self._keys.pop(key_id, None)
        self._macs.pop(key_id, None)


class ApprovalSigner:
    """Issues approvals for orders that passed pre-trade risk.

    Nonces are unique rather than secret (the MAC provides authenticity): a random
    8-byte prefix per signer instance followed by an 8-byte counter, so two risk
    instances sharing a key never collide and no syscall is made per approval.
    """

    __slots__ = ("keyring", "_prefix", "_counter")

    def __init__(self, keyring: ApprovalKeyring, random_bytes: Callable[[int], bytes] = os.urandom) -> None:
        self.keyring = keyring
        self._prefix = random_bytes(8)
        self._counter = itertools.count(1)

    def sign(self, order: NewOrder, principal: str, limits_version: int, now_ns: int) -> RiskApproval:
        keyring = self.keyring
        key_id = keyring.active_id
        nonce = self._prefix + next(self._counter).to_bytes(8, "big")
        payload = approval_payload(
            key_id, principal, order.cl_ord_id, order.symbol, order.side, order.qty, order.price,
            limits_version, now_ns, nonce,
        )
        mac = keyring.mac(key_id, payload)
        return RiskApproval(
            principal=principal,
            cl_ord_id=order.cl_ord_id,
            symbol=order.symbol,
            side=order.side,
            qty=order.qty,
            price=order.price,
            limits_version=limits_version,
            issued_ns=now_ns,
            nonce=nonce,
            key_id=key_id,
            mac=mac,
        )


class ApprovalVerifier:
    """The router's check: genuine, bound to this order, fresh, and used once.

    ``validity_ns`` bounds both the approval's lifetime and how long a nonce is
    remembered; ``max_seen`` bounds memory (when full, new approvals are refused
    until old nonces age out: fail closed, never forget early).
    """

    __slots__ = ("keyring", "validity_ns", "skew_ns", "max_seen", "_seen", "_expiries", "min_limits_version")

    def __init__(
        self,
        keyring: ApprovalKeyring,
        *,
        validity_ns: int = 2_000_000_000,
        skew_ns: int = 100_000_000,
        max_seen: int = 1_000_000,
        min_limits_version: int = 0,
    ) -> None:
        self.keyring = keyring
        self.validity_ns = validity_ns
        self.skew_ns = skew_ns
        self.max_seen = max_seen
        self.min_limits_version = min_limits_version
        self._seen: set[bytes] = set()
        self._expiries: deque[tuple[int, bytes]] = deque()

    def seen_count(self) -> int:
        return len(self._seen)

    def _prune(self, now_ns: int) -> None:
        expiries = self._expiries
        seen = self._seen
        while expiries and expiries[0][0] <= now_ns:
            seen.discard(expiries.popleft()[1])

    def verify(self, approval: RiskApproval | None, order: NewOrder, now_ns: int) -> None:
        """Return ``None`` if the approval admits ``order`` now; raise :class:`ApprovalRefused` otherwise.

        A successful verification consumes the approval (its nonce is remembered).
        """
        if approval is None:
            raise ApprovalRefused("order carries no risk approval", reason=APPROVAL_MISSING)
        if not (type(approval.qty) is int and type(approval.price) is int and type(approval.issued_ns) is int
                and type(approval.limits_version) is int and type(approval.nonce) is bytes):
            raise ApprovalRefused("malformed approval field types", reason=APPROVAL_FORGED)
        try:
            payload = approval_payload(
                approval.key_id, approval.principal, approval.cl_ord_id, approval.symbol, approval.side,
                approval.qty, approval.price, approval.limits_version, approval.issued_ns, approval.nonce,
            )
            expected = self.keyring.mac(approval.key_id, payload)
            if expected is None:
                raise ApprovalRefused(f"unknown approval key {approval.key_id!r}", reason=APPROVAL_UNKNOWN_KEY)
            genuine = hmac.compare_digest(expected, approval.mac)
        except (TypeError, ValueError, AttributeError) as exc:  # malformed field types
            raise ApprovalRefused(f"malformed approval: {exc}", reason=APPROVAL_FORGED) from None
        if not genuine:
            raise ApprovalRefused("approval MAC does not verify", reason=APPROVAL_FORGED)
        if (
            approval.cl_ord_id != order.cl_ord_id
            or approval.principal != order.agent
            or approval.symbol != order.symbol
            or approval.side != order.side
            or approval.qty != order.qty
            or approval.price != order.price
        ):
            raise ApprovalRefused("order differs from what risk approved", reason=APPROVAL_ALTERED)
        if approval.limits_version < self.min_limits_version:
            raise ApprovalRefused("approval predates the current limits", reason=APPROVAL_EXPIRED)
        issued = approval.issued_ns
        if issued > now_ns + self.skew_ns:
            raise ApprovalRefused("approval issued in the future", reason=APPROVAL_FUTURE)
        expires = issued + self.validity_ns
        if now_ns >= expires:
            raise ApprovalRefused("approval expired", reason=APPROVAL_EXPIRED)
        self._prune(now_ns)
        nonce = approval.nonce
        if nonce in self._seen:
            raise ApprovalRefused("approval already used", reason=APPROVAL_REPLAYED)
        if len(self._seen) >= self.max_seen:
            raise ApprovalRefused("replay memory full", reason=APPROVAL_SEEN_FULL)
        self._seen.add(nonce)
        # Remember until the approval could no longer pass the expiry check (skew included).
        self._expiries.append((expires + self.skew_ns, nonce))
