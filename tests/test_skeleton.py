"""The skeleton's shared pieces: clock, errors, events, posture, bus."""

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from trustfabric.audit.events import Emitter, Kind, MemorySink, decode_event, encode_event
from trustfabric.clock import FakeClock
from trustfabric.errors import IdentityError, TrustFabricError
from trustfabric.policy.bus import InProcessBus
from trustfabric.policy.decision import Invalidation, Obligations
from trustfabric.signals.posture import (
    HostKeyRegistry,
    PostureMinimum,
    PostureReport,
    SignedPostureReport,
    evaluate_posture,
    sign_report,
)


def test_fake_clock_never_goes_backwards():
    clock = FakeClock(100.0)
    clock.advance(5)
    assert clock.now() == 105.0
    with pytest.raises(ValueError):
        clock.advance(-1)


def test_errors_carry_reason_codes():
    err = IdentityError("bad", reason="token.expired")
    assert isinstance(err, TrustFabricError)
    assert err.reason == "token.expired" and "bad" in str(err)


def test_emitter_stamps_sequence_and_roundtrips():
    sink = MemorySink()
    emitter = Emitter("test:source", sink, FakeClock(10.0))
    a = emitter.emit(Kind.DECISION, principal="p", decision="deny", reason="policy.no_permit")
    b = emitter.emit(Kind.DECISION, principal="p", decision="allow")
    assert (a.seq, b.seq) == (1, 2)
    assert a.time_ns == 10_000_000_000
    assert decode_event(encode_event(a)) == a


def test_obligations_merge_takes_the_stricter():
    a = Obligations(max_rate=100, symbols=frozenset({"AAPL", "MSFT"}))
    b = Obligations(max_rate=10, max_notional=1e6, symbols=frozenset({"MSFT"}))
    m = a.merge(b)
    assert m.max_rate == 10 and m.max_notional == 1e6 and m.symbols == frozenset({"MSFT"})


def test_bus_survives_a_failing_subscriber():
    bus = InProcessBus()
    got = []
    bus.subscribe(lambda inv: 1 / 0)
    unsubscribe = bus.subscribe(got.append)
    inv = Invalidation(principal="p", epoch=2, global_epoch=1, reason="test")
    bus.publish(inv)
    assert got == [inv] and bus.delivery_errors == 1
    unsubscribe()
    bus.publish(inv)
    assert len(got) == 1


def _report(now, **kw):
    fields = dict(host="h1", issued_at=now, os="Linux", kernel="6.3.0", encrypted_mounts=("/",),
                  security_agents=("falcon-sensor",), listening_ports=(20001,), time_synced=True)
    fields.update(kw)
    return PostureReport(**fields)


def test_posture_passes_and_refuses():
    now = 1_000_000.0
    key = Ed25519PrivateKey.generate()
    registry = HostKeyRegistry()
    registry.register("h1", key.public_key())
    minimum = PostureMinimum()
    assert evaluate_posture(sign_report(_report(now), key), registry, minimum, now).ok
    stale = evaluate_posture(sign_report(_report(now - 1000), key), registry, minimum, now)
    assert not stale.ok and "posture.stale" in stale.reasons
    weak = evaluate_posture(sign_report(_report(now, security_agents=()), key), registry, minimum, now)
    assert weak.reasons == ("posture.security_agent",)
    assert evaluate_posture(None, registry, minimum, now).reasons == ("posture.unsigned",)
    good = sign_report(_report(now), key)
    forged = SignedPostureReport(report=good.report.replace(b'"h1"', b'"h1"').replace(b"3", b"1"), signature=good.signature, key_id=good.key_id)
    assert evaluate_posture(forged, registry, minimum, now).reasons == ("posture.bad_signature",)
    other = Ed25519PrivateKey.generate()
    assert evaluate_posture(sign_report(_report(now), other), registry, minimum, now).reasons == ("posture.unknown_key",)
