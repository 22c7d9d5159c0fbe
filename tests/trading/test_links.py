"""A link retries what may pass on a new attempt and gives up at once on a refusal (the error's ``retryable``)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from trustfabric.control.errors import ControlRefused
from trustfabric.control.server import PERIMETER, ZERO_TRUST
from trustfabric.trading.errors import LinkDown
from trustfabric.trading.services.links import PeerLink


def _runtime(mode: str, on_control=None) -> SimpleNamespace:
    async def control_on_current() -> None:
        if on_control is not None:
            on_control()

    return SimpleNamespace(mode=mode, ports={"oms": 9}, tls=None, expired_cert_uses=0,  # nothing listens on :9
                           control_on_current=control_on_current, name="algo-momentum", addresses={},
                           address_of=lambda _service: "127.0.0.1")


async def test_an_unreachable_peer_is_retried_with_backoff_until_the_deadline():
    link = PeerLink(_runtime(PERIMETER), "oms")
    with pytest.raises(LinkDown) as info:
        await link.ensure(timeout_s=0.3)
    assert info.value.reason == "link.down" and link.failures >= 3  # tried again, not given up on the first
    assert not link.up


async def test_a_refusal_is_final_at_the_first_attempt():
    def refuse() -> None:
        raise ControlRefused("no", reason="control.audience_not_permitted")

    link = PeerLink(_runtime(ZERO_TRUST, refuse), "oms")
    with pytest.raises(LinkDown) as info:
        await link.ensure(timeout_s=5.0)
    assert info.value.reason == "control.audience_not_permitted" and link.failures == 1


async def test_an_unreachable_control_plane_is_retried():
    def unreachable() -> None:
        raise ControlRefused("down", reason="control.unreachable", retryable=True)

    link = PeerLink(_runtime(ZERO_TRUST, unreachable), "oms")
    with pytest.raises(LinkDown) as info:
        await link.ensure(timeout_s=0.3)
    assert info.value.reason == "link.down" and link.failures >= 3 and link.last_error == "control.unreachable"
