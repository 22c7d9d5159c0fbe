"""Where a state-changing command goes: the running floor's control plane, or the store when no floor runs.

Every command that changes security state (``signal ...``, ``response quarantine|release``,
``ca revoke|promote|issue --no-attest|rotate``, ``token rotate-key``) calls :func:`run`
with an action name of :data:`trustfabric.identity.operators.ACTIONS`, its target and
string arguments, and the person (:func:`trustfabric.commands.common.operator_credential`):

* ``$TRUSTFABRIC_HOME/floor/runtime.json`` names a live zero-trust control plane ->
  one :class:`~trustfabric.control.protocol.OperatorRequest` to its operator endpoint; the
  plane authenticates and authorizes the person, applies the change to the live floor
  and answers only once every enforcement point confirmed it. A refusal, or a change
  some point did not confirm (``control.unconfirmed``), exits non-zero with the reason.
* the manifest names a control plane that cannot be reached -> ``control.unreachable``:
  never a fall back to the store behind a running floor's back;
* no floor (no manifest, one marked stopped, or one whose launcher process is gone) ->
  the command's offline path, after an :class:`~trustfabric.identity.operators.OperatorAuthority`
  over the store authorized the same action for the same person.
"""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass, field
from typing import Callable

from trustfabric.commands.common import fail, offline_operator_authority
from trustfabric.control.errors import ControlRefused
from trustfabric.errors import TrustFabricError
from trustfabric.home import home_dir
from trustfabric.identity.operators import Operator, OperatorCredential

OPERATOR_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class Outcome:
    """What a command reports: where the change was applied, by whom, and who confirmed it."""

    live: bool
    operator: str
    result: dict[str, str] = field(default_factory=dict)
    applied: list[str] = field(default_factory=list)

    def where(self) -> str:
        if self.live:
            return f"on the running floor, confirmed by {len(self.applied)} enforcement points"
        return "in the store (no floor running)"


def _launcher_alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return True  # a manifest that does not say: assume it runs (the live path decides, and refuses)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # someone else's process: it exists
    return True


def live_control_plane() -> dict | None:
    """The running floor's operator endpoint (port, SPIFFE ID, bundle), or ``None`` when no floor runs.

    No manifest, a manifest marked stopped (``stopped_at``, written by the launcher when it
    stops), or one whose launcher process is gone: no floor. A perimeter floor has no
    control plane to ask. A manifest that exists but cannot be read is a refusal
    (``control.manifest_unreadable``), never a silent fall back to the offline path.
    """
    path = home_dir(create=False) / "floor" / "runtime.json"
    try:
        manifest = json.loads(path.read_text())
        if not isinstance(manifest, dict):
            raise ValueError("not a JSON object")
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ControlRefused(f"{path}: {exc}", reason="control.manifest_unreadable") from None
    control = manifest.get("control") or {}
    if manifest.get("stopped_at") or not _launcher_alive(manifest.get("pid")):
        return None
    if manifest.get("mode") != "zero-trust" or not control.get("bundle_pem") or not control.get("bootstrap_port"):
        return None
    return control


def send(control: dict, request: object, timeout_s: float = OPERATOR_TIMEOUT_S):
    """One request to the live operator endpoint; :class:`ControlRefused` when unreachable or not the one named."""
    from trustfabric.control.client import operator_request

    try:
        port = int(control["bootstrap_port"])
        bundle = str(control["bundle_pem"]).encode()
        control_id = str(control["spiffe_id"])
    except (KeyError, TypeError, ValueError):
        raise ControlRefused("the floor manifest names no usable operator endpoint",
                             reason="control.manifest_unreadable") from None
    return asyncio.run(operator_request("127.0.0.1", port, bundle_pem=bundle, control_id=control_id, request=request,
                                        timeout_s=timeout_s))


def authorize_offline(credential: OperatorCredential, action: str, target: str) -> Operator:
    """No floor runs: the store's people decide (the same authority, action names and audit)."""
    from trustfabric.identity.plane import IdentityPlane

    with IdentityPlane(home_dir()) as plane:
        return offline_operator_authority(plane).authorize(credential, action, target, plane.clock.now())


def apply(action: str, target: str, args: dict[str, str], credential: OperatorCredential,
          offline: Callable[[Operator], dict[str, str]]) -> Outcome:
    """Apply ``action`` where the state lives now; raises a typed refusal (the caller exits non-zero)."""
    from trustfabric.control.protocol import OperatorRequest

    control = live_control_plane()
    if control is not None:
        request = OperatorRequest(credential=credential, action=action, target=target,
                                  args={k: str(v) for k, v in args.items()})
        reply = send(control, request)
        if not reply.ok:
            detail = f"{action} {target}".strip() + " refused by the control plane"
            if reply.missing:
                detail = f"{action} {target}: not confirmed by {', '.join(reply.missing)}"
            raise ControlRefused(detail, reason=reply.reason or "control.refused")
        return Outcome(True, reply.operator, dict(reply.result), list(reply.applied))
    operator = authorize_offline(credential, action, target)
    return Outcome(False, operator.principal, offline(operator))


def run(action: str, target: str, args: dict[str, str], credential: OperatorCredential,
        offline: Callable[[Operator], dict[str, str]]) -> Outcome:
    """:func:`apply` for a command: a refusal is one line ``reason: message`` on stderr and exit 1."""
    try:
        return apply(action, target, args, credential, offline)
    except TrustFabricError as exc:
        raise fail(exc.reason, exc.detail) from None
