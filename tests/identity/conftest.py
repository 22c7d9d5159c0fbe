"""Shared fixtures of the identity tests: a fake clock and CAs built once per module."""

from __future__ import annotations

import pytest

from trustfabric.clock import FakeClock
from trustfabric.identity.ca import CertificateAuthority

T0 = 1_790_000_000.0
PROD = "prod.acme.example"
DEV = "dev.acme.example"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture(scope="module")
def prod_ca() -> CertificateAuthority:
    return CertificateAuthority.create(PROD, T0 - 10)


@pytest.fixture(scope="module")
def dev_ca() -> CertificateAuthority:
    return CertificateAuthority.create(DEV, T0 - 10)
