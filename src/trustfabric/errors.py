"""The root of trustfabric's exception tree.

Every refusal in trustfabric is an exception carrying a stable, dotted *reason
code* (``token.expired``, ``cert.wrong_trust_domain``...). The code is what lands
in the audit record and what a CLI prints; the message is for people.

Each part of the fabric defines its finer exceptions in its own ``errors``
module, always below one of these branches::

    TrustFabricError                 reason: str, detail: str
    ├── ConfigError                  bad or missing configuration / state
    ├── IdentityError                identity plane (SPIFFE IDs, CA, attestation, users, tokens)
    ├── PolicyError                  policy engine and administrator
    ├── SignalError                  posture, threat intel, risk, market context
    ├── TransportError               mTLS, frames, peer identity
    ├── EnforcementError             sessions, hot-path checks, obligations
    ├── AuditError                   audit log, segments, verification
    ├── TradingError                 trading-floor services and their pure logic
    └── SimulationError              threat scenarios and reports

``retryable`` says whether the same attempt may pass if simply made again (a peer
that was down, a connection reset, a timeout): a caller retries on it, with backoff
and a deadline, and treats every other refusal as final. It is a property of the
error, set where it is raised or by its class, never read off the reason code.

Foreign exceptions (``ssl``, ``jwt``, ``cedarpy``, ``sqlite3``...) are translated
into these at the boundary of the module that calls the foreign library; nothing
above that boundary sees a foreign exception.
"""

from __future__ import annotations


class TrustFabricError(Exception):
    """Base of every trustfabric error; ``reason`` is a stable code for logs and exits."""

    reason: str = "error"
    retryable: bool = False  # a transient failure: the same attempt may pass when made again

    def __init__(self, detail: str = "", *, reason: str | None = None, retryable: bool | None = None) -> None:
        if reason is not None:
            self.reason = reason
        if retryable is not None:
            self.retryable = retryable
        self.detail = detail
        super().__init__(f"{self.reason}: {detail}" if detail else self.reason)


class ConfigError(TrustFabricError):
    reason = "config.invalid"


class IdentityError(TrustFabricError):
    reason = "identity.refused"


class PolicyError(TrustFabricError):
    reason = "policy.error"


class SignalError(TrustFabricError):
    reason = "signal.invalid"


class TransportError(TrustFabricError):
    reason = "transport.error"


class EnforcementError(TrustFabricError):
    reason = "enforcement.denied"


class AuditError(TrustFabricError):
    reason = "audit.error"


class TradingError(TrustFabricError):
    reason = "trading.rejected"


class SimulationError(TrustFabricError):
    reason = "simulation.error"
