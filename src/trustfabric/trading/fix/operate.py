"""FIX client onboarding as an operator action of the running floor's control plane.

``trustfabric fix client add | renew`` changes security state (it issues an edge
certificate and binds a SenderCompID to an account), so it is a person's operator
action (``fix.client_add`` / ``fix.client_renew`` on ``Control::"fix-clients"``),
authenticated, authorized by Cedar and audited like the others. The control plane
sits below the trading floor and knows nothing of FIX; the launcher registers
:func:`fix_client_action` with it (:meth:`ControlPlane.add_operator_action`), so
that while a floor runs the plane is the only writer of the edge registry. The
gateway reads the registry at every Logon and trusts the edge CA, so the change is
live at the client's next Logon: nothing to push, nothing to restart.
"""

from __future__ import annotations

from trustfabric.audit.events import Kind
from trustfabric.control.plane import CONFIRM_NONE, Applied, ControlPlane
from trustfabric.identity.operators import Operator
from trustfabric.trading.fix.edge import EdgePki, entry_result, onboard

ACTIONS = ("fix.client_add", "fix.client_renew")


def audit_onboarding(emitter, principal: str, action: str, entry) -> None:
    emitter.emit(Kind.CERT_ISSUED, principal=principal, action=action, resource=entry.spiffe_id, decision="allow",
                 detail={"comp_id": entry.comp_id, "account": entry.account, "serial": str(entry.serial),
                         "not_after": entry.not_after})


def fix_client_action(plane: ControlPlane, operator: Operator, action: str, target: str, args: dict[str, str],
                      now: float) -> Applied:
    """Apply ``fix.client_add`` / ``fix.client_renew`` for an authorized person, on the plane's home."""
    edge = EdgePki.open(plane.home, plane.trust_domain, now)
    entry = onboard(edge, action, target, args, now)
    audit_onboarding(plane.emitter, operator.principal, action, entry)
    return Applied(operator.principal, CONFIRM_NONE, entry_result(entry))


def register(plane: ControlPlane) -> None:
    for action in ACTIONS:
        plane.add_operator_action(action, fix_client_action)
