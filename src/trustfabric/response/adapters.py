"""Adapters from the response plane's narrow protocols to the fabric's real parts.

The response core depends only on :class:`~trustfabric.response.containment.Revoker`,
:class:`~trustfabric.response.containment.PolicyControl`,
:class:`~trustfabric.response.baseline.RiskSink` and
:class:`~trustfabric.response.containment.SessionCloser`. These classes satisfy
them with:

* :class:`RevocationSetRevoker` - ``trustfabric.identity.revocation.RevocationSet``
  (quarantine by SPIFFE ID: every certificate naming it is refused);
* :class:`SignalHubPolicyControl` - ``trustfabric.signals.hub.SignalHub``
  quarantine flag (the policy engine listens and bumps exactly that principal's
  epoch) plus, when given the policy engine, one more bump whose invalidation
  ``kind`` is ``QUARANTINE`` / ``RELEASE`` so that enforcement points
  close the principal's sessions at once instead of at its next message;
* :class:`SignalHubRiskSink` - the hub's behavioural risk score (whole 0-100);
* :class:`EnforcementPointsCloser` - in-process enforcement points
  (``EnforcementPoint.quarantine``), for the embedded floor.

They are duck-typed (no import of the other parts), so the response core stays
importable and testable on its own.
"""

from __future__ import annotations

from typing import Any, Iterable

from trustfabric.clock import SYSTEM_CLOCK, Clock
from trustfabric.policy.decision import QUARANTINE, RELEASE

QUARANTINE_INVALIDATION = "quarantine.response"
RELEASE_INVALIDATION = "release.officer"
ORIGIN = "response"


class RevocationSetRevoker:
    def __init__(self, revocations: Any, clock: Clock = SYSTEM_CLOCK) -> None:
        self.revocations = revocations
        self.clock = clock

    def revoke_spiffe_id(self, spiffe_id: str, reason: str) -> object:
        return self.revocations.revoke_spiffe_id(spiffe_id, self.clock.now(), reason)

    def release_spiffe_id(self, spiffe_id: str, reason: str) -> object:
        return self.revocations.release_spiffe_id(spiffe_id, self.clock.now(), reason)


class SignalHubPolicyControl:
    def __init__(self, hub: Any, engine: Any | None = None) -> None:
        self.hub = hub
        self.engine = engine

    def set_quarantined(self, principal: str, quarantined: bool) -> None:
        if quarantined:
            self.hub.quarantine(principal, reason=QUARANTINE_INVALIDATION, origin=ORIGIN)
        else:
            self.hub.release(principal, origin=ORIGIN)
        if self.engine is not None:
            reason = QUARANTINE_INVALIDATION if quarantined else RELEASE_INVALIDATION
            self.engine.bump([principal], reason, ORIGIN, QUARANTINE if quarantined else RELEASE)


class SignalHubRiskSink:
    def __init__(self, hub: Any) -> None:
        self.hub = hub

    def set_risk(self, principal: str, score: float, source: str) -> None:
        whole = int(round(min(100.0, max(0.0, float(score)))))
        self.hub.set_risk_score(principal, whole, origin=source)


class EnforcementPointsCloser:
    def __init__(self, points: Iterable[Any]) -> None:
        self.points = list(points)

    def close_sessions(self, principal: str, reason: str) -> int:
        return sum(int(p.quarantine(principal, reason) or 0) for p in self.points)


def confirm_refusals(containment: Any, point_id: str, point: Any) -> Any:
    """A bus subscriber that confirms, for one in-process enforcement point, that it now refuses.

    Subscribe it to the invalidation bus *after* the point's own ``on_invalidation``
    (the in-process bus delivers in order): on a quarantine invalidation it checks
    that the point holds no session of the principal any more and calls
    ``containment.acknowledge``. The point is registered with the containment here.
    """
    containment.register_point(point_id)

    def on_invalidation(inv: Any) -> None:
        principal = getattr(inv, "principal", None)
        if principal is None or getattr(inv, "kind", None) != QUARANTINE:
            return
        if not point.sessions(principal):
            containment.acknowledge(principal, point_id)

    return on_invalidation
