"""Decisions and decision tables: the plain data the policy engine hands to enforcement points.

A :class:`Decision` is immutable and self-explaining: allow or deny, the policies
that determined it, errors (a missing entity or attribute is a deny that keeps
the error), obligations the enforcement point must apply, and the epoch it was
made in. A :class:`DecisionTable` is one principal's pre-computed decisions for
every (action, resource) it may need, valid for one epoch and never past its
hard ``expires_at``.
"""

from __future__ import annotations

import msgspec

ALLOW = "allow"
DENY = "deny"

# Reason codes of decisions.
REASON_ALLOW = "policy.allow"
REASON_NO_PERMIT = "policy.no_permit"  # default deny: nothing permits
REASON_FORBID = "policy.forbid"  # a forbid policy matched
REASON_ERROR = "policy.error"  # evaluation error (missing entity/attribute...): deny
REASON_NOT_IN_TABLE = "policy.not_in_table"  # (action, resource) never compiled: deny


class Obligations(msgspec.Struct, frozen=True, omit_defaults=True):
    """Constraints attached to an allow; ``None`` means "no constraint of this kind"."""

    ttl_s: float | None = None  # how long the decision may be cached
    max_notional: float | None = None  # per order, in the account currency
    max_rate: float | None = None  # messages per second (token bucket)
    burst: int | None = None  # bucket size; defaults to max(1, max_rate)
    symbols: frozenset[str] | None = None  # allowed instrument symbols
    step_up_max_age_s: float | None = None  # people: MFA no older than this

    def merge(self, other: "Obligations") -> "Obligations":
        """The stricter of two obligation sets, field by field."""

        def lo(a, b):
            if a is None:
                return b
            if b is None:
                return a
            return min(a, b)

        symbols = self.symbols
        if other.symbols is not None:
            symbols = other.symbols if symbols is None else symbols & other.symbols
        return Obligations(
            ttl_s=lo(self.ttl_s, other.ttl_s),
            max_notional=lo(self.max_notional, other.max_notional),
            max_rate=lo(self.max_rate, other.max_rate),
            burst=lo(self.burst, other.burst),
            symbols=symbols,
            step_up_max_age_s=lo(self.step_up_max_age_s, other.step_up_max_age_s),
        )


NO_OBLIGATIONS = Obligations()


class Decision(msgspec.Struct, frozen=True):
    """One decision: only ``allowed is True`` lets anything through."""

    allowed: bool
    principal: str
    action: str
    resource: str
    reason: str
    policy_ids: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()
    obligations: Obligations = NO_OBLIGATIONS
    epoch: int = 0

    @property
    def effect(self) -> str:
        return ALLOW if self.allowed else DENY


class DecisionTable(msgspec.Struct, frozen=True):
    """A principal's pre-computed decisions, keyed ``(action, resource)``.

    ``epoch`` is the principal's epoch and ``global_epoch`` the engine's global one
    at compile time; a table is current only while both still match and
    ``now < expires_at``.
    """

    principal: str
    epoch: int
    global_epoch: int
    issued_at: float
    expires_at: float
    entries: dict[tuple[str, str], Decision]

    def lookup(self, action: str, resource: str) -> Decision | None:
        return self.entries.get((action, resource))


# What an invalidation asks of an enforcement point beyond re-deciding (``Invalidation.kind``).
EPOCH = "epoch"  # the epochs moved: the next message re-pulls its table
QUARANTINE = "quarantine"  # also close the principal's sessions now and refuse its handshakes
RELEASE = "release"  # also lift a quarantine
INVALIDATION_KINDS = (EPOCH, QUARANTINE, RELEASE)


class Invalidation(msgspec.Struct, frozen=True):
    """Published when epochs move: ``principal`` None means every principal.

    ``kind`` says what else the enforcement points do (:data:`QUARANTINE`, :data:`RELEASE`);
    ``reason`` is for people and the audit log, never parsed.
    """

    principal: str | None
    epoch: int
    global_epoch: int
    reason: str
    source: str = ""
    kind: str = EPOCH
