"""The threat simulator's runner: the real floor, the attacker, and measurements from what happened.

For each mode (``zero-trust`` first, then ``perimeter``) :class:`SimulationRunner`
starts one floor through the launcher (:class:`trustfabric.trading.launcher.Floor`:
control plane, services as processes, real sockets and policies) with the
services counting the effects of simulator-tagged requests, lets it trade for
``warmup_s``, then runs every scenario on that floor one after another:

1. builds the attacker's :class:`~trustfabric.simulation.attacker.Footing` from its
   foothold (a running workload's credential files, a stolen token, a person's
   login, an unpromoted build's join...);
2. runs the :class:`~trustfabric.simulation.attacker.Attacker` (real sockets);
3. waits for the services' reports, then reads the floor's own counts
   (:mod:`trustfabric.trading.effects`), the control plane's alerts and the
   containment incident of the principal, and scores them
   (:func:`trustfabric.simulation.measure.score`);
4. zero-trust: a security officer with a fresh TOTP step-up releases every
   principal the scenario got quarantined - workloads and people alike - through
   the control plane's release path (:meth:`ControlPlane.release`, which is
   :meth:`ResponseEngine.release`), so the next scenario starts from a clean
   floor (the released workloads reconnect and trade again).

Reusing one floor per mode is sound because every scenario's effects are
counted under its own trace tag and each quarantine is released (and checked
released) before the next scenario starts.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pyotp

from trustfabric.identity.workload import WorkloadCredentials, issue_for_test
from trustfabric.policy.topology import Topology
from trustfabric.response.containment import OfficerFacts
from trustfabric.simulation.attacker import Attacker, ControlTokens, Footing, join_bootstrap
from trustfabric.trading.effects import collect
from trustfabric.simulation.errors import FloorUnavailable
from trustfabric.simulation.exposure import DATA_CATEGORIES, data_exposure
from trustfabric.simulation.measure import Detection, FloorEffects, score
from trustfabric.simulation.results import ScenarioResult
from trustfabric.simulation.scenarios import Scenario
from trustfabric.transport.tls import TLSConfig
from trustfabric.trading.launcher import DEFAULT_SERVICES, Floor
from trustfabric.signals.host_agent import HostPostureAgent
from trustfabric.trading.services import module_file
from trustfabric.trading.risk import RiskLimits

ZERO_TRUST = "zero-trust"
PERIMETER = "perimeter"
REPORT_SETTLE_S = 0.6  # services report every 0.25 s: two reports after the last attempt
OFFICER = "dave"
ATTACKER_CERT_TTL_S = 600

Progress = Callable[[str, dict[str, Any]], None]


def _quiet(_event: str, _data: dict[str, Any]) -> None:
    pass


@dataclass
class RunConfig:
    home: Path
    modes: tuple[str, ...] = (ZERO_TRUST, PERIMETER)
    warmup_s: float = 3.0
    review_interval_s: float = 3600.0
    contain_timeout_s: float = 3.0
    md_interval_s: float = 0.1
    services: tuple[str, ...] | None = None
    progress: Progress = _quiet
    boot_extra: dict[str, Any] = field(default_factory=dict)


class People:
    """The floor's people enrolled in its identity plane; the runner holds their authenticators."""

    def __init__(self, plane: Any, names: list[str], topology: Topology) -> None:
        self.plane = plane
        self.directory = plane.identity.users()
        self.passwords: dict[str, str] = {}
        self.totp: dict[str, pyotp.TOTP] = {}
        now = time.time()
        for name in names:
            role = topology.people[name].roles[0]
            password = secrets.token_urlsafe(18)
            if self.directory.get(name) is None:
                enrolment = self.directory.enrol(name, role, password, now)
                self.passwords[name] = password
                self.totp[name] = pyotp.TOTP(enrolment.totp_secret)
        self.officer: OfficerFacts | None = None

    def code(self, name: str, now: float) -> str:
        """The next TOTP code not yet used (the directory refuses a replayed step)."""
        row = self.directory.get(name)
        step = max(int(now // 30), (row.totp_last_step + 1) if row else 0)
        return self.totp[name].at(step * 30)

    def officer_facts(self, now: float) -> OfficerFacts:
        """The security officer's step-up (password + TOTP, then TOTP), reused while it is fresh."""
        if self.officer is None or now - (self.officer.step_up_at or 0) > 240:
            auth = self.directory.login(OFFICER, self.passwords[OFFICER], self.code(OFFICER, now), now)
            self.officer = OfficerFacts(name=auth.name, roles=(auth.role,), step_up_at=auth.auth_time)
        return self.officer


class SimulationRunner:
    def __init__(self, scenarios: tuple[Scenario, ...], config: RunConfig) -> None:
        self.scenarios = scenarios
        self.config = config
        self.results: list[ScenarioResult] = []
        self.flood_rates: dict[str, float] = {}  # principal -> its granted order rate (zero-trust policy)
        self.floor_summaries: dict[str, dict[str, Any]] = {}

    # ------------------------------------------------------------------ entry
    async def run(self) -> list[ScenarioResult]:
        for mode in self.config.modes:
            self.results.extend(await self.run_mode(mode))
        return self.results

    async def run_mode(self, mode: str) -> list[ScenarioResult]:
        progress = self.config.progress
        home = Path(self.config.home) / mode
        floor = Floor(home=home, mode=mode, services=self.config.services or DEFAULT_SERVICES,
                      md_interval_s=self.config.md_interval_s,
                      boot_extra={"sim_effects": True, **self.config.boot_extra})
        progress("floor.starting", {"mode": mode})
        try:
            await floor.start()
        except Exception as exc:  # noqa: BLE001 - the run stops: no scenario is reported unrun
            raise FloorUnavailable(f"{mode} floor did not start: {exc}") from None
        results: list[ScenarioResult] = []
        try:
            people = People(floor.plane, list(floor.topology.people), floor.topology) if floor.plane else None
            progress("floor.ready", {"mode": mode, "services": len(floor.processes)})
            await asyncio.sleep(self.config.warmup_s)
            baseline = _trading_totals(floor)
            progress("floor.trading", {"mode": mode, **baseline})
            for scenario in self.scenarios:
                progress("scenario.start", {"mode": mode, "name": scenario.name})
                result = await self.run_scenario(floor, scenario, people)
                results.append(result)
                progress("scenario.done", {"mode": mode, "result": result})
            self.floor_summaries[mode] = {**_trading_totals(floor), "fail_open": floor.total("fail_open")}
        finally:
            progress("floor.stopping", {"mode": mode})
            await floor.stop()
        return results

    # ------------------------------------------------------------------ one scenario
    async def run_scenario(self, floor: Any, scenario: Scenario, people: People | None) -> ScenarioResult:
        mode = floor.mode
        started = time.time()
        joins_before = floor.plane.counters["joins"] if floor.plane else 0
        footing, principals = await self.footing(floor, scenario, people)
        ports = dict(floor.ports)
        spiffe = {name: floor.topology.spiffe_id(name) for name in ports}
        attacker = Attacker(scenario, mode, ports, spiffe, footing)
        records = await attacker.run()
        if isinstance(footing.tokens, ControlTokens):
            footing.tokens.close()
        detection = None
        if floor.plane is not None:
            detection = await self.detection(floor, principals, started)
        await asyncio.sleep(REPORT_SETTLE_S)
        effects = self.effects(floor, scenario, joins_before)
        grants = frozenset()
        ref = floor.topology.resolve(footing.principal)
        if ref is not None:
            grants = floor.topology.flows_of(ref)
        rate = self.flood_rates.get(footing.principal)
        if rate is None and floor.plane is not None:
            rate = _max_rate(floor, footing.principal)
            if rate is not None:  # kept for the perimeter run: both modes allow the same honest rate
                self.flood_rates[footing.principal] = rate
        result = score(scenario, mode, records, effects, grants, detection,
                       flood_rate=rate or _risk_rate(), floor_started=floor.started_at,
                       review_interval_s=self.config.review_interval_s)
        result.details["foothold"] = f"{scenario.foothold.kind}:{scenario.foothold.identity}"
        if scenario.category in DATA_CATEGORIES:  # the same attacker also goes to the data directly
            svc = floor.topology.services.get(scenario.foothold.identity)
            exposure = data_exposure(Path(floor.home), svc.segment if svc else "desk", floor.topology.environment)
            result.details["data_exposure"] = exposure
            result.records_exposed = int(exposure["records_exposed"])
        if floor.plane is None and scenario.foothold.kind == "build":
            result.details["modelled"] = "identities_issued: no deployment gate in perimeter mode, the build runs"
        if floor.plane is not None:
            result.details["released"] = await self.release(floor, people, principals)
        return result

    async def footing(self, floor: Any, scenario: Scenario, people: People | None) -> tuple[Footing, set[str]]:
        """What the attacker holds, and the principals the fabric may attribute the attack to."""
        foothold = scenario.foothold
        topo = floor.topology
        if foothold.is_person:
            principal = f"user:{foothold.identity}"
        else:
            principal = topo.spiffe_id(foothold.identity)
        svc = topo.services.get(foothold.identity)
        footing = Footing(principal=principal, account=(svc.account if svc and svc.account else "acct-desk"))
        if svc is not None and svc.symbols:
            footing.symbol = sorted(svc.symbols)[0]
        footing.notes["learn_price"] = floor.plane is None or (foothold.kind == "workload" and foothold.identity in floor.ports)
        ref = topo.resolve(principal)
        footing.notes["own_audiences"] = sorted(
            r[4:] for a, r in (topo.flows_of(ref) if ref is not None else ()) if a == "connect" and r.startswith("svc/"))
        principals = {principal}
        if floor.plane is None:  # perimeter: the network is all it needs
            return footing, principals
        plane = floor.plane
        control = (floor.server.control_port, plane.control_id)
        if foothold.kind in ("workload", "stolen_cert"):
            creds = self._credentials(floor, foothold.identity)
            footing.tls = TLSConfig(creds)
            footing.tokens = ControlTokens(control[0], footing.tls, control[1])
        elif foothold.kind == "stolen_token":
            victim = TLSConfig(self._credentials(floor, foothold.identity))
            thief = ControlTokens(control[0], victim, control[1])
            audience = next(a.target for a in scenario.attempts if a.method != "join")
            footing.fixed_token = await thief(audience) or ""
            thief.close()
            footing.tls = TLSConfig(self._credentials(floor, foothold.as_identity))
            principals.add(topo.spiffe_id(foothold.as_identity))
        elif foothold.kind == "build":
            footing.join = self._join(floor, foothold.identity, foothold.digest)
        elif foothold.kind == "person":
            footing.tls, footing.tokens = self._desk_login(floor, people, foothold.identity, foothold.device)
        return footing, principals

    def _desk_login(self, floor: Any, people: People | None, name: str, device: str) -> tuple[TLSConfig, Any]:
        """A person at a desk terminal: password + TOTP at the identity plane, then person tokens
        (amr, auth_time) bound to the terminal's device certificate and presented over it."""

        plane = floor.plane
        if device not in plane.agents:  # the desk terminal's host, attested like every host
            agent = HostPostureAgent(device)
            agent.register(plane.hub.host_keys)
            plane.identity.register_host(device, agent._key.public_key())
            plane.agents[device] = agent
            plane.refresh_posture()
        now = time.time()
        auth = people.directory.login(name, people.passwords[name], people.code(name, now), now)  # type: ignore[union-attr]
        plane.hub.record_authentication(name, mfa=True, step_up_at=None, device_host=device)
        desk = issue_for_test(plane.identity.ca(plane.trust_domain), f"spiffe://{plane.trust_domain}/desk/{device}",
                              now, ATTACKER_CERT_TTL_S)

        async def person_token(audience: str) -> str | None:
            if audience not in floor.topology.services:
                return None
            return plane.tokens.issue(f"user:{name}", floor.topology.spiffe_id(audience), time.time(), 300,
                                      cert_der=desk.cert_der, amr=auth.amr, auth_time=auth.auth_time)

        return TLSConfig(desk), person_token

    def _credentials(self, floor: Any, service: str) -> WorkloadCredentials:
        """A running service's credential files (what an attacker on its host reads); a not-launched
        workload (analytics) gets a certificate from its trust domain's CA as if it had attested."""
        directory = floor.home / "floor" / "creds" / service
        if service in floor.processes and directory.exists():
            return WorkloadCredentials.load(directory)
        plane = floor.plane
        return issue_for_test(plane.identity.ca(plane.trust_domain), floor.topology.spiffe_id(service), time.time(),
                              ATTACKER_CERT_TTL_S)

    def _join(self, floor: Any, service: str, kind: str):
        plane = floor.plane
        source = Path(module_file(service)).read_bytes()
        marker = b"\n# tampered: sends orders to an outside account\n" if kind == "tampered" else b"\n# v-next\n"
        digest = hashlib.sha256(source + marker).hexdigest()

        async def join() -> tuple[bool, str]:
            return await join_bootstrap(floor.server.bootstrap_port, bundle_pem=plane.credentials.bundle_pem,
                                        control_id=plane.control_id, join_token=plane.issue_join_token(service),
                                        spiffe_id=floor.topology.spiffe_id(service), code_digest=digest,
                                        posture=plane.posture_report(service))

        return join

    # ------------------------------------------------------------------ measurements
    async def detection(self, floor: Any, principals: set[str], started: float) -> Detection:
        """The first alert about the principals after ``started``, and its containment (bounded wait)."""
        plane = floor.plane
        deadline = time.monotonic() + self.config.contain_timeout_s

        def alerts() -> list[Any]:
            return [a for a in list(plane.alerts) if a.principal in principals and a.detected_at >= started - 0.001]

        def incident() -> Any:
            found = None
            for principal in principals:
                for inc in plane.containment.store.incidents(principal=principal, limit=20):
                    if inc.opened_at >= started - 0.001 and (found is None or inc.opened_at < found.opened_at):
                        found = inc
            return found

        while time.monotonic() < deadline:
            inc = incident()
            if inc is not None and inc.contained:
                break
            if not alerts() and time.monotonic() > deadline - self.config.contain_timeout_s / 2:
                break  # nothing raised in half the budget: nothing is coming
            plane.containment.check_overdue()
            await asyncio.sleep(0.02)
        raised = alerts()
        inc = incident()
        return Detection(alert_at=min((a.detected_at for a in raised), default=None),
                         contained=bool(inc is not None and inc.contained),
                         ttc_ms=inc.ttc_ms if inc is not None else None, alerts=len(raised),
                         incident_id=inc.incident_id if inc is not None else "")

    def effects(self, floor: Any, scenario: Scenario, joins_before: int) -> FloorEffects:
        performed_all, records = collect(floor.stats(), scenario.name)
        performed: dict[tuple[str, str], int] = {}
        for attempt in scenario.attempts:
            n = performed_all.get((attempt.target, attempt.action, attempt.resource), 0)
            if n:
                performed[(attempt.action, attempt.resource)] = n
        venue_orders = sum(n for (svc, action, _r), n in performed_all.items()
                           if action == "execute" and svc.startswith("venue"))
        approved = sum(n for (svc, action, _r), n in performed_all.items()
                       if svc == "pre-trade-risk" and action == "submit_order")
        issued = 0
        if floor.plane is not None:
            issued = floor.plane.counters["joins"] - joins_before
        elif scenario.foothold.kind == "build":
            issued = 1  # perimeter: no attestation; whatever build is deployed runs
        return FloorEffects(performed=performed, venue_orders_unapproved=max(0, venue_orders - approved),
                            records_read=records, identities_issued=issued)

    async def release(self, floor: Any, people: People | None, principals: set[str]) -> list[str]:
        """A security officer (fresh TOTP step-up) releases what the scenario got quarantined."""
        released: list[str] = []
        plane = floor.plane
        for principal in sorted(principals | {i.principal for i in plane.containment.store.incidents(open_only=True)}):
            if not plane.containment.is_quarantined(principal):
                continue
            now = time.time()
            plane.release(principal, people.officer_facts(now), now)  # type: ignore[union-attr]
            released.append(principal)
        if released:
            await asyncio.sleep(0.3)  # pushes reach the services; their links reopen on the next request
        return released


def _trading_totals(floor: Any) -> dict[str, float]:
    return {"orders_submitted": floor.total("risk_received"), "orders_filled": floor.total("orders_filled"),
            "venue_orders": floor.total("venue_orders")}


def _max_rate(floor: Any, principal: str) -> float | None:
    try:
        decision = floor.plane.engine.decision_table(principal, time.time()).lookup("submit_order", "risk/orders")
    except Exception:  # noqa: BLE001 - no grant, no allowance
        return None
    if decision is None or not decision.allowed:
        return None
    return decision.obligations.max_rate


def _risk_rate() -> float:
    return RiskLimits().rate_per_s

