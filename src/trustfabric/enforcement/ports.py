"""The narrow interfaces the enforcement point consumes, so that it depends on behaviour, not modules.

* :class:`TableSource` - the policy engine as seen from a PEP: one principal's
  :class:`~trustfabric.policy.decision.DecisionTable` for a given time.
  ``trustfabric.policy.engine.PolicyEngine`` satisfies it; so does
  :class:`trustfabric.enforcement.remote.LoopbackTableSource` (another process).
* :class:`AsyncTableSource` - a table source in another process also offers
  ``async fetch_table`` with its own deadline; the PEP's session opens, renewals
  and re-pulls then await it instead of blocking the event loop
  (``trustfabric.control.client.ControlTableSource``, ``AsyncLoopbackTableSource``).
* :class:`TokenCheck` - the identity provider's token verifier
  (``trustfabric.identity.tokens.TokenVerifier``): audience, signature, expiry and
  ``cnf`` binding to the presented certificate; returns claims or raises.
* :class:`PeerLike` - what the TLS layer says about the caller
  (``trustfabric.transport.tls.PeerIdentity``).

Anything that raises through these ports is treated as unreachable: fail closed.
"""

from __future__ import annotations

from typing import Any, Protocol

from trustfabric.policy.decision import DecisionTable


class TableSource(Protocol):
    def decision_table(self, principal: str, now: float) -> DecisionTable: ...


class AsyncTableSource(TableSource, Protocol):
    async def fetch_table(self, principal: str, now: float) -> DecisionTable: ...


class TokenCheck(Protocol):
    def verify(self, token: str, audience: str, presented_cert_der: bytes | None = None,
               now: float | None = None) -> Any: ...


class PeerLike(Protocol):
    spiffe_id: Any  # a SpiffeId or its string form
    cert_der: bytes
    fingerprint_sha256: str

