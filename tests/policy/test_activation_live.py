"""Activation on a live control plane: the signed set is loaded, the global epoch moves and reaches an
enforcement point, whose next message of the new algo is decided by the new version; a refusal leaves
the serving version and the epochs untouched."""

from __future__ import annotations

import pyotp
import pytest

from tests.enforcement.fakes import FakeTokenVerifier, make_peer, make_token
from tests.policy.lifecycle_fixtures import NEW_ALGO, floor_with_new_algo, paper_trading_audit
from trustfabric.clock import FakeClock
from trustfabric.control.plane import CONFIRM_PUSH, ControlPlane
from trustfabric.enforcement.pep import EnforcementPoint
from trustfabric.errors import TrustFabricError
from trustfabric.identity.operators import OperatorAuthority, OperatorCredential
from trustfabric.policy.bundle import PolicyVersions, SigningKeys
from trustfabric.policy.bundle import encode
from trustfabric.control.policy_lifecycle import PolicyLifecycle, activation_target, rollback_target
from trustfabric.policy.suggest import suggest

PASSWORD = "correct horse battery"
T0 = 1_790_000_000.0


class PlaneTables:
    """The pre-trade-risk enforcement point's table source: the control plane, cut to what it owns."""

    def __init__(self, plane: ControlPlane, asking: str) -> None:
        self.plane, self.asking = plane, asking

    def decision_table(self, principal: str, now: float):
        return self.plane.table_for(self.asking, principal, now)


class PlaneAndPoint:
    """A control plane on the new-algo policies and the pre-trade-risk enforcement point it serves (no processes)."""
    def __init__(self, tmp_path) -> None:
        self.base = floor_with_new_algo(tmp_path / "policies")
        self.clock = FakeClock(T0)
        self.plane = ControlPlane(tmp_path / "home", policies=self.base, clock=self.clock)
        self.risk = self.plane.topology.spiffe_id("pre-trade-risk")
        self.algo = self.plane.topology.spiffe_id(NEW_ALGO)
        self.pep = EnforcementPoint(self.risk, PlaneTables(self.plane, self.risk), FakeTokenVerifier(),
                                    clock=self.clock)
        self.plane.subscribe(self.pep.on_invalidation)
        users = self.plane.identity.users()
        self.totp = {name: pyotp.TOTP(users.enrol(name, role, PASSWORD, T0).totp_secret)
                     for name, role in (("erin", "developer"), ("bob", "risk_officer"), ("carol", "risk_officer"),
                                        ("dave", "security_officer"))}
        self.life = PolicyLifecycle(self.plane.policy_versions, SigningKeys(self.plane.identity.store),
                                    OperatorAuthority.for_plane(self.plane.identity, self.plane.engine,
                                                                emitter=self.plane.emitter),
                                    self.plane.emitter, tmp_path / "keys")
        peer = make_peer(self.algo)
        self.session = self.pep.open_session(peer, make_token(self.algo, self.risk, peer.cert_der, T0 + 3600))

    def person(self, name: str) -> OperatorCredential:
        self.clock.advance(30)
        return OperatorCredential(user=name, password=PASSWORD, totp=self.totp[name].at(self.clock.now()))

    def signed_bundle(self, tmp_path):
        audit = paper_trading_audit(self.base, tmp_path / "audit", seconds=10)
        suggest(audit, self.base, out=tmp_path / "proposed", principal=NEW_ALGO, grant_denied=True)
        bundle = self.life.author(tmp_path / "proposed", self.person("erin"), now=self.clock.now())
        for name in ("bob", "carol"):
            bundle = self.life.sign(bundle, self.person(name), now=self.clock.now())
        return bundle


@pytest.fixture()
def floor(tmp_path):
    f = PlaneAndPoint(tmp_path)
    yield f
    f.plane.close()


def test_activation_moves_the_epoch_at_the_enforcement_point_and_the_new_grant_applies(floor, tmp_path):
    assert floor.pep.check(floor.session, "submit_order", "risk/orders", 1000.0, "KO")[0] is False
    bundle = floor.signed_bundle(tmp_path)
    epoch = floor.plane.engine.global_epoch
    done = floor.life.activate(bundle, floor.person("dave"), now=floor.clock.now(), engine=floor.plane.engine)
    assert done.global_epoch == epoch + 1
    assert floor.pep.needs_redecide(floor.session)  # the push reached the enforcement point
    assert floor.pep.check(floor.session, "submit_order", "risk/orders", 1000.0, "KO") == (True, "policy.allow")
    assert floor.pep.check(floor.session, "submit_order", "risk/orders", 1000.0, "AAPL")[0] is False  # @symbols
    assert floor.pep.check(floor.session, "submit_order", "risk/orders", 10**9, "KO")[0] is False  # @max_notional
    assert PolicyVersions(floor.plane.home / "policy").active_version() == 1


def test_a_refused_activation_keeps_the_version_serving_and_the_epochs(floor, tmp_path):
    bundle = floor.signed_bundle(tmp_path)
    under = type(bundle)(manifest=bundle.manifest, files=bundle.files, signatures=bundle.signatures[:2])
    digest, epoch = floor.plane.engine.info.digest, floor.plane.engine.global_epoch
    with pytest.raises(TrustFabricError) as exc:
        floor.life.activate(under, floor.person("dave"), now=floor.clock.now(), engine=floor.plane.engine)
    assert exc.value.reason == "policy.bundle.under_signed"
    assert floor.plane.engine.info.digest == digest and floor.plane.engine.global_epoch == epoch
    assert not floor.pep.needs_redecide(floor.session)
    assert floor.pep.check(floor.session, "submit_order", "risk/orders", 1000.0, "KO")[0] is False


def test_the_control_planes_operator_dispatch_activates_and_rolls_back(floor, tmp_path):
    bundle = floor.signed_bundle(tmp_path)
    epoch = floor.plane.engine.global_epoch
    with pytest.raises(TrustFabricError) as exc:  # the person's request names another version
        floor.plane.operate(floor.person("dave"), "policy.activate", "v9:0000", {"bundle": encode(bundle).decode()})
    assert exc.value.reason == "policy.bundle.target_mismatch" and floor.plane.engine.global_epoch == epoch
    applied = floor.plane.operate(floor.person("dave"), "policy.activate", activation_target(bundle),
                                  {"bundle": encode(bundle).decode(), "reason": "onboard"})
    assert applied.confirm == CONFIRM_PUSH and applied.result["version"] == "1"
    assert floor.plane.engine.global_epoch == epoch + 1 and floor.pep.needs_redecide(floor.session)
    assert floor.pep.check(floor.session, "submit_order", "risk/orders", 1000.0, "KO") == (True, "policy.allow")
    with pytest.raises(TrustFabricError) as exc:  # nothing before version 1 in the signed history
        floor.plane.operate(floor.person("dave"), "policy.rollback", rollback_target(None), {"version": ""})
    assert exc.value.reason == "policy.bundle.not_in_history"
