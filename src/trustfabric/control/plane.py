"""The control plane's core: who may join, which tokens and tables a workload gets, what is pushed.

:class:`ControlPlane` owns the floor's :class:`~trustfabric.identity.plane.IdentityPlane`
(CAs, releases, revocations, token keys), the :class:`~trustfabric.policy.engine.PolicyEngine`
loaded from ``policies/`` with a live :class:`~trustfabric.signals.hub.SignalHub`, the
:class:`~trustfabric.response.engine.ResponseEngine` with its
:class:`~trustfabric.response.containment.Containment`, and one host posture agent per
host of the topology. It has no sockets (``server.py`` is its shell); every method
takes plain values, and time comes from the injected clock.

Lifetimes: workload certificates live ``leaf_ttl_s`` (``trustfabric up --cert-ttl``);
a posture report counts for ``posture_max_age_s`` (the trust domain's minimum by
default), at the CA and in the policy context alike. The plane's own certificate
has the same lifetime and is renewed at half of it (:meth:`rotate_own_certificate`,
called by the launcher's maintenance loop, which also has every host's agent
report again before the hub's verdicts go stale: :meth:`refresh_posture`). The
agents' sockets, through which workloads get fresh reports for their renewals, are
served by the launcher (:mod:`trustfabric.signals.agent_socket`).

* :meth:`join` - the bootstrap exchange: a one-time join token for exactly that
  SPIFFE ID, the code digest promoted *for that service* in its trust domain, a
  fresh signed posture report, a CSR -> an attested certificate (the attesting
  issuer refuses unpromoted digests and stale or unsigned posture).
* :meth:`token_for` - an access token bound to the caller's certificate, only for
  an audience service the caller's decision table lets it ``connect`` to (anything
  else is a deny, logged as a decision and fed to the response engine).
* :meth:`table_for` - a principal's decision table cut to the resources owned by
  the asking service (an enforcement point learns nothing about other segments).
* invalidations (policy bus) and revocations (identity plane) go to every
  subscriber through :meth:`subscribe`; the response engine sees the security
  events the services report (:meth:`observe`) and quarantines.
* :meth:`operate` - a person's state-changing action (:data:`OPERATOR_ACTIONS`, one
  line per action name): authenticated and authorized by the
  :class:`~trustfabric.identity.operators.OperatorAuthority`, applied to the live
  state, audited under the person's name, and answered with what the server must
  wait for before it reports success (:class:`Applied`).

One source of truth: the signal hub starts from the store (``policy/signals.json``:
quarantines, risk scores, kill switches, market calendar, threat bundle,
observations) and every change is written back while the plane runs (it is the only
writer then); the next control plane, or a command with no floor running, starts
from what this one left.
"""

from __future__ import annotations

import contextlib
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import msgspec
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from trustfabric.audit.events import AuditEventV1, Emitter, Kind, decode_event
from trustfabric.audit.spool import Spool
from trustfabric.clock import SYSTEM_CLOCK, Clock
from trustfabric.control.errors import NOT_LEADER, STATE_UNAVAILABLE, BootstrapRefused, ControlRefused
from trustfabric.control.joins import JoinTokens
from trustfabric.control.policy_lifecycle import SIGNING_KEY_DIR, PolicyLifecycle, activation_target, rollback_target
from trustfabric.control.signal_ops import SIGNAL_ACTIONS, SignalBook, apply_signal, signals_path
from trustfabric.errors import TrustFabricError
from trustfabric.identity.attestation import AttestationRequest, AttestingIssuer, validate_digest
from trustfabric.identity.certs import certs_to_pem, load_certificate
from trustfabric.identity.operators import ACTIONS, Operator, OperatorAuthority, OperatorCredential
from trustfabric.identity.plane import AUDIT_SOURCE, IdentityPlane
from trustfabric.identity.revocation import RevocationEntry
from trustfabric.identity.spiffe import SpiffeId
from trustfabric.identity.workload import issue_for_test
from trustfabric.data.keystore import KekStore
from trustfabric.data.lifecycle import KeyLifecycle, lifecycle_target, second_person
from trustfabric.data.local import KEYS_DIR, OBJECTS_DIR
from trustfabric.data.objects import ObjectStore
from trustfabric.identity.promotion import PolicyTestOutcome, PromotionGateway
from trustfabric.policy.decision import DecisionTable, Invalidation
from trustfabric.policy.bundle import PolicyVersions, SigningKeys
from trustfabric.policy.bundle import decode as decode_bundle
from trustfabric.policy.engine import PolicyEngine
from trustfabric.policy.paths import POLICIES_DIR
from trustfabric.policy.testcases import run_cases
from trustfabric.policy.topology import Topology
from trustfabric.subscriptions import add_subscriber
from trustfabric.response.adapters import RevocationSetRevoker, SignalHubPolicyControl, SignalHubRiskSink
from trustfabric.response.containment import Containment, OfficerFacts
from trustfabric.response.engine import ResponseEngine
from trustfabric.response.floor_map import FloorMap
from trustfabric.response.incidents import Incident, open_incident_store
from trustfabric.signals.host_agent import HostPostureAgent
from trustfabric.signals.posture import (
    DEFAULT_SECURITY_AGENTS, decode_signed, encode_signed, evaluate_posture, requirements_for_domain,
)
from trustfabric.signals.state import hub_from_state, load_state, save_state
from trustfabric.transport.tls import RotatingCredentials
from trustfabric.identity.users import PRIVILEGED_ROLES

SOURCE = "control-plane"
CONTROL_SEGMENT = "control"
CONTROL_NAME = "control-plane"
TOKEN_TTL_S = 300
PRINCIPAL_QUARANTINED = "control.principal_quarantined"
STATE_GRACE_S = 3.0  # how long after the last successful check the state counts as reachable
STATE_CHECK_S = 0.5  # how often the launcher checks it
RUNNER_META = "host_runner:"  # + topology host: its posture agent runs on the host itself (trustfabric host enrol)
INCIDENTS_FILE = "response.db"  # incidents and alerts under $TRUSTFABRIC_HOME, shared with `trustfabric response`
DEFAULT_POLICIES = POLICIES_DIR
# What services report to the response engine: refusals and denials at enforcement points.
SECURITY_KINDS = frozenset({Kind.SESSION_REFUSED, Kind.HANDSHAKE_REFUSED, Kind.TOKEN_REFUSED, Kind.CERT_REFUSED})

Listener = Callable[[Any], None]


# An order refused because a person halted (or set to reducing) its scope is the consequence of that
# person's decision, not evidence against the caller: it does not go to the response engine.
KILL_SWITCH_REASONS = frozenset({"risk.halted", "risk.reducing_only"})


# How the server confirms an operator's change before it answers ok.
CONFIRM_NONE = "none"  # the store is the change (a promotion): applied is enough
CONFIRM_PUSH = "push"  # pushed to every enforcement point: each must answer a barrier after it
CONFIRM_CONTAINED = "contained"  # a quarantine: every enforcement point confirms it refuses the principal
CONFIRM_COMMAND = "command"  # a service applies it (the kill switch at pre-trade-risk) and answers


@dataclass(frozen=True)
class Applied:
    """An operator's change, applied in the plane; what the server waits for before answering ok."""

    operator: str  # the person, as audited (user:<name>)
    confirm: str = CONFIRM_PUSH
    result: dict[str, str] = field(default_factory=dict)
    principal: str = ""  # CONFIRM_CONTAINED: who is contained
    command: tuple[str, str, dict[str, str]] | None = None  # CONFIRM_COMMAND: (service, name, args)
    jwks: bytes = b""  # a new token-key set to push before the barrier


class OperatorRiskFloor(SignalHubRiskSink):
    """The response engine's risk sink on the live hub, under the floor a person set.

    Automation (alert risk decaying, the behavioural baseline) republishes a principal's
    score on its own cadence; a score an operator set must not be silently lowered by it,
    so automation writes ``max(its score, the operator's)``. A person setting a new score
    (0 included) replaces the floor.
    """

    def __init__(self, hub: Any) -> None:
        super().__init__(hub)
        self._floors: dict[str, int] = {}

    def set_floor(self, principal: str, score: int) -> None:
        self._floors[principal] = int(score)

    def set_risk(self, principal: str, score: float, source: str) -> None:
        super().set_risk(principal, max(float(score), float(self._floors.get(principal, 0))), source)


def is_security_event(event: AuditEventV1) -> bool:
    if event.kind == Kind.DECISION and event.decision == "deny":
        return event.reason not in KILL_SWITCH_REASONS
    return event.kind in SECURITY_KINDS


class ControlPlane:
    """The floor's control plane (one per floor); thread-safe where its callers need it."""

    def __init__(self, home: Path | str, *, policies: Path | str = DEFAULT_POLICIES, clock: Clock = SYSTEM_CLOCK,
                 leaf_ttl_s: int = 3600, posture_max_age_s: float | None = None, instance: str = "",
                 writer: bool = True) -> None:
        self.home = Path(home)
        self.clock = clock
        self.leaf_ttl_s = int(leaf_ttl_s)
        self._added_actions: dict[str, OperatorAction] = {}
        # each control plane process writes its own spools (a standby's beside the plane it took over from:
        # two writers never share a source's sequence)
        self.source = f"{SOURCE}-{instance}" if instance else SOURCE
        self.identity = IdentityPlane(self.home, clock=clock,
                                      audit_source=f"{AUDIT_SOURCE}-{instance}" if instance else AUDIT_SOURCE)
        self.spool = Spool(self.home / "spool" / self.source, self.source, clock=clock)
        self._state_remote = bool(getattr(self.identity.store, "remote", False))
        self._save_lock = threading.Lock()
        self._posture_saved_at = float("-inf")  # when refresh_posture last wrote the signals (beside replicas)
        self._saved_epochs: tuple[int, dict[str, int]] | None = None  # what the last save of the signals held
        self.emitter = Emitter(self.source, self.spool, clock, start_seq=self.spool.emitter_start_seq())
        policies = Path(policies)
        # A signed policy version activated in the store is what the floor serves (re-verified here: an
        # altered store refuses to start rather than serve unsigned policy).
        self.policy_versions = PolicyVersions(self.home / "policy")
        active = self.policy_versions.active_bundle(SigningKeys(self.identity.store).all())
        if active is not None:
            policies = active[1]
        manifest = Topology.path_for(policies)
        self.topology = Topology.load(manifest)
        self.trust_domain = self.topology.trust_domain
        self.identity.init(self.topology.firm)
        minimum = requirements_for_domain(self.trust_domain, manifest)  # the hosts' declared requirements
        if posture_max_age_s is not None:
            minimum = minimum.with_max_age(posture_max_age_s)
        self.posture_minimum = minimum
        self.signals_path = signals_path(self.home)
        state = load_state(self.signals_path)  # the store's signals; default: the market always open
        self.signals = SignalBook(hub_from_state(self.topology, state, clock=clock, emitter=self.emitter,
                                                 posture_minimum=minimum),
                                  calendar=dict(state.calendar), threat_bundle=state.threat_bundle)
        self.hub = self.signals.hub
        self.engine = PolicyEngine.from_dir(policies, topology=self.topology, signals=self.hub, clock=clock)
        self.signals.epochs = self.engine.epochs  # saved beside the signals: replicas and the next plane adopt them
        if state.epochs != (0, {}):  # continue the epochs the enforcement points already know
            self.engine.adopt_epochs(state.epochs[0], dict(state.epochs[1]))
        # Beside other control planes (replicas): only the lease holder writes the signal state and runs the
        # hosts' posture agents; a follower (writer False; control/replica.py) reads the state before it answers
        # and hands the security events it sees to the holder.
        self.writer = writer
        self.follower: Any = None
        self.relay_events: Callable[[list[AuditEventV1]], None] | None = None
        self.agents: dict[str, HostPostureAgent] = {}
        if writer:
            self._start_agents()
        self.joins = JoinTokens(self.identity.store)  # in the store: any replica redeems them
        self.host_keys = self.identity.host_keys()  # every enrolled host's key (refresh_host_keys re-reads them)
        self.issuer = AttestingIssuer(self.identity.cas(), self.identity.releases, self.host_keys, self.identity.emitter,
                                      minimums={self.trust_domain: minimum}, record=self.identity.record_certificate)
        self.tokens = self.identity.token_issuer()
        self.control_id = f"spiffe://{self.trust_domain}/{CONTROL_SEGMENT}/{CONTROL_NAME}"
        self.credential_source = RotatingCredentials(
            issue_for_test(self.identity.ca(self.trust_domain), self.control_id, clock.now(), self.leaf_ttl_s))
        self.risk_sink = OperatorRiskFloor(self.hub)
        self.incidents_store = open_incident_store(self.home / INCIDENTS_FILE)  # what `response incidents` reads
        self.containment = Containment(RevocationSetRevoker(self.identity.revocations, clock),
                                       SignalHubPolicyControl(self.hub, self.engine),
                                       risk=self.risk_sink, emitter=self.emitter, clock=clock,
                                       store=self.incidents_store)
        if writer:
            self.containment.restore_open_incidents()  # quarantined before this plane started stay quarantined
        self.response = ResponseEngine(FloorMap.from_topology(self.topology), self.containment,
                                       risk=self.risk_sink, emitter=self.emitter, clock=clock)
        self._listeners: list[Listener] = []
        self._lock = threading.RLock()
        self.operators = OperatorAuthority.for_plane(self.identity, self.engine, emitter=self.emitter)
        self.policy_lifecycle = PolicyLifecycle(self.policy_versions, SigningKeys(self.identity.store), self.operators,
                                                self.emitter, self.home / "operator" / SIGNING_KEY_DIR)
        self.event_listeners: list[Callable[[AuditEventV1], None]] = []  # measurement: every reported event
        self._contain_acks: dict[str, set[str]] = {}  # principal -> points that confirmed its quarantine
        self._contain_first: dict[str, float] = {}  # principal -> when the first point confirmed it
        self.hub.add_listener(self._signals_changed)  # after the engine's: epochs move first
        self.save_signals()
        self.engine.bus.subscribe(self._publish)
        self.identity.revocations.subscribe(self._publish)
        self.counters = {"joins": 0, "join_refusals": 0, "tokens": 0, "token_refusals": 0, "tables": 0,
                         "table_refusals": 0, "renewals": 0, "renewal_refusals": 0, "security_events": 0,
                         "own_rotations": 0, "expired_cert_uses": 0, "state_refusals": 0}
        self.alerts: list[Any] = []
        self._recorded_tables: dict[str, DecisionTable] = {}
        # beyond one machine the identity store is the state of record every replica shares: when it cannot be
        # reached (check_state, run by the launcher), nothing new is issued (fail closed); points keep their tables
        self._state_ok_at = clock.monotonic()
        self.state_error = ""

    # ------------------------------------------------------------------ the state of record
    @property
    def state_available(self) -> bool:
        """False when the identity store is remote (PostgreSQL) and no check has reached it for
        ``STATE_GRACE_S``: joins, renewals, tokens and tables are refused until one does."""
        return not self._state_remote or self.clock.monotonic() - self._state_ok_at <= STATE_GRACE_S

    def check_state(self) -> bool:
        """Reach the state of record once (blocking: run it off the event loop); True when reached."""
        try:
            self.identity.store.ping()
        except TrustFabricError as exc:
            self.state_error = exc.reason
            return False
        self._state_ok_at = self.clock.monotonic()
        self.state_error = ""
        return True

    def _require_state(self, counter: str | None) -> None:
        if not self.state_available:
            if counter is not None:
                self.counters[counter] += 1
            self.counters["state_refusals"] += 1
            raise ControlRefused(f"the state of record is unreachable ({self.state_error or 'no answer'}): "
                                 "nothing is issued until it is back", reason=STATE_UNAVAILABLE, retryable=True)

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        self.spool.close()
        self.identity.close()
        self.incidents_store.close()

    @property
    def credentials(self) -> Any:
        """The plane's current certificate and key (:meth:`rotate_own_certificate` replaces them)."""
        return self.credential_source.current()

    def rotate_own_certificate(self, now: float | None = None) -> bool:
        """A new certificate for the plane once half of the current one's lifetime has passed."""
        now = self.clock.now() if now is None else now
        current = self.credentials
        if now < current.not_before + (current.not_after - current.not_before) / 2:
            return False
        fresh = issue_for_test(self.identity.ca(self.trust_domain), self.control_id, now, self.leaf_ttl_s)
        self.credential_source.replace(fresh)
        self.counters["own_rotations"] += 1
        return True

    def runner_hosts(self) -> set[str]:
        """The topology hosts whose posture agent runs on the host itself, under a runner (``host enrol``)."""
        return {host for host in {s.host for s in self.topology.services.values()}
                if self.identity.store.get_meta(RUNNER_META + host)}

    def drop_runner_agents(self) -> None:
        """Stop reporting for hosts enrolled for their own runner: their agent's key is the enrolled one."""
        for host in self.runner_hosts():
            self.agents.pop(host, None)

    def _start_agents(self) -> None:
        """One posture agent per host of the topology, its key registered (the lease holder's duty); a host
        enrolled for its own runner reports from there (:meth:`hub_posture`)."""
        runners = self.runner_hosts()
        for host in sorted({svc.host for svc in self.topology.services.values()} - runners):
            agent = HostPostureAgent(host, watch=DEFAULT_SECURITY_AGENTS
                                     + self.posture_minimum.for_host(host).security_agents)
            agent.register(self.hub.host_keys)
            self.identity.register_host(host, agent.public_key)
            self.agents[host] = agent
        self.refresh_posture()

    def lead(self) -> None:
        """A follower that took the lease: from now on this plane writes the signal state, contains, and runs
        the posture agents (it already holds the state: it caught up before every answer)."""
        if self.follower is not None:
            with contextlib.suppress(TrustFabricError):
                self.follower.catch_up()  # the last changes of the plane that is gone
        self.follower = None
        self.writer = True
        self.containment.restore_open_incidents()
        self._start_agents()
        self.save_signals()

    def refresh_host_keys(self) -> None:
        """Re-read the hosts' posture keys from the store (a host enrolled or re-keyed since): the attesting
        issuer and the signal hub check reports against exactly these."""
        fresh = self.identity.host_keys()
        self.host_keys.assign(fresh)
        self.hub.host_keys.assign(fresh)

    def hub_posture(self, raw: bytes) -> str:
        """A fresh signed report from a host whose agent runs on the host itself (a per-host runner's,
        :class:`~trustfabric.control.protocol.PostureSubmit`): checked against the enrolled key and the posture
        window before the hub takes it, so a stale or forged report changes nothing. Returns the host."""
        if self.follower is not None:
            raise ControlRefused("posture goes to the lease holder", reason=NOT_LEADER, retryable=True)
        try:
            signed = decode_signed(raw)
        except TrustFabricError as exc:
            raise ControlRefused(f"unreadable posture report: {exc.detail[:200]}", reason=exc.reason) from None
        verdict = evaluate_posture(signed, self.hub.host_keys, self.posture_minimum, self.clock.now())
        if not verdict.ok:
            raise ControlRefused(f"posture report refused: {', '.join(verdict.reasons)}", reason=verdict.reasons[0])
        self.hub.report_posture(signed, origin=f"host:{verdict.host}")
        return verdict.host

    def refresh_posture(self) -> None:
        """Every host's agent reports again (the hub's verdicts go stale after the posture max age)."""
        now = self.clock.now()
        for host, agent in self.agents.items():
            self.hub.report_posture(agent.report(now), origin=f"agent:{host}")
        # A renewed healthy report moves no epoch, but the replicas need it before the one they hold goes stale:
        # written every quarter of the posture window (not every pass, which would have every replica re-read the
        # whole signal state every few seconds).
        if self._state_remote and now - self._posture_saved_at >= self.posture_minimum.max_age_s / 4:
            self._posture_saved_at = now
            self.save_signals()

    def posture_report(self, service: str) -> bytes:
        """A fresh signed posture report of ``service``'s host, for the process the launcher starts there."""
        host = self.topology.services[service].host
        return encode_signed(self.agents[host].report(self.clock.now()))

    # ------------------------------------------------------------------ launcher duties
    def promote(self, service: str, digest: str) -> None:
        """The release pipeline's step: ``digest`` is the promoted build of ``service`` in this trust domain."""
        self.identity.releases.promote(self.trust_domain, digest, self.clock.now(), name=service)
        self.emitter.emit(Kind.ADMIN_ACTION, principal="launcher", action="release.promote", resource=service,
                          decision="allow", detail={"digest": digest})

    def issue_join_token(self, service: str) -> str:
        return self.joins.issue(self.topology.spiffe_id(service), self.clock.now())

    def spiffe_id(self, service: str) -> str:
        return self.topology.spiffe_id(service)

    # ------------------------------------------------------------------ operators (people)
    def authenticate_operator(self, user: str, password: str, totp: str, action: str) -> tuple[str, bool, float]:
        """A person's login for a kill-switch action: password + TOTP, then a fresh step-up check.

        Returns ``(principal, privileged, mfa_at)``; raises the identity plane's
        :class:`~trustfabric.identity.errors.UserError` (``user.bad_credentials``,
        ``user.bad_totp``, ``user.totp_replay``, ``user.locked``, ``user.step_up_required``).
        Privileged = a risk or security officer (``PRIVILEGED_ROLES``).
        """

        with self._lock:
            now = self.clock.now()
            users = self.identity.users()
            auth = users.login(user, password, totp, now)
            users.require_step_up(user, f"killswitch.{action}", now)
            privileged = auth.role in PRIVILEGED_ROLES
            self.emitter.emit(Kind.ADMIN_ACTION, principal=f"user:{user}", action=f"killswitch.{action}.login",
                              decision="allow" if privileged else "deny",
                              reason="" if privileged else "killswitch.not_privileged", detail={"role": auth.role})
            return f"user:{user}", privileged, auth.auth_time

    def operate(self, credential: OperatorCredential, action: str, target: str, args: dict[str, str],
                now: float | None = None) -> Applied:
        """A person's state-changing action on the live floor: :meth:`authorize_operator`, then
        :meth:`apply_operator`. Refusals raise (nothing changed)."""
        operator = self.authorize_operator(credential, action, target, now)
        return self.apply_operator(operator, action, target, args, now)

    def authorize_operator(self, credential: OperatorCredential, action: str, target: str,
                           now: float | None = None) -> Operator:
        """Who asks, proven now and allowed ``action``: an action this plane does not apply is refused
        (``operator.unknown_action``), then the person's login, step-up and role (``user.*``,
        ``operator.*``). Audited either way. Safe off the event loop (the identity store locks): the
        server runs this costly part (an argon2id verification) in a worker thread."""
        now = self.clock.now() if now is None else now
        if action not in OPERATOR_ACTIONS and action not in self._added_actions:
            self.emitter.emit(Kind.ADMIN_ACTION, principal=f"user:{credential.user.removeprefix('user:')}",
                              action=f"operator.{action}"[:80], resource=target[:200], decision="deny",
                              reason="operator.unknown_action")
            raise ControlRefused(f"the control plane applies no action {action!r}", reason="operator.unknown_action")
        return self.operators.authorize(credential, action, target, now)

    def apply_operator(self, operator: Operator, action: str, target: str, args: dict[str, str],
                       now: float | None = None) -> Applied:
        """Apply an authorized person's action to the live state (the action's own checks may still
        refuse), audit it under the person's name and write the signal store; returns what the server
        must wait for. On the thread that serves the floor (pushes leave from here)."""
        now = self.clock.now() if now is None else now
        detail = {k: v[:200] for k, v in args.items()  # never a secret or a whole document in the log
                  if k not in ("bundle", "csr_pem", "envelope", "build_cert") and "password" not in k
                  and "totp" not in k}
        try:
            handler = OPERATOR_ACTIONS.get(action) or self._added_actions[action]
            applied = handler(self, operator, action, target, dict(args), now)
        except TrustFabricError as exc:
            self.emitter.emit(Kind.ADMIN_ACTION, principal=operator.principal, action=action, resource=target[:200],
                              decision="deny", reason=exc.reason, detail=detail)
            raise
        self.emitter.emit(Kind.ADMIN_ACTION, principal=operator.principal, action=action, resource=target[:200],
                          decision="allow", detail={**detail, **{k: v[:200] for k, v in applied.result.items()
                                                                 if k not in ("cert_pem", "bundle_pem")}})
        self.save_signals()
        return applied

    def add_operator_action(self, action: str, handler: "OperatorAction") -> None:
        """An operator action applied by a part above the control plane (the floor's FIX edge): the plane
        authenticates, authorizes and audits the person as for its own actions, then calls ``handler``."""
        if action not in ACTIONS:
            raise ControlRefused(f"no operator action {action!r}", reason="operator.unknown_action")
        self._added_actions[action] = handler

    # one method per operator action: (operator, action, target, args, now) -> Applied
    def _resolve(self, target: str) -> str:
        """A principal key: a topology name (service, SPIFFE ID, user:<name>) or any valid SPIFFE ID."""
        ref = self.topology.resolve(target)
        if ref is not None:
            return ref.key
        try:
            return str(SpiffeId.parse(target))
        except TrustFabricError:
            raise ControlRefused(f"unknown principal {target!r}", reason="control.unknown_principal") from None

    def quarantine_by(self, operator: Operator, action: str, target: str, args: dict[str, str], now: float
                      ) -> Applied:
        """Containment on the person's order: certificates and tokens revoked, quarantine flag, epochs pushed."""
        principal = self._resolve(target)
        with self._lock:
            if not self.containment.is_quarantined(principal):
                self._contain_acks.pop(principal, None)  # a fresh quarantine: every point confirms again
                self._contain_first.pop(principal, None)
        self.response.quarantine_manually(principal, operator.principal, args.get("reason", "")[:200])
        incident = self.containment.open_incident(principal)
        return Applied(operator.principal, CONFIRM_CONTAINED,
                       {"incident": incident.incident_id if incident else "", "principal": principal},
                       principal=principal)

    def release_by(self, operator: Operator, action: str, target: str, args: dict[str, str], now: float) -> Applied:
        """The release path with the person's facts (the response engine checks role and step-up age)."""
        principal = self._resolve(target)
        facts = OfficerFacts(name=operator.name, roles=(operator.role,),
                             step_up_at=operator.step_up_at or operator.auth_time)
        incident = self.release(principal, facts, now)
        return Applied(operator.principal, CONFIRM_PUSH, {"incident": incident.incident_id, "principal": principal})

    def signal_by(self, operator: Operator, action: str, target: str, args: dict[str, str], now: float) -> Applied:
        """A ``signal.*`` action on the live hub (epochs bumped and pushed by the engine's listener).

        A risk score a person sets is a floor the response engine's own (decaying) scores do
        not go below until a person sets another one.
        """
        result = apply_signal(self.signals, action, target, args, origin=operator.principal)
        if action == "signal.risk":
            self.risk_sink.set_floor(self._resolve(target), int(result["score"]))
        return Applied(operator.principal, CONFIRM_PUSH, result)

    def kill_switch_by(self, operator: Operator, action: str, target: str, args: dict[str, str], now: float
                       ) -> Applied:
        """``killswitch.*``: pre-trade-risk applies it (four-eyes resume there) and answers."""
        command = {"action": action.removeprefix("killswitch."), "scope": args.get("scope", ""),
                   "target": target if args.get("scope") != "firm" else "", "operator": operator.principal,
                   "privileged": "1", "mfa_at": repr(operator.step_up_at or operator.auth_time)}
        return Applied(operator.principal, CONFIRM_COMMAND, command=("pre-trade-risk", "killswitch", command))

    def revoke_by(self, operator: Operator, action: str, target: str, args: dict[str, str], now: float) -> Applied:
        """``ca.revoke``: a serial, or every certificate of a SPIFFE ID, in the live revocation set (pushed)."""
        reason = args.get("reason") or "revoked by operator"
        if target.startswith("spiffe:"):
            sid = SpiffeId.parse(target)
            entry = self.identity.revocations.revoke_spiffe_id(sid, now, reason)
            resource, domain = str(sid), sid.trust_domain
        else:
            try:
                serial = int(target, 16) if target.lower().startswith("0x") else int(target, 10)
            except ValueError:
                raise ControlRefused(f"{target!r} is neither a SPIFFE ID nor a serial",
                                     reason="revocation.bad_target") from None
            entry = self.identity.revocations.revoke_serial(serial, now, reason)
            resource, domain = str(serial), ""
        self.emitter.emit(Kind.CERT_REVOKED, principal=operator.principal, resource=resource, trust_domain=domain,
                          decision="deny", reason="cert.revoked",
                          detail={"kind": entry.kind, "version": entry.version, "why": reason[:200]})
        return Applied(operator.principal, CONFIRM_PUSH, {"kind": entry.kind, "value": str(entry.value),
                                                          "version": str(entry.version)})

    def promote_by(self, operator: Operator, action: str, target: str, args: dict[str, str], now: float) -> Applied:
        """``ca.promote``: the digest becomes a release of the domain (attestation reads the store)."""
        domain = args.get("domain", "")
        self.identity.ca(domain)
        row = self.identity.releases.promote(domain, validate_digest(target), now, args.get("name", ""))
        self.emitter.emit(Kind.RELEASE, principal=operator.principal, action="release.promote", resource=row.digest,
                          trust_domain=domain, decision="allow", detail={"name": args.get("name", "")[:200]})
        return Applied(operator.principal, CONFIRM_NONE, {"digest": row.digest, "domain": domain})

    def register_host_by(self, operator: Operator, action: str, target: str, args: dict[str, str], now: float
                         ) -> Applied:
        """``ca.register_host``: a host's posture-agent key; attestation and the hub check its reports from now on."""
        try:
            key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(args.get("public_key", "")))
        except ValueError:
            raise ControlRefused("not a raw Ed25519 public key", reason="posture.bad_key") from None
        if not target or len(target) > 200:
            raise ControlRefused("a host name is required", reason="control.bad_request")
        self.identity.register_host(target, key)
        self.refresh_host_keys()
        self.emitter.emit(Kind.ADMIN_ACTION, principal=operator.principal, action="ca.register_host", resource=target,
                          decision="allow", detail={"public_key": args.get("public_key", "")[:64]})
        return Applied(operator.principal, CONFIRM_NONE, {"host": target})

    def data_key_change_by(self, operator: Operator, action: str, target: str, args: dict[str, str], now: float
                           ) -> Applied:
        """``data.rotate`` / ``data.shred`` of ``<environment>/<segment>``: the second person of the four eyes
        is authorized here too (another person, Cedar, a fresh TOTP); the key files change under the floor's
        services, whose key stores notice at their next unwrap (a shredded KEK opens nothing from then on)."""
        environment, _, segment = target.partition("/")
        lifecycle_target(segment, environment)  # valid names, or a typed refusal
        second = OperatorCredential(user=args.get("second_user", ""), password=args.get("second_password", ""),
                                    totp=args.get("second_totp", ""))
        other = second_person(self.operators, operator, second, action, target, now)
        lifecycle = KeyLifecycle(KekStore(self.home / KEYS_DIR), ObjectStore(self.home / OBJECTS_DIR), self.emitter)
        if action == "data.rotate":
            done = lifecycle.rotate(segment, environment, operator, other, now)
            result = {"previous": str(done.previous), "current": str(done.current),
                      "rewrapped": str(done.rewrapped), "second": other.principal}
        else:
            versions = lifecycle.shred(segment, environment, operator, other, now)
            result = {"versions": ",".join(map(str, versions)), "second": other.principal}
        return Applied(operator.principal, CONFIRM_NONE, result)

    def _gateway(self) -> PromotionGateway:
        def policy_tests() -> PolicyTestOutcome:
            report = run_cases(POLICIES_DIR)
            return PolicyTestOutcome(report.passed, report.failed, report.summary())

        return PromotionGateway(self.identity.store, self.identity.cas(), self.emitter, self.identity.firm,
                                policy_tests)

    def release_step_by(self, operator: Operator, action: str, target: str, args: dict[str, str], now: float
                        ) -> Applied:
        """``release.submit | approve | promote`` through the promotion gateway, in the store this plane's
        attestation reads: a promoted digest attests at the next join or renewal, no restart."""
        gateway = self._gateway()
        if action == "release.submit":
            try:
                envelope = json.loads(args.get("envelope") or "{}")
            except ValueError:
                raise ControlRefused("the provenance is not JSON", reason="release.provenance_malformed") from None
            cert = args.get("build_cert", "").encode() or None
            candidate = gateway.submit(operator, validate_digest(target), envelope, cert, args.get("name", ""), now)
            return Applied(operator.principal, CONFIRM_NONE, {"digest": candidate.digest, "author": candidate.author,
                                                              "builder": candidate.builder})
        digest, _, environment = target.partition("@")
        if action == "release.approve":
            candidate = gateway.approve(operator, validate_digest(digest), environment, now)
            return Applied(operator.principal, CONFIRM_NONE, {"approvers": ", ".join(candidate.approvers(environment))})
        row = gateway.promote(operator, validate_digest(digest), environment, now)
        return Applied(operator.principal, CONFIRM_NONE, {"trust_domain": row.trust_domain})

    def policy_activate_by(self, operator: Operator, action: str, target: str, args: dict[str, str], now: float
                           ) -> Applied:
        """``policy.activate``: a signed bundle checked, tested and loaded; the global epoch is pushed to every
        enforcement point. The person's proof covers the target (version and digest): another bundle is refused."""
        bundle = decode_bundle(args.get("bundle", "").encode())
        if activation_target(bundle) != target:
            raise ControlRefused(f"the request names {target!r}, the bundle is {activation_target(bundle)!r}",
                                 reason="policy.bundle.target_mismatch")
        done = self.policy_lifecycle.activate_as(operator, bundle, now=now, reason=args.get("reason", "")[:500],
                                                 engine=self.engine)
        return Applied(operator.principal, CONFIRM_PUSH, {"version": str(bundle.version), "digest": bundle.digest,
                                                          "global_epoch": str(done.global_epoch)})

    def policy_rollback_by(self, operator: Operator, action: str, target: str, args: dict[str, str], now: float
                           ) -> Applied:
        """``policy.rollback``: back to a version of the signed history, loaded and pushed like an activation."""
        raw = args.get("version", "")
        try:
            version = int(raw) if raw else None
        except ValueError:
            raise ControlRefused(f"version {raw!r} is not a number", reason="control.bad_request") from None
        if rollback_target(version) != target:
            raise ControlRefused("the request's target is not its version", reason="policy.bundle.target_mismatch")
        done = self.policy_lifecycle.rollback_as(operator, version, now=now, reason=args.get("reason", "")[:500],
                                                 engine=self.engine)
        return Applied(operator.principal, CONFIRM_PUSH, {"version": str(done.entry["version"]),
                                                          "digest": done.entry["digest"],
                                                          "global_epoch": str(done.global_epoch)})

    def issue_unattested_by(self, operator: Operator, action: str, target: str, args: dict[str, str], now: float
                            ) -> Applied:
        """``ca.issue_unattested``: the logged bypass, for the CSR the person's machine made (key stays there)."""
        try:
            csr = x509.load_pem_x509_csr(args.get("csr_pem", "").encode())
            ttl = int(args.get("ttl", "3600"))
        except ValueError as exc:
            raise ControlRefused(f"unreadable CSR or ttl: {exc}", reason="control.bad_request") from None
        sid = SpiffeId.parse(target)
        cert = self.issuer.issue_unattested(csr, sid, now, ttl, operator=operator.principal)
        ca = self.identity.ca(sid.trust_domain)
        return Applied(operator.principal, CONFIRM_NONE, {
            "cert_pem": (certs_to_pem([cert]) + ca.chain_pem()).decode(), "bundle_pem": ca.bundle_pem(now).decode()})

    def rotate_token_key_by(self, operator: Operator, action: str, target: str, args: dict[str, str], now: float
                            ) -> Applied:
        """``token.rotate_key``: a new signing key; the new key set is pushed before anything is signed with it."""
        with self._lock:
            key = self.identity.rotate_token_key(operator.principal)  # audited; the old key keeps its window
        return Applied(operator.principal, CONFIRM_PUSH, {"kid": key.kid}, jwks=self.jwks())

    def revoke_token_key_by(self, operator: Operator, action: str, target: str, args: dict[str, str], now: float
                            ) -> Applied:
        """``token.revoke_key``: a retired signing key removed now; the revocation and the new key set are pushed."""
        entry = self.revoke_token_key(target, operator.principal)
        return Applied(operator.principal, CONFIRM_PUSH, {"version": str(entry.version)}, jwks=self.jwks())

    # ------------------------------------------------------------------ bootstrap
    def _service_of(self, spiffe_id: str) -> str:
        try:
            sid = SpiffeId.parse(spiffe_id)
        except TrustFabricError as exc:
            raise BootstrapRefused(exc.detail, reason="bootstrap.bad_request") from None
        name = spiffe_id.rsplit("/", 1)[-1]
        if name not in self.topology.services or self.topology.spiffe_id(name) != str(sid):
            raise BootstrapRefused(f"{spiffe_id} is no service of the floor", reason="bootstrap.identity_mismatch")
        return name

    def join(self, join_token: str, spiffe_id: str, csr_pem: bytes, code_digest: str, posture: bytes
             ) -> tuple[bytes, bytes]:
        """Redeem a join token and attest; returns (certificate chain PEM, trust bundle PEM)."""
        now = self.clock.now()
        self._require_state("join_refusals")
        try:
            service = self._service_of(spiffe_id)
            self.joins.redeem(join_token, spiffe_id, now)
            digest = str(code_digest).lower()
            if digest not in {r.digest for r in self.identity.releases.list(self.trust_domain) if r.name == service}:
                # promoted for another service (or not at all): not this workload's release
                if self.identity.releases.is_promoted(self.trust_domain, digest):
                    raise BootstrapRefused(f"digest {digest[:16]} is a release of another service",
                                           reason="bootstrap.release_of_another_service")
            try:
                csr = x509.load_pem_x509_csr(csr_pem)
                signed = decode_signed(posture) if posture else None
            except (ValueError, TrustFabricError) as exc:
                raise BootstrapRefused(f"unreadable CSR or posture: {exc}", reason="bootstrap.bad_request") from None
            cert = self.issuer.issue(AttestationRequest(SpiffeId.parse(spiffe_id), csr, digest, signed,
                                                        self.leaf_ttl_s), now)
        except TrustFabricError as exc:
            self.counters["join_refusals"] += 1
            event = self.emitter.emit(Kind.CERT_REFUSED, principal=str(spiffe_id)[:200], action="bootstrap.join",
                                      decision="deny", reason=exc.reason, detail={"message": exc.detail[:200]})
            self.observe([event])
            raise
        self.counters["joins"] += 1
        ca = self.identity.ca(self.trust_domain)
        return certs_to_pem([cert]) + ca.chain_pem(), ca.bundle_pem(now)

    def renew(self, caller: str, csr_pem: bytes, posture: bytes) -> tuple[bytes, bytes]:
        """A new certificate for an already attested caller (rotation), posture checked again."""
        now = self.clock.now()
        self._require_state("renewal_refusals")
        try:
            service = self._service_of(caller)
            digests = [r.digest for r in self.identity.releases.list(self.trust_domain) if r.name == service]
            if not digests:
                raise BootstrapRefused(f"no release of {service}", reason="attest.unpromoted_digest")
            try:
                csr = x509.load_pem_x509_csr(csr_pem)
                signed = decode_signed(posture) if posture else None
            except (ValueError, TrustFabricError) as exc:
                raise BootstrapRefused(f"unreadable CSR or posture: {exc}", reason="bootstrap.bad_request") from None
            cert = self.issuer.issue(AttestationRequest(SpiffeId.parse(caller), csr, digests[-1], signed,
                                                        self.leaf_ttl_s), now)
        except TrustFabricError:
            self.counters["renewal_refusals"] += 1
            raise
        self.counters["renewals"] += 1
        ca = self.identity.ca(self.trust_domain)
        return certs_to_pem([cert]) + ca.chain_pem(), ca.bundle_pem(now)

    def sibling_bundle_pem(self) -> bytes:
        """The CA bundles of the firm's other trust domains (dev, test): what lets their certificates through
        the TLS layer only to be refused by name at the identity step (cert.wrong_trust_domain, alerted)."""
        now = self.clock.now()
        return b"".join(ca.bundle_pem(now) for domain, ca in sorted(self.identity.cas().items())
                        if domain != self.trust_domain)

    def jwks(self) -> bytes:
        return json.dumps(self.identity.keys.jwks()).encode()

    def revoke_token_key(self, kid: str, operator_principal: str) -> RevocationEntry:
        """Revoke a retired token signing key on the live floor (the operator is authorized by the caller).

        The key leaves the store, the key ring and the JWKS now; the ``token_key`` revocation is
        pushed to every service, whose verifier drops the key and whose enforcement point closes
        the sessions a token of that key admitted. Raises ``token.key_active`` for the signing key
        (rotate first) and ``token.unknown_kid`` for a key not in the ring. Returns the entry.
        """
        with self._lock:
            return self.identity.revoke_token_key(kid, operator_principal)

    # ------------------------------------------------------------------ tokens and tables
    def token_for(self, caller: str, cert_der: bytes, audience: str) -> tuple[str, str]:
        """(token, audience SPIFFE ID); :class:`ControlRefused` unless the caller may connect there."""
        now = self.clock.now()
        self._require_state("token_refusals")
        if audience not in self.topology.services:
            self.counters["token_refusals"] += 1
            raise ControlRefused(f"no service {audience!r}", reason="control.unknown_audience")
        resource = f"svc/{audience}"
        try:
            decision = self.engine.decision_table(caller, now).lookup("connect", resource)
        except TrustFabricError as exc:
            decision = None
            why = exc.reason
        else:
            why = decision.reason if decision is not None else "policy.not_in_table"
        if decision is None or decision.allowed is not True:
            self.counters["token_refusals"] += 1
            event = self.emitter.emit(Kind.DECISION, principal=caller, action="connect", resource=resource,
                                      decision="deny", reason=why, detail={"at": "token-service"})
            self.observe([event])
            raise ControlRefused(f"{caller} may not connect to {audience}", reason="control.audience_not_permitted")
        audience_id = self.topology.spiffe_id(audience)
        token = self.tokens.issue(caller, audience_id, now, TOKEN_TTL_S, cert_der=cert_der)
        # the allow is a decision too (policy suggest learns the connections a workload uses from it)
        self.emitter.emit(Kind.DECISION, principal=caller, action="connect", resource=resource, decision="allow",
                          reason=decision.reason, epoch=decision.epoch, policy_ids=decision.policy_ids,
                          detail={"at": "token-service"})
        self.counters["tokens"] += 1
        return token, audience_id

    def table_for(self, asking: str, principal: str, now: float) -> DecisionTable:
        """``principal``'s table, cut to the resources owned by the asking service."""
        self._require_state(None)  # the server counts table refusals
        service = asking.rsplit("/", 1)[-1]
        if service not in self.topology.services or asking != self.topology.spiffe_id(service):
            raise ControlRefused(f"{asking} is no service", reason="control.not_owner")
        if self.is_quarantined(principal):
            # a quarantined principal opens no session anywhere, even at a point that missed the push:
            # a person's still-valid login tokens are refused here, at every session open
            raise ControlRefused(f"{principal} is quarantined", reason=PRINCIPAL_QUARANTINED)
        table = self.engine.decision_table(principal, min(now, self.clock.now()))
        self._record_table(table)
        owned = {rid for rid, r in self.topology.resources.items() if r.owner == service}
        entries = {k: v for k, v in table.entries.items() if k[1] in owned}
        self.counters["tables"] += 1
        return DecisionTable(table.principal, table.epoch, table.global_epoch, table.issued_at, table.expires_at,
                             entries)

    def _record_table(self, table: DecisionTable) -> None:
        """Audit the signals a newly compiled table saw: its decisions' context, for replays (policy impact)."""
        if self._recorded_tables.get(table.principal) is table:
            return
        signals = self.engine.table_signals(table)
        if signals is None:
            return
        self._recorded_tables[table.principal] = table
        self.emitter.emit(Kind.POLICY_TABLE, principal=table.principal, epoch=table.epoch,
                          detail={"global_epoch": table.global_epoch, "signals": signals,
                                  "policy": self.engine.info.digest if self.engine.info else ""})

    # ------------------------------------------------------------------ push and detection
    def subscribe(self, listener: Listener) -> Callable[[], None]:
        return add_subscriber(self._listeners, self._lock, listener)

    def _publish(self, item: Invalidation | Any) -> None:
        if self._state_remote and self.writer and isinstance(item, Invalidation) and not self._saved_with(item):
            # beside replicas the store holds the change (and these epochs) before any point hears of it: a point
            # that re-fetches its table at a replica gets it with the change (control/replica.py)
            self.save_signals()
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(item)
            except Exception:  # noqa: BLE001 - one dead subscriber must not starve the others
                pass

    def observe(self, events: list[AuditEventV1]) -> None:
        if self.follower is not None:  # containment is the lease holder's: hand the events over
            self.counters["security_events"] += len(events)
            if self.relay_events is not None and events:
                self.relay_events(events)
            return
        for event in events:
            self.counters["security_events"] += 1
            for listener in self.event_listeners:
                listener(event)
            self.alerts.extend(self.response.observe(event))

    def observe_encoded(self, raw_events: list[bytes]) -> None:
        events = []
        for raw in raw_events:
            try:
                events.append(decode_event(bytes(raw)))
            except Exception:  # noqa: BLE001 - a garbled report is dropped, never trusted
                continue
        self.observe(events)

    def acknowledge(self, principal: str, service: str) -> None:
        with self._lock:
            self._contain_acks.setdefault(principal, set()).add(service)
            self._contain_first.setdefault(principal, self.clock.now())
        self.containment.acknowledge(principal, service)

    def containment_first_ack(self, principal: str) -> float:
        """When the first enforcement point confirmed it refuses ``principal`` (0: none yet)."""
        with self._lock:
            return self._contain_first.get(principal, 0.0)

    def containment_acks(self, principal: str) -> frozenset[str]:
        """The enforcement points that confirmed they refuse ``principal`` since its last quarantine."""
        with self._lock:
            return frozenset(self._contain_acks.get(principal, ()))

    # ------------------------------------------------------------------ the signal store
    def _signals_changed(self, principals: Any, reason: str, source: str, kind: str) -> None:
        if self._state_remote and self._saved_epochs is not None and self._saved_epochs == self.engine.epochs():
            return  # saved already, before the push of this very change (_publish)
        self.save_signals()

    def save_signals(self) -> None:
        """Write the live signals back to the store (the plane is its only writer while it runs)."""
        if not self.writer:
            return
        with self._save_lock:
            try:
                state = self.signals.state()
                save_state(self.signals_path, state)
                self._saved_epochs = state.epochs
            except (OSError, TrustFabricError) as exc:
                # the live state stays and the push still goes out (a store that is away makes the replicas refuse
                # until the next save reaches it); the failure is in the audit log
                self._saved_epochs = None
                self.emitter.emit(Kind.ADMIN_ACTION, principal=self.source, action="signals.save", decision="deny",
                                  reason="control.signal_store_unwritable", detail={"error": str(exc)[:200]})

    def _saved_with(self, inv: Invalidation) -> bool:
        """The last save already holds the epochs ``inv`` carries (one bump moves several principals' epochs and
        publishes one invalidation each: the first save covers them all)."""
        saved = self._saved_epochs
        if saved is None or saved[0] < inv.global_epoch:
            return False
        return inv.principal is None or saved[1].get(inv.principal, 0) >= inv.epoch

    # ------------------------------------------------------------------ quarantine and release
    def is_quarantined(self, principal: str) -> bool:
        """Contained by the response engine, or quarantined on the signal hub (an operator's flag). A follower
        has the hub only: the holder's containment quarantines there, and its release lifts it there."""
        if self.follower is not None:
            return principal in self.hub.quarantined()
        return self.containment.is_quarantined(principal) or principal in self.hub.quarantined()

    def release(self, principal: str, officer: OfficerFacts, now: float | None = None) -> Incident:
        """The floor's release path: :meth:`ResponseEngine.release` (a security officer with a fresh
        step-up; revocation lifted for a workload, quarantine flag cleared, epochs bumped, alert folding
        restarted so that a re-offence is contained afresh). Raises ``ReleaseRefused`` otherwise."""
        return self.response.release(principal, officer, now)

    def release_with_step_up(self, principal: str, officer: str, totp_code: str, now: float | None = None
                             ) -> Incident:
        """:meth:`release` for an officer who proves a step-up now: the identity plane re-verifies the
        TOTP code (wrong, replayed or locked out: refused and logged, nothing released)."""
        now = self.clock.now() if now is None else now
        return self._release_after(principal, officer, now, lambda: self.identity.users().step_up(
            officer, totp_code, now))

    def release_by_operator(self, principal: str, user: str, password: str, totp_code: str,
                            now: float | None = None) -> Incident:
        """:meth:`release` for a person at the operator endpoint: password + TOTP login now (a fresh
        step-up), then the release path, which itself requires the security_officer role. A refused
        login is logged as a denied release and re-raised (``user.*``); nothing is released."""
        now = self.clock.now() if now is None else now

        def login() -> Any:
            with self._lock:
                return self.identity.users().login(user, password, totp_code, now)

        return self._release_after(principal, user, now, login)

    def _release_after(self, principal: str, officer: str, now: float, authenticate: Callable[[], Any]
                       ) -> Incident:
        """Authenticate the officer (a refusal is logged as a denied release and re-raised), then release."""
        try:
            auth = authenticate()
        except TrustFabricError as exc:
            self.emitter.emit(Kind.RELEASE, principal=principal, decision="deny", reason=exc.reason,
                              detail={"officer": officer})
            raise
        facts = OfficerFacts(name=auth.name, roles=(auth.role,), step_up_at=auth.auth_time)
        return self.release(principal, facts, now)

    def register_points(self, services: list[str]) -> None:
        for name in services:
            self.containment.register_point(name)

    def revocation_snapshot(self) -> tuple[tuple[int, ...], tuple[str, ...]]:
        _version, serials, ids = self.identity.revocations.snapshot()
        return tuple(sorted(serials)), tuple(sorted(ids))

    def incidents(self) -> list[dict]:
        out = []
        for inc in self.containment.store.incidents(limit=1000):
            out.append(msgspec.to_builtins(inc))
        return out


OperatorAction = Callable[[ControlPlane, Operator, str, str, dict[str, str], float], Applied]

# The operator actions a running control plane applies, by action name (identity.operators.ACTIONS).
# A name missing here is refused on a running floor (``operator.unknown_action``), never applied offline.
OPERATOR_ACTIONS: dict[str, OperatorAction] = {
    "quarantine": ControlPlane.quarantine_by,
    "release": ControlPlane.release_by,
    **{name: ControlPlane.signal_by for name in SIGNAL_ACTIONS},
    "killswitch.halt": ControlPlane.kill_switch_by,
    "killswitch.reduce": ControlPlane.kill_switch_by,
    "killswitch.resume": ControlPlane.kill_switch_by,
    "ca.revoke": ControlPlane.revoke_by,
    "ca.promote": ControlPlane.promote_by,
    "ca.issue_unattested": ControlPlane.issue_unattested_by,
    "ca.register_host": ControlPlane.register_host_by,
    "token.rotate_key": ControlPlane.rotate_token_key_by,
    "token.revoke_key": ControlPlane.revoke_token_key_by,
    "policy.activate": ControlPlane.policy_activate_by,
    "policy.rollback": ControlPlane.policy_rollback_by,
    "data.rotate": ControlPlane.data_key_change_by,
    "data.shred": ControlPlane.data_key_change_by,
    "release.submit": ControlPlane.release_step_by,
    "release.approve": ControlPlane.release_step_by,
    "release.promote": ControlPlane.release_step_by,
}


def peer_cert_der(cert_pem: bytes) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return load_certificate(cert_pem).public_bytes(serialization.Encoding.DER)
