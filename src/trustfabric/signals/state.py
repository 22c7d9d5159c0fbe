"""Signals kept between command runs: a JSON snapshot under ``$TRUSTFABRIC_HOME/policy/signals.json``.

The embedded deployment's operators set signals with ``trustfabric signal ...``
and read decisions with ``trustfabric policy explain``; both rebuild a
:class:`~trustfabric.signals.hub.SignalHub` from this snapshot
(:func:`hub_from_state`) and write it back after a change (:func:`state_of`).
Posture is kept as the verdicts the hub reached on signed reports (never as a
bare "ok" typed by someone), with their issue time, so staleness still applies.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec

from trustfabric.audit.events import Emitter, MemorySink
from trustfabric.clock import SYSTEM_CLOCK, Clock
from trustfabric.errors import ConfigError
from trustfabric.policy.topology import Topology
from trustfabric.signals.hub import SignalHub
from trustfabric.signals.market import MarketCalendar
from trustfabric.signals.posture import PostureVerdict, Requirements


class SignalState(msgspec.Struct, kw_only=True):
    quarantined: dict[str, str] = {}
    risk_scores: dict[str, int] = {}
    kill_switches: list[tuple[str, str, str]] = []  # (scope, name, state)
    calendar: dict[str, Any] = msgspec.field(default_factory=lambda: {"always_open": True})
    threat_bundle: str = ""
    observed: dict[str, dict[str, list[str]]] = {}
    posture: dict[str, PostureVerdict] = {}
    auth: dict[str, dict[str, Any]] = {}  # user key -> {mfa, step_up_at, device_host}


def load_state(path: Path) -> SignalState:
    if not path.exists():
        return SignalState()
    try:
        return msgspec.json.decode(path.read_bytes(), type=SignalState)
    except (OSError, msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ConfigError(f"{path}: unreadable signal state: {exc}", reason="config.signal_state") from exc


def save_state(path: Path, state: SignalState) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(msgspec.json.format(msgspec.json.encode(state)))
    tmp.replace(path)


def hub_from_state(topology: Topology, state: SignalState, *, clock: Clock = SYSTEM_CLOCK,
                   emitter: Emitter | None = None, posture_minimum: Requirements | None = None) -> SignalHub:
    """A hub holding the snapshot's signals (replayed silently, before anyone listens); ``posture_minimum``
    the hosts' requirements (default: the trust domain's)."""
    hub = SignalHub(topology, clock=clock, emitter=Emitter("signal-hub", MemorySink(), clock),
                    calendar=MarketCalendar.from_dict(state.calendar), posture_minimum=posture_minimum)
    for principal, reason in state.quarantined.items():
        hub.quarantine(principal, reason=reason, origin="state")
    for principal, score in state.risk_scores.items():
        hub.set_risk_score(principal, score, origin="state")
    for scope, name, value in state.kill_switches:
        hub.set_kill_switch(scope, name, value, origin="state")
    if state.threat_bundle:
        hub.load_threat_intel(state.threat_bundle, origin="state")
    for principal, seen in state.observed.items():
        for fp in seen.get("fingerprints", ()):
            hub.observe(principal, fingerprint=fp, origin="state")
        for digest in seen.get("code_digests", ()):
            hub.observe(principal, code_digest=digest, origin="state")
        for address in seen.get("addresses", ()):
            hub.observe(principal, address=address, origin="state")
    for host, verdict in state.posture.items():
        hub.restore_posture(host, verdict)
    for user, auth in state.auth.items():
        hub.record_authentication(user, mfa=bool(auth.get("mfa")), step_up_at=auth.get("step_up_at"),
                                  device_host=auth.get("device_host"), origin="state")
    if emitter is not None:
        hub.emitter = emitter
    return hub


def state_of(hub: SignalHub, calendar: dict[str, Any], threat_bundle: str) -> SignalState:
    return SignalState(
        quarantined=hub.quarantined(),
        risk_scores=hub.risk.all(),
        kill_switches=[(s, n, v) for (s, n), v in hub.kill.states.items()],
        calendar=calendar,
        threat_bundle=threat_bundle,
        observed=hub.observations(),
        posture=hub.posture_verdicts(),
        auth=hub.authentications(),
    )
