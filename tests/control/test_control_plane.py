"""The control plane's refusals, in process: join tokens, attestation, token audiences, table cuts."""


import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from trustfabric.clock import FakeClock
from trustfabric.control.errors import BootstrapRefused, ControlRefused
from trustfabric.control.joins import JoinTokens
from trustfabric.identity.store import SqliteIdentityStore
from trustfabric.control.plane import ControlPlane
from trustfabric.errors import TrustFabricError
from trustfabric.identity.workload import new_key_and_csr

DIGEST = "ab" * 32


@pytest.fixture()
def plane(tmp_path):
    cp = ControlPlane(tmp_path, clock=FakeClock(1_790_000_000.0))
    cp.promote("venue-a", DIGEST)
    yield cp
    cp.close()


def _csr(sid):
    _key, csr = new_key_and_csr(sid)
    return csr.public_bytes(serialization.Encoding.PEM)


def test_join_issues_an_attested_certificate_once(plane):
    sid = plane.spiffe_id("venue-a")
    token = plane.issue_join_token("venue-a")
    cert, bundle = plane.join(token, sid, _csr(sid), DIGEST, plane.posture_report("venue-a"))
    assert b"BEGIN CERTIFICATE" in cert and b"BEGIN CERTIFICATE" in bundle
    with pytest.raises(BootstrapRefused) as err:
        plane.join(token, sid, _csr(sid), DIGEST, plane.posture_report("venue-a"))
    assert err.value.reason == "bootstrap.join_token_reused"


@pytest.mark.parametrize("case, reason", [
    ("unknown_token", "bootstrap.join_token_unknown"),
    ("other_identity", "bootstrap.identity_mismatch"),
    ("unpromoted", "attest.unpromoted_digest"),
    ("other_service_release", "bootstrap.release_of_another_service"),
    ("no_posture", "posture.unsigned"),
    ("stale_posture", "posture.stale"),
])
def test_join_refusals(plane, case, reason):
    sid = plane.spiffe_id("venue-a")
    token = plane.issue_join_token("venue-a")
    digest, posture, claim = DIGEST, plane.posture_report("venue-a"), sid
    if case == "unknown_token":
        token = "nope"
    elif case == "other_identity":
        claim = plane.spiffe_id("algo-momentum")
    elif case == "unpromoted":
        digest = "cd" * 32
    elif case == "other_service_release":
        token = plane.issue_join_token("venue-b")
        claim = plane.spiffe_id("venue-b")
    elif case == "no_posture":
        posture = b""
    elif case == "stale_posture":
        plane.clock.advance(400)  # the report was signed 400 s ago; prod accepts 300 s
        token = plane.issue_join_token("venue-a")
    with pytest.raises(BootstrapRefused if case in ("unknown_token", "other_identity", "other_service_release")
                       else Exception) as err:
        plane.join(token, claim, _csr(claim), digest, posture)
    assert err.value.reason == reason or (case == "no_posture" and err.value.reason.startswith("posture."))
    assert plane.counters["joins"] == 0


@pytest.mark.parametrize("stored", [False, True])
def test_join_token_expires(stored, tmp_path):
    tokens = JoinTokens(SqliteIdentityStore(tmp_path / "identity.db") if stored else None)
    token = tokens.issue("spiffe://prod.acme.example/venue/venue-a", 100.0, ttl_s=10)
    with pytest.raises(BootstrapRefused) as err:
        tokens.redeem(token, "spiffe://prod.acme.example/venue/venue-a", 111.0)
    assert err.value.reason == "bootstrap.join_token_expired"


def test_join_tokens_in_the_store_are_redeemed_once_by_any_plane_on_it_and_kept_hashed(tmp_path):
    venue = "spiffe://prod.acme.example/venue/venue-a"
    store = SqliteIdentityStore(tmp_path / "identity.db")
    issuer, other = JoinTokens(store), JoinTokens(SqliteIdentityStore(tmp_path / "identity.db"))
    token = issuer.issue(venue, 100.0)
    assert token not in (tmp_path / "identity.db").read_bytes().decode("latin-1")  # only its digest is kept
    for bad, reason in ((token + "x", "bootstrap.join_token_unknown"), ("", "bootstrap.join_token_unknown")):
        with pytest.raises(BootstrapRefused) as err:
            other.redeem(bad, venue, 101.0)
        assert err.value.reason == reason
    with pytest.raises(BootstrapRefused) as err:
        other.redeem(token, "spiffe://prod.acme.example/venue/venue-b", 101.0)
    assert err.value.reason == "bootstrap.identity_mismatch"
    other.redeem(token, venue, 101.0)  # another control plane on the same store redeems it
    for plane in (issuer, other):
        with pytest.raises(BootstrapRefused) as err:
            plane.redeem(token, venue, 102.0)
        assert err.value.reason == "bootstrap.join_token_reused"


def test_tokens_only_for_audiences_the_caller_may_connect_to(plane):
    algo = plane.spiffe_id("algo-momentum")
    der = plane.credentials.cert_der  # any certificate: the binding is checked where the token is used
    with pytest.raises(ControlRefused) as err:
        plane.token_for(algo, der, "venue-a")
    assert err.value.reason == "control.audience_not_permitted"
    with pytest.raises(ControlRefused) as err:
        plane.token_for(algo, der, "no-such-service")
    assert err.value.reason == "control.unknown_audience"
    # the denied attempt reached the response engine: the algo is quarantined, so even risk is refused now
    assert plane.containment.is_quarantined(algo)
    with pytest.raises(ControlRefused):
        plane.token_for(algo, der, "pre-trade-risk")


def test_tables_are_cut_to_the_asking_services_resources(plane):
    algo = plane.spiffe_id("algo-momentum")
    table = plane.table_for(plane.spiffe_id("venue-a"), algo, plane.clock.now())
    assert {r for _a, r in table.entries} <= {"svc/venue-a", "venue-a/orders"}
    assert not any(d.allowed for d in table.entries.values())
    risk_table = plane.table_for(plane.spiffe_id("pre-trade-risk"), algo, plane.clock.now())
    assert risk_table.lookup("submit_order", "risk/orders").allowed is True
    with pytest.raises(ControlRefused):
        plane.table_for("spiffe://prod.acme.example/x/not-a-service", algo, plane.clock.now())


def test_renewal_needs_a_report_fresher_than_the_posture_window(tmp_path):
    """The floor's renewals failed after the posture window: a report kept from boot is refused
    (posture.stale); one made at renewal time by the host's agent passes."""
    clock = FakeClock(1_790_000_000.0)
    cp = ControlPlane(tmp_path, clock=clock, leaf_ttl_s=20, posture_max_age_s=10)
    try:
        cp.promote("venue-a", DIGEST)
        sid = cp.spiffe_id("venue-a")
        boot_report = cp.posture_report("venue-a")
        cp.join(cp.issue_join_token("venue-a"), sid, _csr(sid), DIGEST, boot_report)
        clock.advance(11)  # past the posture window (and past the half-life of a 20 s certificate)
        with pytest.raises(TrustFabricError) as err:
            cp.renew(sid, _csr(sid), boot_report)
        assert err.value.reason == "posture.stale" and cp.counters["renewal_refusals"] == 1
        cert, _bundle = cp.renew(sid, _csr(sid), cp.posture_report("venue-a"))
        leaf = x509.load_pem_x509_certificate(cert)
        assert leaf.not_valid_after_utc.timestamp() - leaf.not_valid_before_utc.timestamp() == 20
        assert cp.counters["renewals"] == 1
    finally:
        cp.close()


def test_the_plane_renews_its_own_certificate_at_half_life(tmp_path):
    clock = FakeClock(1_790_000_000.0)
    cp = ControlPlane(tmp_path, clock=clock, leaf_ttl_s=60)
    try:
        first = cp.credentials
        assert not cp.rotate_own_certificate()
        clock.advance(31)
        assert cp.rotate_own_certificate()
        assert cp.credentials.fingerprint_sha256 != first.fingerprint_sha256
        assert cp.credentials.not_after > first.not_after
        assert cp.credential_source.current() is cp.credentials
    finally:
        cp.close()
