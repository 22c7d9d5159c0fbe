"""``retryable`` is a property of the error, set by its class or where it is raised: a caller
retries on it and treats every other refusal as final. Each check shows both sides."""

from __future__ import annotations

import asyncio

import pytest

from trustfabric.control.client import ControlClient, operator_request
from trustfabric.control.errors import ControlRefused
from trustfabric.enforcement.errors import EngineUnreachable, SessionRefused
from trustfabric.errors import TrustFabricError
from trustfabric.trading.errors import LinkDown
from trustfabric.transport import errors as E


def test_transient_transport_failures_are_retryable_and_refused_identities_are_not():
    assert E.ConnectionClosed("x").retryable and E.TransportTimeout("x").retryable
    assert E.AdmissionRefused("x", reason="admission.source_full").retryable
    assert E.HandshakeRefused("peer went away").retryable  # handshake.failed: a protocol failure
    for reason in (E.CERT_REVOKED, E.CERT_EXPIRED, E.CERT_WRONG_TRUST_DOMAIN, E.PEER_UNEXPECTED, E.CERT_MISSING):
        assert not E.HandshakeRefused("refused", reason=reason).retryable, reason


def test_refusals_are_final_by_default_and_the_raiser_can_say_otherwise():
    assert not TrustFabricError("x").retryable
    assert not SessionRefused("x", reason="session.token_invalid").retryable
    assert not LinkDown("x", reason="session.peer_quarantined").retryable
    assert not ControlRefused("x", reason="control.audience_not_permitted").retryable
    assert EngineUnreachable("x").retryable
    assert ControlRefused("x", reason="control.unreachable", retryable=True).retryable


async def test_an_unreachable_control_plane_is_retryable():
    with pytest.raises(ControlRefused) as info:  # nothing listens on port 9 of loopback
        await operator_request("127.0.0.1", 9, bundle_pem=b"", control_id="spiffe://x/control", request=None,
                               timeout_s=1.0)
    assert info.value.reason == "control.unreachable" and info.value.retryable
    client = ControlClient("127.0.0.1", 9, None, None, "algo")
    with pytest.raises(ControlRefused) as info:  # no channel: the request is not sent
        await client.token("oms")
    assert info.value.retryable


async def test_a_control_channel_closed_with_the_servers_refusal_is_final():
    client = ControlClient("127.0.0.1", 9, None, None, "algo")
    client.subscribed = asyncio.get_running_loop().create_future()
    client._refusal = "control.not_owner"
    client._on_close("transport.closed")
    with pytest.raises(ControlRefused) as info:
        client.subscribed.result()
    assert info.value.reason == "control.not_owner" and not info.value.retryable
    again = ControlClient("127.0.0.1", 9, None, None, "algo")
    again.subscribed = asyncio.get_running_loop().create_future()
    again._on_close("transport.reset")  # closed with no refusal: the plane may be back
    with pytest.raises(ControlRefused) as info:
        again.subscribed.result()
    assert info.value.reason == "control.unreachable" and info.value.retryable
