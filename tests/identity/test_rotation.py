"""Renewal at half TTL over many periods, driven by a fake clock; fails closed when the CA fails."""

from __future__ import annotations

import random

import pytest

from trustfabric.clock import FakeClock
from trustfabric.identity.ca import CertificateAuthority
from trustfabric.identity.certs import verify_chain
from trustfabric.identity.errors import CaError, CertificateError
from trustfabric.identity.rotation import CertificateRenewer
from trustfabric.identity.spiffe import SpiffeId
from trustfabric.identity.workload import issue_for_test

from .conftest import PROD, T0

SID = SpiffeId.workload(PROD, "trading", "oms")
TTL = 600


def test_always_a_valid_certificate_over_many_periods() -> None:
    clock = FakeClock(T0)
    ca = CertificateAuthority.create(PROD, T0 - 1)
    renewer = CertificateRenewer(lambda now: issue_for_test(ca, SID, now, TTL), clock)
    rng = random.Random(7)
    presented_serials = set()
    while clock.now() < T0 + 100 * TTL:
        clock.advance(rng.uniform(1, TTL / 4))
        renewer.tick()
        creds = renewer.current()
        assert creds.valid_at(clock.now())
        verify_chain(creds.certificate, ca.bundle_pem(clock.now()), clock.now(), PROD)
        # never presented past the renewal point by more than one tick
        assert clock.now() - creds.not_before <= TTL / 2 + TTL / 4
        presented_serials.add(creds.serial)
    assert renewer.renewals >= 100
    assert len(presented_serials) == renewer.renewals


def test_renewal_across_a_ca_rotation() -> None:
    clock = FakeClock(T0)
    ca = CertificateAuthority.create(PROD, T0 - 1)
    renewer = CertificateRenewer(lambda now: issue_for_test(ca, SID, now, TTL), clock)
    for step in range(40):
        clock.advance(TTL / 5)
        if step == 10:
            ca.rotate(clock.now(), overlap_s=TTL)
        renewer.tick()
        creds = renewer.current()
        assert verify_chain(creds.certificate, ca.bundle_pem(clock.now()), clock.now(), PROD) == SID
    assert renewer.renewals >= 10
    assert renewer.current().certificate.issuer == ca.current.issuing_cert.subject  # renewed under the new CA


def test_failing_renewal_keeps_the_old_until_expiry_then_refuses() -> None:
    clock = FakeClock(T0)
    ca = CertificateAuthority.create(PROD, T0 - 1)
    healthy = {"up": True}

    def obtain(now: float):
        if not healthy["up"]:
            raise CaError("CA unreachable", reason="ca.unreachable")
        return issue_for_test(ca, SID, now, TTL)

    renewer = CertificateRenewer(obtain, clock, retry_s=30)
    first = renewer.current()
    healthy["up"] = False
    clock.advance(TTL * 0.6)
    assert renewer.tick() is False and renewer.failures == 1
    assert renewer.current() is first  # still valid, still presented
    clock.advance(TTL * 0.5)
    renewer.tick()
    with pytest.raises(CertificateError) as info:
        renewer.current()  # expired: nothing presented
    assert info.value.reason == "cert.expired"
    healthy["up"] = True
    clock.advance(30)
    assert renewer.tick() is True
    assert renewer.current().valid_at(clock.now())


def test_listeners_hear_new_credentials() -> None:
    clock = FakeClock(T0)
    ca = CertificateAuthority.create(PROD, T0 - 1)
    renewer = CertificateRenewer(lambda now: issue_for_test(ca, SID, now, TTL), clock)
    heard = []
    renewer.subscribe(heard.append)
    clock.advance(TTL / 2 - 1)
    assert renewer.tick() is False
    clock.advance(2)
    assert renewer.tick() is True
    assert heard == [renewer.current()]


async def test_run_loop_renews_on_the_injected_clock() -> None:
    import asyncio

    clock = FakeClock(T0)
    ca = CertificateAuthority.create(PROD, T0 - 1)
    renewer = CertificateRenewer(lambda now: issue_for_test(ca, SID, now, TTL), clock, retry_s=60)
    stop = asyncio.Event()
    sleeps: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)
        clock.advance(seconds)
        assert renewer.current().valid_at(clock.now())
        if len(sleeps) >= 50:
            stop.set()

    await asyncio.wait_for(renewer.run(stop, sleep=fake_sleep), timeout=10)
    assert renewer.renewals >= 5
    assert all(0 < s <= 60 for s in sleeps)
