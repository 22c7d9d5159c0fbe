"""Trading errors: why the floor refused an order, an approval, a command or a FIX message.

Every refusal on the floor carries a stable dotted reason code; the code travels
in :class:`~trustfabric.trading.messages.Reject` messages and audit records::

    TradingError (trustfabric.errors)           trading.rejected
    ├── OrderInvalid                            order.*      malformed order (qty, price, tick, side)
    ├── RiskRejected                            risk.*       a 15c3-5 pre-trade check refused
    │     risk.price_collar, risk.no_reference, risk.max_qty, risk.max_notional,
    │     risk.credit_agent, risk.credit_account, risk.credit_firm, risk.dup_clordid,
    │     risk.dup_window, risk.throttle, risk.restricted, risk.halted, risk.reducing_only,
    │     risk.principal_mismatch, risk.unknown_order
    ├── KillSwitchRefused                       killswitch.* not_privileged, mfa_missing, mfa_stale,
    │                                                        four_eyes, no_request, bad_scope
    ├── ApprovalRefused                         approval.*   forged, altered, replayed, expired,
    │                                                        future, unknown_key, seen_full
    ├── RoutingError                            route.*      no_venue, no_liquidity
    ├── BookError                               book.*       unknown_order, not_owner, bad_replace
    ├── OrderStateError                         oms.*        illegal_transition, overfill, unknown_order
    ├── LedgerError                             ledger.*     insufficient_funds, unbalanced, unknown_account
    └── FixError                                fix.*        garbled, bad_checksum, bad_body_length,
                                                             missing_tag, bad_comp_id, seq_gap,
                                                             seq_too_low, not_logged_on,
                                                             identity_mismatch, bad_value

Pure functions in this package raise these; service cores catch them at their
boundary and turn them into a ``Reject`` (a deny), never into an allow.
"""

from __future__ import annotations

from trustfabric.errors import TradingError, TrustFabricError


class OrderInvalid(TradingError):
    reason = "order.invalid"


class RiskRejected(TradingError):
    reason = "risk.rejected"


class KillSwitchRefused(TradingError):
    reason = "killswitch.refused"


class ApprovalRefused(TradingError):
    reason = "approval.refused"


class RoutingError(TradingError):
    reason = "route.error"


class BookError(TradingError):
    reason = "book.error"


class OrderStateError(TradingError):
    reason = "oms.illegal_transition"


class LedgerError(TradingError):
    reason = "ledger.error"


class FixError(TradingError):
    reason = "fix.error"


__all__ = [
    "TradingError",
    "OrderInvalid",
    "RiskRejected",
    "KillSwitchRefused",
    "ApprovalRefused",
    "RoutingError",
    "BookError",
    "OrderStateError",
    "LedgerError",
    "FixError",
]


class LinkDown(TrustFabricError):
    """A service's outgoing hop could not be (re)established: the request it carried is not sent."""

    reason = "link.down"
