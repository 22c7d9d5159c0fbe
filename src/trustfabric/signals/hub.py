"""The signal hub: every live signal of the floor in one place, feeding the policy context.

:class:`SignalHub` holds host posture (signed reports, checked by
:mod:`trustfabric.signals.posture`), quarantines, threat intelligence
(:mod:`~trustfabric.signals.threat_intel`) matched against what was observed of
each principal (certificate fingerprints, code digest, addresses, SPIFFE ID),
behavioural risk scores (:mod:`~trustfabric.signals.risk`), the market session
and kill switches (:mod:`~trustfabric.signals.market`), and people's MFA and
step-up times. :meth:`SignalHub.signals_for` gives one principal's
:class:`~trustfabric.policy.context.SignalValues` at ``now``.

Every accepted change emits ``signal.changed`` with the signal, the value and its
source, then tells listeners (the policy engine) exactly which principals it
affects (``None``: everyone), so that only those epochs move. A refused update
(bad posture signature, unparseable STIX bundle, risk score out of range...)
emits ``signal.refused``, raises a :class:`~trustfabric.errors.SignalError` and
keeps the last good state - except posture, where a bad report from a host's own
key makes that host's posture failing (a host must never look better for having
sent garbage).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from typing import Any

from trustfabric.audit.events import Emitter, Kind, MemorySink
from trustfabric.clock import SYSTEM_CLOCK, Clock
from trustfabric.errors import SignalError
from trustfabric.policy.context import NEVER_S, ChangeListener, SignalValues
from trustfabric.policy.decision import EPOCH, QUARANTINE, RELEASE
from trustfabric.policy.topology import PERSON, PrincipalRef, Topology
from trustfabric.signals.errors import UnknownPrincipalError
from trustfabric.signals.market import KillSwitchBoard, MarketCalendar
from trustfabric.signals.posture import (
    HostKeyRegistry,
    PostureVerdict,
    Requirements,
    SignedPostureReport,
    decode_signed,
    evaluate_posture,
    requirements_for_domain,
)
from trustfabric.signals.risk import MemoryRiskStore, RiskStore, check_score
from trustfabric.signals import threat_intel
from trustfabric.signals.threat_intel import EMPTY, IndicatorSet

SOURCE = "signal-hub"
STEP_UP_FRESH_S = 300.0  # matches guards.cedar


@dataclass
class _Observed:
    fingerprints: set[str] = field(default_factory=set)
    code_digests: set[str] = field(default_factory=set)
    addresses: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class _Auth:
    mfa: bool
    step_up_at: float | None
    device_host: str | None


class SignalHub:
    """Live signals of one trust domain; a :class:`~trustfabric.policy.context.SignalSource`."""

    def __init__(
        self,
        topology: Topology,
        *,
        clock: Clock = SYSTEM_CLOCK,
        emitter: Emitter | None = None,
        host_keys: HostKeyRegistry | None = None,
        posture_minimum: Requirements | None = None,
        risk_store: RiskStore | None = None,
        calendar: MarketCalendar | None = None,
    ) -> None:
        self.topology = topology
        self.clock = clock
        self.emitter = emitter if emitter is not None else Emitter(SOURCE, MemorySink(), clock)
        self.host_keys = host_keys if host_keys is not None else HostKeyRegistry()
        # what hosts must meet: given, else what the installation declares for the trust domain
        self.posture_minimum = (posture_minimum if posture_minimum is not None
                                else requirements_for_domain(topology.trust_domain))
        self.risk = risk_store if risk_store is not None else MemoryRiskStore()
        self.calendar = calendar if calendar is not None else MarketCalendar()
        self.kill = KillSwitchBoard(firm=topology.firm)
        self.intel: IndicatorSet = EMPTY
        self._lock = threading.RLock()
        self._listeners: list[ChangeListener] = []
        self._posture: dict[str, PostureVerdict] = {}
        self._quarantined: dict[str, str] = {}  # principal key -> reason
        self._observed: dict[str, _Observed] = {}
        self._auth: dict[str, _Auth] = {}
        self._market_open = self.calendar.is_open(clock.now())

    # ------------------------------------------------------------------ wiring
    def add_listener(self, listener: ChangeListener) -> None:
        with self._lock:
            self._listeners.append(listener)

    def _changed(self, principals: tuple[str, ...] | None, signal: str, value: Any, origin: str,
                 principal: str = "", reason: str | None = None, kind: str = EPOCH) -> None:
        self.emitter.emit(Kind.SIGNAL_CHANGED, principal=principal, reason=f"signal.{signal}",
                          detail={"signal": signal, "value": value, "source": origin,
                                  "affected": list(principals) if principals is not None else "*"})
        if principals is not None and not principals:
            return
        for listener in list(self._listeners):
            listener(principals, reason or f"signal.{signal}", origin, kind)

    def _refused(self, exc: SignalError, signal: str, origin: str, principal: str = "") -> None:
        self.emitter.emit(Kind.SIGNAL_REFUSED, principal=principal, reason=exc.reason,
                          errors=(exc.detail,), detail={"signal": signal, "source": origin})

    def _ref(self, principal: str) -> PrincipalRef:
        ref = self.topology.resolve(principal)
        if ref is None:
            raise UnknownPrincipalError(f"unknown principal {principal!r}")
        return ref

    def set_topology(self, topology: Topology) -> None:
        self.topology = topology

    # ------------------------------------------------------------------ posture
    def report_posture(self, signed: SignedPostureReport | bytes | None, origin: str = "posture-agent") -> PostureVerdict:
        """Check a signed report now; the host's posture becomes its verdict. Raises when failing."""
        now = self.clock.now()
        if isinstance(signed, (bytes, bytearray)):
            try:
                signed = decode_signed(bytes(signed))
            except SignalError as exc:
                self._refused(exc, "posture", origin)
                raise
        verdict = evaluate_posture(signed, self.host_keys, self.posture_minimum, now)
        host = verdict.host
        if not host and signed is not None:
            entry = self.host_keys.get(signed.key_id)
            host = entry[0] if entry else ""
        if host:
            with self._lock:
                previous = self._posture.get(host)
                self._posture[host] = verdict if verdict.host else PostureVerdict(False, host, verdict.reasons)
            affected = self.topology.principals_on_host(host) + tuple(
                u for u, a in self._auth.items() if a.device_host == host)
            # A renewed healthy report changes nothing a table depends on (tables already expire with
            # the old report's freshness), so only a change of verdict moves epochs.
            if previous is None or previous.ok != verdict.ok or previous.reasons != verdict.reasons:
                self._changed(affected, "posture", {"host": host, "ok": verdict.ok, "reasons": list(verdict.reasons)},
                              origin)
        if not verdict.ok:
            exc = SignalError(", ".join(verdict.reasons), reason=verdict.reasons[0])
            self._refused(exc, "posture", origin)
        return verdict

    def restore_posture(self, host: str, verdict: PostureVerdict) -> None:
        """Reinstate a verdict the hub reached earlier (from a saved snapshot); staleness still applies."""
        with self._lock:
            self._posture[host] = verdict

    def posture_of(self, host: str, now: float) -> tuple[bool, tuple[str, ...], float]:
        verdict = self._posture.get(host)
        if verdict is None:
            return False, ("posture.missing",), math.inf
        if not verdict.ok:
            return False, verdict.reasons, math.inf
        expires = verdict.issued_at + self.posture_minimum.max_age_s
        if now > expires:
            return False, ("posture.stale",), math.inf
        return True, (), expires

    # ------------------------------------------------------------------ quarantine
    def quarantine(self, principal: str, reason: str = "", origin: str = "operator") -> None:
        ref = self._ref(principal)
        with self._lock:
            self._quarantined[ref.key] = reason or "quarantined"
        # Enforcement points close a principal's sessions on a quarantine invalidation.
        self._changed((ref.key,), "quarantine", True, origin, ref.key, reason="quarantine.signal", kind=QUARANTINE)

    def release(self, principal: str, origin: str = "operator") -> None:
        ref = self._ref(principal)
        with self._lock:
            was = self._quarantined.pop(ref.key, None)
        if was is not None:
            self._changed((ref.key,), "quarantine", False, origin, ref.key, reason="release.signal", kind=RELEASE)

    def quarantined(self) -> dict[str, str]:
        return dict(self._quarantined)

    def observations(self) -> dict[str, dict[str, list[str]]]:
        """What was observed of each principal (for snapshots)."""
        with self._lock:
            return {k: {"fingerprints": sorted(o.fingerprints), "code_digests": sorted(o.code_digests),
                        "addresses": sorted(o.addresses)} for k, o in self._observed.items()}

    def authentications(self) -> dict[str, dict[str, Any]]:
        """People's recorded authentication state (for snapshots)."""
        with self._lock:
            return {k: {"mfa": a.mfa, "step_up_at": a.step_up_at, "device_host": a.device_host}
                    for k, a in self._auth.items()}

    def posture_verdicts(self) -> dict[str, PostureVerdict]:
        with self._lock:
            return dict(self._posture)

    # ------------------------------------------------------------------ threat intelligence
    def _matches(self, intel: IndicatorSet) -> dict[str, tuple[str, ...]]:
        out: dict[str, tuple[str, ...]] = {}
        for key in self.topology.principal_keys():
            hits = self._indicators_for(intel, key)
            if hits:
                out[key] = hits
        return out

    def _indicators_for(self, intel: IndicatorSet, key: str) -> tuple[str, ...]:
        hits = []
        ref = self.topology.resolve(key)
        if ref is not None and ref.kind != PERSON:
            hit = intel.match(threat_intel.SPIFFE_ID, ref.key)
            if hit:
                hits.append(hit)
        seen = self._observed.get(key)
        if seen is not None:
            for kind, values in ((threat_intel.FINGERPRINT, seen.fingerprints),
                                 (threat_intel.CODE_DIGEST, seen.code_digests),
                                 (threat_intel.ADDRESS, seen.addresses)):
                for value in values:
                    hit = intel.match(kind, value)
                    if hit:
                        hits.append(hit)
        return tuple(sorted(set(hits)))

    def load_threat_intel(self, bundle: str | bytes | dict, origin: str = "threat-feed") -> IndicatorSet:
        """Replace the indicator set; a bad bundle raises and the last good set stays."""
        try:
            intel = threat_intel.parse_bundle(bundle, self.clock.now())
        except SignalError as exc:
            self._refused(exc, "threat_intel", origin)
            raise
        with self._lock:
            before = self._matches(self.intel)
            self.intel = intel
            after = self._matches(intel)
        affected = tuple(k for k in set(before) | set(after) if before.get(k) != after.get(k))
        self._changed(affected, "threat_intel", {"bundle": intel.bundle_id, "indicators": intel.count}, origin)
        return intel

    def observe(self, principal: str, *, fingerprint: str | None = None, code_digest: str | None = None,
                address: str | None = None, origin: str = "enforcement") -> None:
        """Record what was seen of a principal (certificate, code, address); re-match indicators."""
        ref = self._ref(principal)
        with self._lock:
            before = self._indicators_for(self.intel, ref.key)
            seen = self._observed.setdefault(ref.key, _Observed())
            if fingerprint:
                seen.fingerprints.add(fingerprint.lower().replace(":", ""))
            if code_digest:
                seen.code_digests.add(code_digest.lower())
            if address:
                seen.addresses.add(address)
            after = self._indicators_for(self.intel, ref.key)
        if before != after:
            self._changed((ref.key,), "threat_intel", {"indicators": list(after)}, origin, ref.key)

    # ------------------------------------------------------------------ behavioural risk
    def set_risk_score(self, principal: str, score: object, origin: str = "analytics") -> int:
        try:
            ref = self._ref(principal)
            value = check_score(score)
            self.risk.set(ref.key, value, self.clock.now(), origin)
        except SignalError as exc:
            self._refused(exc, "risk", origin, str(principal))
            raise
        self._changed((ref.key,), "risk", value, origin, ref.key)
        return value

    # ------------------------------------------------------------------ market context
    def set_kill_switch(self, scope: str, name: str, state: str, origin: str = "pre-trade-risk") -> str:
        """Set a kill switch (scope agent/account/firm); returns the previous state.

        ``name`` is the agent (a service name, SPIFFE ID or ``user:<name>``), the
        account, or ignored for ``firm``.
        """
        affected: tuple[str, ...] | None
        try:
            if scope == "agent":
                ref = self._ref(name)
                name, affected = ref.name, (ref.key,)
            elif scope == "account":
                affected = self.topology.principals_in_account(name)
            else:
                affected = None
            with self._lock:
                previous = self.kill.set(scope, name, state)
        except SignalError as exc:
            self._refused(exc, "kill_switch", origin)
            raise
        if previous != state:
            self._changed(affected, "kill_switch", {"scope": scope, "name": name, "state": state}, origin)
        return previous

    def set_calendar(self, calendar: MarketCalendar, origin: str = "operator") -> None:
        self.calendar = calendar
        self.tick(origin=origin)

    def tick(self, now: float | None = None, origin: str = "calendar") -> bool:
        """Re-read the calendar; a session change moves the global epoch. Returns whether the market is open."""
        now = self.clock.now() if now is None else now
        is_open = self.calendar.is_open(now)
        if is_open != self._market_open:
            self._market_open = is_open
            self._changed(None, "market_session", "open" if is_open else "closed", origin)
        return is_open

    @property
    def market_open(self) -> bool:
        return self._market_open

    # ------------------------------------------------------------------ people
    def record_authentication(self, user: str, *, mfa: bool, step_up_at: float | None = None,
                              device_host: str | None = None, origin: str = "identity") -> None:
        """A person authenticated (with or without MFA), stepped up, or changed device."""
        ref = self._ref(user if user.startswith("user:") else f"user:{user}")
        with self._lock:
            self._auth[ref.key] = _Auth(bool(mfa), step_up_at, device_host)
        self._changed((ref.key,), "authentication", {"mfa": bool(mfa), "step_up_at": step_up_at,
                                                     "device_host": device_host}, origin, ref.key)

    # ------------------------------------------------------------------ the policy context
    def signals_for(self, principal: PrincipalRef, now: float) -> SignalValues:
        key = principal.key
        valid_until = math.inf
        mfa = False
        step_up_age = NEVER_S
        if principal.kind == PERSON:
            auth = self._auth.get(key)
            host = auth.device_host if auth else None
            if auth is not None:
                mfa = auth.mfa
                if auth.step_up_at is not None:
                    age = max(0.0, now - auth.step_up_at)
                    step_up_age = int(math.ceil(age))
                    if age <= STEP_UP_FRESH_S:
                        valid_until = auth.step_up_at + STEP_UP_FRESH_S
        else:
            host = principal.host
        if host:
            posture_ok, posture_reasons, posture_until = self.posture_of(host, now)
        else:
            posture_ok, posture_reasons, posture_until = False, ("posture.missing",), math.inf
        indicators = self._indicators_for(self.intel, key)
        return SignalValues(
            posture_ok=posture_ok,
            posture_reasons=posture_reasons,
            quarantined=key in self._quarantined,
            threat_match=bool(indicators),
            threat_indicators=indicators,
            risk_score=self.risk.get(key),
            kill_switch=self.kill.effective(principal.name, principal.account),
            firm_kill_switch=self.kill.firm_state(),
            market_open=self._market_open,
            mfa=mfa,
            step_up_age_s=step_up_age,
            valid_until=min(valid_until, posture_until),
        )

    def show(self) -> dict[str, Any]:
        """A plain snapshot for operators (``trustfabric signal show``)."""
        now = self.clock.now()
        return {
            "market_open": self._market_open,
            "kill_switches": {f"{s}:{n}": v for (s, n), v in self.kill.states.items()},
            "quarantined": dict(self._quarantined),
            "risk_scores": self.risk.all(),
            "threat_intel": {"bundle": self.intel.bundle_id, "indicators": self.intel.count},
            "posture": {h: {"ok": self.posture_of(h, now)[0], "reasons": list(self.posture_of(h, now)[1])}
                        for h in self._posture},
        }
