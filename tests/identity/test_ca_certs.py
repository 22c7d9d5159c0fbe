"""CA issuance, certificate checks and CA rotation: each check shown refusing."""

from __future__ import annotations

import os
import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from trustfabric.identity.ca import CertificateAuthority
from trustfabric.identity.certs import load_certificates, peer_spiffe_id, verify_chain, x5t_s256
from trustfabric.identity.errors import CertificateError, IdentityError
from trustfabric.identity.revocation import RevocationSet
from trustfabric.identity.spiffe import SpiffeId
from trustfabric.identity.workload import WorkloadCredentials, issue_for_test, new_key_and_csr

from .conftest import DEV, PROD, T0

RISK = SpiffeId.workload(PROD, "trading", "risk")


def test_issued_certificate_profile(prod_ca: CertificateAuthority) -> None:
    key, csr = new_key_and_csr(RISK)
    cert = prod_ca.issue(csr, RISK, T0)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [str(RISK)]
    assert len(list(san)) == 1
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH}
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca is False
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.digital_signature and not ku.key_encipherment and not ku.key_cert_sign
    assert cert.not_valid_after_utc.timestamp() - cert.not_valid_before_utc.timestamp() == 3600
    assert cert.issuer == prod_ca.current.issuing_cert.subject
    assert cert.public_key() == key.public_key()
    assert peer_spiffe_id(cert) == RISK
    assert verify_chain(cert, prod_ca.bundle_pem(), T0 + 1, PROD) == RISK


def test_ca_refuses_other_domain_long_ttl_and_bad_csr(prod_ca: CertificateAuthority) -> None:
    _, csr = new_key_and_csr(RISK)
    with pytest.raises(CertificateError) as info:
        prod_ca.issue(csr, SpiffeId.workload(DEV, "trading", "risk"), T0)
    assert info.value.reason == "cert.wrong_trust_domain"
    with pytest.raises(CertificateError) as info:
        prod_ca.issue(csr, RISK, T0, ttl_s=3601)
    assert info.value.reason == "cert.ttl"
    ed_key = ed25519.Ed25519PrivateKey.generate()
    ed_csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).sign(ed_key, None)
    with pytest.raises(CertificateError) as info:
        prod_ca.issue(ed_csr, RISK, T0)
    assert info.value.reason == "cert.csr"


def test_wrong_trust_domain_is_refused(prod_ca: CertificateAuthority, dev_ca: CertificateAuthority) -> None:
    dev = issue_for_test(dev_ca, SpiffeId.workload(DEV, "trading", "risk"), T0)
    with pytest.raises(CertificateError) as info:
        verify_chain(dev.certificate, prod_ca.bundle_pem(), T0 + 1, PROD)
    assert info.value.reason == "cert.wrong_trust_domain"


def test_cert_from_foreign_ca_claiming_our_domain_is_untrusted(prod_ca: CertificateAuthority) -> None:
    rogue = CertificateAuthority.create(PROD, T0 - 10)  # same name, other keys
    forged = issue_for_test(rogue, RISK, T0)
    with pytest.raises(CertificateError) as info:
        verify_chain(forged.certificate, prod_ca.bundle_pem(), T0 + 1, PROD)
    assert info.value.reason == "cert.untrusted"


def test_expired_and_not_yet_valid(prod_ca: CertificateAuthority) -> None:
    creds = issue_for_test(prod_ca, RISK, T0, ttl_s=600)
    with pytest.raises(CertificateError) as info:
        verify_chain(creds.certificate, prod_ca.bundle_pem(), T0 + 601, PROD)
    assert info.value.reason == "cert.expired"
    with pytest.raises(CertificateError) as info:
        verify_chain(creds.certificate, prod_ca.bundle_pem(), T0 - 5, PROD)
    assert info.value.reason == "cert.not_yet_valid"


def _self_made_leaf(uris: list[str], ca: CertificateAuthority) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    import datetime as dt

    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "x")]))
        .issuer_name(ca.current.issuing_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(dt.datetime.fromtimestamp(T0 - 1, dt.timezone.utc))
        .not_valid_after(dt.datetime.fromtimestamp(T0 + 600, dt.timezone.utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    )
    if uris:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(u) for u in uris]), critical=False
        )
    return builder.sign(ca.current.issuing_key, hashes.SHA256())


def test_two_uri_sans_refused(prod_ca: CertificateAuthority) -> None:
    cert = _self_made_leaf([str(RISK), f"spiffe://{PROD}/trading/oms"], prod_ca)
    with pytest.raises(CertificateError) as info:
        peer_spiffe_id(cert)
    assert info.value.reason == "cert.san"
    with pytest.raises(CertificateError) as info:
        verify_chain(cert, prod_ca.bundle_pem(), T0, PROD)
    assert info.value.reason == "cert.san"


def test_no_san_and_non_spiffe_san_refused(prod_ca: CertificateAuthority) -> None:
    for uris in ([], ["https://prod.acme.example/x"]):
        with pytest.raises(CertificateError) as info:
            peer_spiffe_id(_self_made_leaf(uris, prod_ca))
        assert info.value.reason == "cert.san"


def test_revoked_serial_and_quarantined_id(prod_ca: CertificateAuthority) -> None:
    creds = issue_for_test(prod_ca, RISK, T0)
    other = issue_for_test(prod_ca, SpiffeId.workload(PROD, "trading", "oms"), T0)
    revocations = RevocationSet()
    assert verify_chain(creds.certificate, prod_ca.bundle_pem(), T0, PROD, revocations=revocations) == RISK
    revocations.revoke_serial(creds.serial, T0)
    with pytest.raises(CertificateError) as info:
        verify_chain(creds.certificate, prod_ca.bundle_pem(), T0, PROD, revocations=revocations)
    assert info.value.reason == "cert.revoked"
    verify_chain(other.certificate, prod_ca.bundle_pem(), T0, PROD, revocations=revocations)
    revocations.revoke_spiffe_id(other.spiffe_id, T0)
    with pytest.raises(CertificateError) as info:
        verify_chain(other.certificate, prod_ca.bundle_pem(), T0, PROD, revocations=revocations)
    assert info.value.reason == "cert.revoked"


def test_ca_certificate_cannot_pose_as_workload(prod_ca: CertificateAuthority) -> None:
    with pytest.raises(IdentityError):
        verify_chain(prod_ca.current.issuing_cert, prod_ca.bundle_pem(), T0, PROD)


def test_x5t_s256_is_rfc8705_form(prod_ca: CertificateAuthority) -> None:
    import base64
    import hashlib

    creds = issue_for_test(prod_ca, RISK, T0)
    thumb = x5t_s256(creds.cert_der)
    assert "=" not in thumb and len(thumb) == 43
    assert base64.urlsafe_b64decode(thumb + "=") == hashlib.sha256(creds.cert_der).digest()


def test_rotation_overlap_window(tmp_path) -> None:
    ca = CertificateAuthority.create(PROD, T0)
    before = issue_for_test(ca, RISK, T0 + 10)
    ca.rotate(T0 + 100, overlap_s=1800)
    after = issue_for_test(ca, RISK, T0 + 110)
    assert after.certificate.issuer != before.certificate.issuer
    assert len(load_certificates(ca.bundle_pem(T0 + 200))) == 4
    # during the overlap both verify against the domain bundle
    for creds in (before, after):
        verify_chain(creds.certificate, ca.bundle_pem(T0 + 200), T0 + 200, PROD)
    # after it, the old generation is out of the bundle and its certificates are refused
    late_bundle = ca.bundle_pem(T0 + 1901)
    assert len(load_certificates(late_bundle)) == 2
    verify_chain(after.certificate, late_bundle, T0 + 1901, PROD)
    with pytest.raises(CertificateError) as info:
        verify_chain(before.certificate, late_bundle, T0 + 1901, PROD)
    assert info.value.reason == "cert.untrusted"


def test_save_and_load_keep_keys_private(tmp_path) -> None:
    ca = CertificateAuthority.create(PROD, T0)
    ca.rotate(T0 + 5, overlap_s=60)
    ca.save(tmp_path / "ca")
    keys = sorted((tmp_path / "ca").glob("*.key"))
    assert len(keys) == 4
    for key in keys:
        assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    loaded = CertificateAuthority.load(tmp_path / "ca")
    assert loaded.bundle_pem() == ca.bundle_pem()
    creds = issue_for_test(loaded, RISK, T0 + 10)
    verify_chain(creds.certificate, ca.bundle_pem(T0 + 10), T0 + 10, PROD)
    os.chmod(keys[0], 0o644)
    with pytest.raises(IdentityError) as info:
        CertificateAuthority.load(tmp_path / "ca")
    assert info.value.reason == "ca.key_exposed"
    with pytest.raises(IdentityError) as info:
        CertificateAuthority.load(tmp_path / "nowhere")
    assert info.value.reason == "ca.missing"


def test_credentials_write_and_load(tmp_path, prod_ca: CertificateAuthority) -> None:
    creds = issue_for_test(prod_ca, RISK, T0, ttl_s=900)
    creds.write(tmp_path / "w")
    assert stat.S_IMODE(os.stat(tmp_path / "w" / "key.pem").st_mode) == 0o600
    loaded = WorkloadCredentials.load(tmp_path / "w")
    assert loaded == creds
    assert loaded.spiffe_id == RISK
    assert loaded.not_after == T0 + 900
    assert len(loaded.fingerprint_sha256) == 64
    assert len(loaded.chain) == 2
    with pytest.raises(CertificateError) as info:
        WorkloadCredentials.load(tmp_path / "missing")
    assert info.value.reason == "cert.missing"


def test_garbage_pem_is_refused() -> None:
    with pytest.raises(CertificateError) as info:
        load_certificates(b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    assert info.value.reason == "cert.malformed"


def test_a_revocation_set_that_cannot_answer_is_a_refusal(prod_ca: CertificateAuthority) -> None:
    class Unreachable:
        def is_revoked(self, serial: int, spiffe_id: str) -> bool:
            raise OSError("revocation store down")

    creds = issue_for_test(prod_ca, RISK, T0)
    with pytest.raises(CertificateError) as info:
        verify_chain(creds.certificate, prod_ca.bundle_pem(), T0, PROD, revocations=Unreachable())
    assert info.value.reason == "cert.revoked"
