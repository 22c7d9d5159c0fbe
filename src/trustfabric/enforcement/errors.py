"""Enforcement errors: why a session was refused or a message denied.

Every refusal carries a stable dotted reason code that lands in the audit record
and in the error reply a denied caller receives::

    EnforcementError (trustfabric.errors)        enforcement.denied
    ├── SessionRefused                           session.*   (open / renew refused)
    │     session.peer_revoked, session.peer_quarantined, session.token_invalid,
    │     session.token_wrong_subject, session.token_replayed, session.token_expired,
    │     session.engine_unreachable, session.identity_unreachable, session.table_invalid
    ├── SessionClosed                            session.closed (use of a closed session)
    └── MessageDenied                            a hot-path deny raised by the service API
          enforcement.no_session, enforcement.not_in_table, enforcement.rate,
          enforcement.notional, enforcement.symbol, enforcement.token_expired,
          enforcement.engine_unreachable, enforcement.audit_unavailable, enforcement.internal,
          policy.* (a deny decision)

    PolicyError (trustfabric.errors)
    └── EngineUnreachable                        policy.engine_unreachable (retryable)

A table source that answers "no" (a PolicyError such as policy.request.unknown_principal)
refuses with its own reason. Foreign exceptions raised by a table source or token verifier (sockets, timeouts,
anything) are translated here, at the enforcement point's boundary, into
``session.engine_unreachable`` / ``session.identity_unreachable``; they never
become an allow.
"""

from __future__ import annotations

from trustfabric.errors import EnforcementError, PolicyError

# Session refusal reasons.
SESSION_PEER_REVOKED = "session.peer_revoked"
SESSION_PEER_QUARANTINED = "session.peer_quarantined"
SESSION_TOKEN_INVALID = "session.token_invalid"
SESSION_TOKEN_WRONG_SUBJECT = "session.token_wrong_subject"
SESSION_TOKEN_REPLAYED = "session.token_replayed"
SESSION_TOKEN_EXPIRED = "session.token_expired"
SESSION_ENGINE_UNREACHABLE = "session.engine_unreachable"
SESSION_IDENTITY_UNREACHABLE = "session.identity_unreachable"
SESSION_TABLE_INVALID = "session.table_invalid"
SESSION_CLOSED = "session.closed"

# Hot-path deny reasons (decisions' own policy.* reasons pass through unchanged).
NO_SESSION = "enforcement.no_session"
NOT_IN_TABLE = "enforcement.not_in_table"
RATE = "enforcement.rate"
NOTIONAL = "enforcement.notional"
SYMBOL = "enforcement.symbol"
TOKEN_EXPIRED = "enforcement.token_expired"
ENGINE_UNREACHABLE = "enforcement.engine_unreachable"
INTERNAL = "enforcement.internal"
AUDIT_UNAVAILABLE = "enforcement.audit_unavailable"
ALLOW = "policy.allow"


class SessionRefused(EnforcementError):
    """A session could not be opened or renewed; ``reason`` says which check refused."""

    reason = "session.refused"


class SessionClosed(EnforcementError):
    reason = SESSION_CLOSED


class MessageDenied(EnforcementError):
    """Raised by the service API when the enforcement point denies a message."""

    reason = "enforcement.denied"


class EngineUnreachable(PolicyError):
    """No answer from the engine (refused, reset, timed out, garbage): the PEP fails closed. Retryable."""

    reason = "policy.engine_unreachable"
    retryable = True
