"""Shared fixtures: a prod trust domain with its CA (the real identity-plane CA), workload credentials."""

from __future__ import annotations

import time

import pytest

from trustfabric.audit.events import Emitter, MemorySink
from trustfabric.identity.ca import CertificateAuthority
from trustfabric.identity.revocation import RevocationSet
from trustfabric.identity.workload import issue_for_test
from trustfabric.transport.connection import Limits
from trustfabric.transport.tls import TLSConfig

DOMAIN = "prod.acme"
SERVER_ID = f"spiffe://{DOMAIN}/risk/pretrade"
CLIENT_ID = f"spiffe://{DOMAIN}/algo/momentum"


@pytest.fixture(scope="session")
def ca() -> CertificateAuthority:
    return CertificateAuthority.create(DOMAIN, time.time() - 3600, ttl_s=7 * 86400)


@pytest.fixture(scope="session")
def other_ca() -> CertificateAuthority:
    return CertificateAuthority.create("test.acme", time.time() - 3600, ttl_s=7 * 86400)


@pytest.fixture(scope="session")
def server_creds(ca):
    return issue_for_test(ca, SERVER_ID, time.time() - 60, ttl_s=3600)


@pytest.fixture(scope="session")
def client_creds(ca):
    return issue_for_test(ca, CLIENT_ID, time.time() - 60, ttl_s=3600)


@pytest.fixture
def revocation() -> RevocationSet:
    return RevocationSet()


@pytest.fixture
def sink() -> MemorySink:
    return MemorySink()


@pytest.fixture
def emitter(sink) -> Emitter:
    return Emitter("transport-test", sink)


@pytest.fixture
def server_tls(server_creds, revocation) -> TLSConfig:
    return TLSConfig(server_creds, revocation=revocation)


@pytest.fixture
def client_tls(client_creds) -> TLSConfig:
    return TLSConfig(client_creds)


FAST_LIMITS = Limits(handshake_timeout_s=3.0, frame_timeout_s=0.4, idle_timeout_s=5.0, tick_s=0.05)

