"""Issued credentials work in a real TLS 1.3 mutual handshake (OpenSSL via ssl).

A prod server refuses a dev client at the handshake: the bundles keep the trust
domains apart.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time

from trustfabric.identity.ca import CertificateAuthority
from trustfabric.identity.certs import load_certificate, peer_spiffe_id
from trustfabric.identity.spiffe import SpiffeId
from trustfabric.identity.workload import issue_for_test


def _context(creds_dir, server: bool) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(creds_dir / "cert.pem", creds_dir / "key.pem")
    ctx.load_verify_locations(creds_dir / "bundle.pem")
    ctx.verify_mode = ssl.CERT_REQUIRED
    if not server:
        ctx.check_hostname = False
    return ctx


def _handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext):
    a, b = socket.socketpair()
    a.settimeout(5)
    b.settimeout(5)
    result: dict = {}

    def serve() -> None:
        try:
            with server_ctx.wrap_socket(a, server_side=True) as tls:
                result["peer"] = tls.getpeercert(binary_form=True)
        except (ssl.SSLError, OSError) as exc:
            result["server_error"] = exc

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with client_ctx.wrap_socket(b) as tls:
            result["server_cert"] = tls.getpeercert(binary_form=True)
    except (ssl.SSLError, OSError) as exc:
        result["client_error"] = exc
    thread.join(5)
    return result


def test_mutual_tls_within_one_domain_and_refused_across(tmp_path) -> None:
    now = time.time()
    prod = CertificateAuthority.create("prod.acme.example", now - 60)
    dev = CertificateAuthority.create("dev.acme.example", now - 60)
    issue_for_test(prod, SpiffeId.parse("spiffe://prod.acme.example/trading/oms"), now).write(tmp_path / "srv")
    issue_for_test(prod, SpiffeId.parse("spiffe://prod.acme.example/trading/algo"), now).write(tmp_path / "cli")
    issue_for_test(dev, SpiffeId.parse("spiffe://dev.acme.example/trading/algo"), now).write(tmp_path / "dev")

    ok = _handshake(_context(tmp_path / "srv", True), _context(tmp_path / "cli", False))
    assert "server_error" not in ok and "client_error" not in ok
    assert str(peer_spiffe_id(load_certificate(ok["peer"]))) == "spiffe://prod.acme.example/trading/algo"

    refused = _handshake(_context(tmp_path / "srv", True), _context(tmp_path / "dev", False))
    assert "server_error" in refused or "client_error" in refused
    assert "peer" not in refused
