"""The router refuses forged, altered, replayed and expired risk approvals."""

import os

import msgspec
import pytest

from trustfabric.trading import approval as ap
from trustfabric.trading.approval import ApprovalKeyring, ApprovalSigner, ApprovalVerifier
from trustfabric.trading.errors import ApprovalRefused
from tests.trading.builders import AGENT, AGENT2, T0, order

SEC = 1_000_000_000


def setup(**kw):
    ring = ApprovalKeyring("k1", b"\x01" * 32)
    return ApprovalSigner(ring), ApprovalVerifier(ring, **kw), ring


def refused(verifier, approval, o, now=T0):
    with pytest.raises(ApprovalRefused) as exc:
        verifier.verify(approval, o, now)
    return exc.value.reason


def test_genuine_approval_passes_once():
    signer, verifier, _ = setup()
    o = order()
    a = signer.sign(o, AGENT, 7, T0)
    assert verifier.verify(a, o, T0 + 1000) is None
    assert refused(verifier, a, o, T0 + 2000) == ap.APPROVAL_REPLAYED


def test_missing_approval_is_refused():
    _, verifier, _ = setup()
    assert refused(verifier, None, order()) == ap.APPROVAL_MISSING


def test_forged_with_another_key_is_refused():
    _, verifier, _ = setup()
    o = order()
    forger = ApprovalSigner(ApprovalKeyring("k1", os.urandom(32)))
    assert refused(verifier, forger.sign(o, AGENT, 1, T0), o) == ap.APPROVAL_FORGED


def test_forged_mac_and_unknown_key_are_refused():
    signer, verifier, _ = setup()
    o = order()
    a = signer.sign(o, AGENT, 1, T0)
    assert refused(verifier, msgspec.structs.replace(a, mac=b"\x00" * 32), o) == ap.APPROVAL_FORGED
    assert refused(verifier, msgspec.structs.replace(a, mac=b""), o) == ap.APPROVAL_FORGED
    assert refused(verifier, msgspec.structs.replace(a, key_id="k9"), o) == ap.APPROVAL_UNKNOWN_KEY


@pytest.mark.parametrize("field,value", [
    ("principal", AGENT2), ("cl_ord_id", "other"), ("symbol", "MSFT"), ("side", "sell"), ("qty", 101),
    ("price", 1_000_100), ("limits_version", 2), ("issued_ns", T0 + 1), ("nonce", b"\x02" * 16),
])
def test_altering_any_approval_field_breaks_the_mac(field, value):
    signer, verifier, _ = setup()
    o = order()
    a = signer.sign(o, AGENT, 1, T0)
    assert refused(verifier, msgspec.structs.replace(a, **{field: value}), o) == ap.APPROVAL_FORGED


@pytest.mark.parametrize("field,value", [
    ("cl_ord_id", "other"), ("agent", AGENT2), ("symbol", "MSFT"), ("side", "sell"), ("qty", 10_000),
    ("price", 1_100_000),
])
def test_an_order_that_differs_from_the_approval_is_refused(field, value):
    signer, verifier, _ = setup()
    o = order()
    a = signer.sign(o, AGENT, 1, T0)
    assert refused(verifier, a, msgspec.structs.replace(o, **{field: value})) == ap.APPROVAL_ALTERED
    # and the genuine pair still passes afterwards (the refusal consumed nothing)
    assert verifier.verify(a, o, T0) is None


def test_expired_and_future_approvals_are_refused():
    signer, verifier, _ = setup(validity_ns=2 * SEC, skew_ns=SEC // 10)
    o = order()
    assert refused(verifier, signer.sign(o, AGENT, 1, T0), o, T0 + 2 * SEC) == ap.APPROVAL_EXPIRED
    assert refused(verifier, signer.sign(o, AGENT, 1, T0 + SEC), o, T0) == ap.APPROVAL_FUTURE


def test_old_limits_version_is_refused():
    signer, verifier, _ = setup(min_limits_version=3)
    o = order()
    assert refused(verifier, signer.sign(o, AGENT, 2, T0), o) == ap.APPROVAL_EXPIRED


def test_replay_memory_is_bounded_by_the_validity_window():
    signer, verifier, _ = setup(validity_ns=SEC)
    for i in range(5):
        o = order()
        verifier.verify(signer.sign(o, AGENT, 1, T0 + i), o, T0 + i)
    assert verifier.seen_count() == 5
    o = order()
    verifier.verify(signer.sign(o, AGENT, 1, T0 + 3 * SEC), o, T0 + 3 * SEC)
    assert verifier.seen_count() == 1


def test_full_replay_memory_refuses_instead_of_forgetting():
    signer, verifier, _ = setup(max_seen=2)
    for _ in range(2):
        o = order()
        verifier.verify(signer.sign(o, AGENT, 1, T0), o, T0)
    o = order()
    assert refused(verifier, signer.sign(o, AGENT, 1, T0), o) == ap.APPROVAL_SEEN_FULL


def test_key_rotation_keeps_the_previous_key_until_retired():
    signer, verifier, ring = setup()
    o_old = order()
    old = signer.sign(o_old, AGENT, 1, T0)
    ring.rotate("k2", b"\x02" * 32)
    o_new = order()
    new = signer.sign(o_new, AGENT, 1, T0)
    assert new.key_id == "k2"
    verifier.verify(old, o_old, T0)
    verifier.verify(new, o_new, T0)
    ring.rotate("k3", b"\x03" * 32)  # max 2 keys: k1 retired
    o = order()
    a1 = ApprovalSigner(ApprovalKeyring("k1", b"\x01" * 32)).sign(o, AGENT, 1, T0)
    assert refused(verifier, a1, o) == ap.APPROVAL_UNKNOWN_KEY
    with pytest.raises(ValueError):
        ring.retire("k3")
    with pytest.raises(ValueError):
        ring.rotate("k4", b"short")


def test_payload_encoding_is_unambiguous():
    args = dict(key_id="k", side="buy", qty=1, price=2, limits_version=3, issued_ns=4, nonce=b"n")
    a = ap.approval_payload(principal="ab", cl_ord_id="c", symbol="S", **args)
    b = ap.approval_payload(principal="a", cl_ord_id="bc", symbol="S", **args)
    assert a != b


def test_malformed_approval_fields_are_refused_not_crashing():
    signer, verifier, _ = setup()
    o = order()
    a = signer.sign(o, AGENT, 1, T0)
    for field, value in (("mac", "not-bytes"), ("nonce", None), ("qty", "100"), ("key_id", ["k1"])):
        bad = msgspec.structs.replace(a, **{field: value})
        assert refused(verifier, bad, o) in (ap.APPROVAL_FORGED, ap.APPROVAL_UNKNOWN_KEY)
