"""The policy lifecycle's steps as a person takes them: author, sign, activate, roll back - each authorized and audited.

:class:`PolicyLifecycle` joins the pure bundle core (:mod:`trustfabric.policy.bundle`) to the
people of the identity plane. Each step is an operator action
(:data:`~trustfabric.identity.operators.ACTIONS`, decided by Cedar on ``Control::"policy"``):

* :meth:`author` (``policy.bundle``) - the person bundles a directory and signs it as author
  with their own key, so the author is proven, not claimed;
* :meth:`sign` (``policy.sign``, a TOTP verified with the request) - an approver's signature;
  the author, or a person who already signed, is refused before anything is written;
* :meth:`activate` (``policy.activate``) and :meth:`rollback` (``policy.rollback``), both with a
  fresh TOTP - :meth:`~trustfabric.policy.bundle.PolicyVersions.admit` then, with an engine (a
  running control plane's), the set is loaded: :meth:`~trustfabric.policy.engine.PolicyEngine.load_dir`
  bumps the global epoch and publishes it, so every enforcement point re-decides; only then is the
  version recorded as active. A refusal at any point changes nothing.

A person's signing key is made at their first signature (private half 0600 under ``key_dir``,
public half registered in the identity store); a key that does not match the registered one is
refused (``policy.bundle.key``). Every step, allowed or refused, is an ``admin.action`` event
under the person's name with the version, the bundle digest and the reason they gave.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trustfabric.audit.events import Emitter, Kind
from trustfabric.errors import TrustFabricError
from trustfabric.identity.operators import Operator, OperatorAuthority, OperatorCredential
from trustfabric.policy.bundle import (
    APPROVER,
    AUTHOR,
    Bundle,
    PolicyVersions,
    SigningKeys,
    build,
    collect,
    key_id,
    personal_key,
    sign,
)
from trustfabric.policy.engine import PolicyEngine
from trustfabric.policy.errors import BundleError, PolicyLoadError
from trustfabric.policy.topology import Topology

SIGNING_KEY_DIR = "policy-signing"  # under $TRUSTFABRIC_HOME/operator/: each person's private signing key


@dataclass(frozen=True)
class Activated:
    entry: dict[str, Any]
    global_epoch: int | None  # the engine's epoch after the load (None when applied offline)


class PolicyLifecycle:
    def __init__(self, versions: PolicyVersions, keys: SigningKeys, authority: OperatorAuthority, emitter: Emitter,
                 key_dir: Path) -> None:
        self.versions = versions
        self.keys = keys
        self.authority = authority
        self.emitter = emitter
        self.key_dir = Path(key_dir)

    # ------------------------------------------------------------------ audit
    def _audit(self, who: str, action: str, allowed: bool, reason: str, detail: dict[str, Any]) -> None:
        self.emitter.emit(Kind.ADMIN_ACTION, principal=f"user:{who}" if who else "", action=action,
                          resource="policy", decision="allow" if allowed else "deny", reason=reason, detail=detail)

    def _signing_key(self, person: str, now: float) -> Any:
        key = personal_key(self.key_dir, person, create=True)
        registered = self.keys.all().get(person)
        if registered is not None and key_id(registered) != key_id(key.public_key()):
            raise BundleError(f"{person}'s signing key here is not the one registered for them",
                              reason="policy.bundle.key")
        if registered is None:
            self.keys.register(person, key.public_key())
            self._audit(person, "policy.signing_key.registered", True, "policy.signing_key.registered",
                        {"key_id": key_id(key.public_key()), "at": now})
        return key

    def _step(self, credential: OperatorCredential, action: str, target: str, now: float) -> Operator:
        return self.authority.authorize(credential, action, target, now)  # audits its own allow or deny

    def _refused(self, who: str, action: str, exc: TrustFabricError, detail: dict[str, Any]) -> None:
        self._audit(who, action, False, exc.reason, dict(detail, error=str(exc.detail)[:300]))

    # ------------------------------------------------------------------ steps
    def author(self, directory: str | Path, credential: OperatorCredential, *, now: float, reason: str = "",
               version: int | None = None) -> Bundle:
        """A bundle of ``directory`` at ``version`` (default: the next one), signed by its author."""
        operator = self._step(credential, "policy.bundle", str(directory), now)
        detail: dict[str, Any] = {"why": reason}
        try:
            number = version if version is not None else self.versions.next_version()
            bundle = build(collect(directory), version=number, author=operator.name, now=now, reason=reason)
            bundle = sign(bundle, operator.name, AUTHOR, self._signing_key(operator.name, now), now, reason)
        except TrustFabricError as exc:
            self._refused(operator.name, "policy.bundle", exc, detail)
            raise
        self._audit(operator.name, "policy.bundle", True, "policy.bundle.created",
                    dict(detail, version=bundle.version, digest=bundle.digest, files=len(bundle.files)))
        return bundle

    def sign(self, bundle: Bundle, credential: OperatorCredential, *, now: float, reason: str = "") -> Bundle:
        """``bundle`` with the person's approver signature (TOTP fresh, not the author, not twice)."""
        detail: dict[str, Any] = {"version": bundle.version, "digest": bundle.digest, "why": reason}
        operator = self._step(credential, "policy.sign", activation_target(bundle), now)
        try:
            if operator.step_up_at != now:
                raise BundleError("a policy signature needs a TOTP code verified with it",
                                  reason="policy.bundle.step_up")
            signed = sign(bundle, operator.name, APPROVER, self._signing_key(operator.name, now), now, reason)
        except TrustFabricError as exc:
            self._refused(operator.name, "policy.sign", exc, detail)
            raise
        self._audit(operator.name, "policy.sign", True, "policy.bundle.signed",
                    dict(detail, approvers=list(signed.approvers())))
        return signed

    def _load(self, bundle: Bundle, directory: Path, engine: PolicyEngine | None) -> int | None:
        if engine is None:
            return None
        bundled = Topology.load(directory / "floor.toml") if (directory / "floor.toml").exists() else engine.topology
        if json.dumps(bundled.cedar_entities(), sort_keys=True) != \
                json.dumps(engine.topology.cedar_entities(), sort_keys=True):
            raise BundleError(f"version {bundle.version} names other services, people or resources than the "
                              "running floor (restart the floor to change them)", reason="policy.bundle.topology_mismatch")
        try:
            engine.load_dir(directory)  # bumps the global epoch and publishes it to every enforcement point
        except PolicyLoadError as exc:
            raise BundleError(f"version {bundle.version} refused by the engine: {exc.reason}",
                              reason="policy.bundle.tests_failed") from None
        return engine.global_epoch

    def _make_active(self, operator: Operator, bundle: Bundle, detail: dict[str, Any], *,
                     engine: PolicyEngine | None, now: float, reason: str,
                     kind: str) -> tuple[dict[str, Any], int | None]:
        """Admit ``bundle`` (a rollback may be older than the active one), load it, record it: (history entry,
        global epoch). ``detail`` gains the version active before."""
        detail["active_before"] = self.versions.active_version()
        directory = self.versions.admit(bundle, self.keys.all(), rollback=kind == "rollback")
        epoch = self._load(bundle, directory, engine)
        entry = self.versions.record(bundle, by=operator.name, reason=reason, now=now, kind=kind)
        return entry, epoch

    def activate(self, bundle: Bundle, credential: OperatorCredential, *, now: float, reason: str = "",
                 engine: PolicyEngine | None = None) -> Activated:
        operator = self._step(credential, "policy.activate", activation_target(bundle), now)
        return self.activate_as(operator, bundle, now=now, reason=reason, engine=engine)

    def activate_as(self, operator: Operator, bundle: Bundle, *, now: float, reason: str = "",
                    engine: PolicyEngine | None = None) -> Activated:
        """Activation for a person already authorized for ``policy.activate`` (a control plane's dispatch)."""
        detail: dict[str, Any] = {"version": bundle.version, "digest": bundle.digest, "why": reason,
                                  "active_before": None}
        try:
            entry, epoch = self._make_active(operator, bundle, detail, engine=engine, now=now, reason=reason,
                                             kind="activate")
        except TrustFabricError as exc:
            self._refused(operator.name, "policy.activate", exc, detail)
            raise
        self._audit(operator.name, "policy.activate", True, "policy.bundle.activated",
                    dict(detail, approvers=list(bundle.approvers()), author=bundle.manifest.author,
                         global_epoch=epoch, live=engine is not None))
        return Activated(entry, epoch)

    def rollback(self, version: int | None, credential: OperatorCredential, *, now: float, reason: str = "",
                 engine: PolicyEngine | None = None) -> Activated:
        """Back to ``version`` (default: the one active before the current) of the signed history."""
        operator = self._step(credential, "policy.rollback", rollback_target(version), now)
        return self.rollback_as(operator, version, now=now, reason=reason, engine=engine)

    def rollback_as(self, operator: Operator, version: int | None, *, now: float, reason: str = "",
                    engine: PolicyEngine | None = None) -> Activated:
        """Rollback for a person already authorized for ``policy.rollback`` (a control plane's dispatch)."""
        detail: dict[str, Any] = {"version": version, "why": reason}
        try:
            if version is None:
                history = self.versions.history()
                version = history[-1].get("previous") if history else None
                if not version:
                    raise BundleError("no earlier signed version to roll back to", reason="policy.bundle.not_in_history")
                detail["version"] = version
            bundle = self.versions.signed(int(version))
            if bundle is None:
                raise BundleError(f"version {version} is not in the signed history",
                                  reason="policy.bundle.not_in_history")
            entry, epoch = self._make_active(operator, bundle, detail, engine=engine, now=now, reason=reason,
                                             kind="rollback")
        except TrustFabricError as exc:
            self._refused(operator.name, "policy.rollback", exc, detail)
            raise
        self._audit(operator.name, "policy.rollback", True, "policy.bundle.rolled_back",
                    dict(detail, digest=bundle.digest, global_epoch=epoch, live=engine is not None))
        return Activated(entry, epoch)


def activation_target(bundle: Bundle) -> str:
    """The target an activation is authorized (and proven) for: the version and its digest."""
    return f"v{bundle.version}:{bundle.digest[:16]}"


def rollback_target(version: int | None) -> str:
    return f"v{version}" if version else "previous"
