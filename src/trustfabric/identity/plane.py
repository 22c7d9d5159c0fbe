"""The identity plane wired to its state: the thin shell the CLI and the demo use.

:class:`IdentityPlane` opens the identity store under a home directory
(``identity.db``), loads the per-domain CAs (keys as 0600 files under
``ca/<trust-domain>/``), and hands out the pure pieces - attesting issuer,
revocation set, token key ring, issuer and verifier, user directory - already
connected to the store and to one audit emitter - and the token-key lifecycle
(:meth:`rotate_token_key`, :meth:`revoke_token_key`). Events go to the durable audit
spool ``spool/identity/`` (collected into the central log by the audit part),
or to any sink passed in.
"""

from __future__ import annotations

from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from trustfabric.audit.events import Emitter, EventSink, Kind
from trustfabric.clock import SYSTEM_CLOCK, Clock
from trustfabric.identity.attestation import AttestingIssuer, Releases
from trustfabric.identity.ca import DEFAULT_CA_TTL_S, CertificateAuthority
from trustfabric.identity.errors import CaError, TokenError
from trustfabric.identity.revocation import RevocationEntry, RevocationSet
from trustfabric.identity.certs import fingerprint_sha256
from trustfabric.identity.spiffe import SpiffeId, validate_trust_domain
from trustfabric.identity.store import CertificateRow, open_identity_store
from trustfabric.identity.tokens import KeyRing, ReplayCache, SigningKey, TokenIssuer, TokenVerifier
from trustfabric.identity.users import UserDirectory
from trustfabric.signals.posture import HostKeyRegistry
from trustfabric.audit.spool import Spool

__all__ = ["IdentityPlane", "DEFAULT_FIRM", "ENVIRONMENTS", "AUDIT_SOURCE"]

DEFAULT_FIRM = "acme.example"
ENVIRONMENTS = ("prod", "test", "dev")
AUDIT_SOURCE = "identity"


class IdentityPlane:
    def __init__(self, home: Path | str, *, clock: Clock = SYSTEM_CLOCK, sink: EventSink | None = None,
                 audit_source: str = AUDIT_SOURCE) -> None:
        self.home = Path(home)
        self.home.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.clock = clock
        self.store = open_identity_store(self.home)
        self._spool = None
        start_seq = 0
        if sink is None:
            self._spool = Spool(self.home / "spool" / audit_source, audit_source, clock=clock)
            sink = self._spool
            start_seq = self._spool.emitter_start_seq()
        self.emitter = Emitter(audit_source, sink, clock, start_seq=start_seq)
        self._cas: dict[str, CertificateAuthority] = {}
        self.revocations = RevocationSet(self.store)
        self.releases = Releases(self.store)
        self.keys = KeyRing(self.store, clock=clock, emitter=self.emitter)

    # -- lifecycle -------------------------------------------------------------------------

    def close(self) -> None:
        """Make every event durable and release the store."""
        if self._spool is not None:
            self._spool.close()
            self._spool = None
        self.store.close()

    def __enter__(self) -> "IdentityPlane":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- CAs -------------------------------------------------------------------------------

    @property
    def firm(self) -> str:
        return self.store.get_meta("firm", DEFAULT_FIRM)

    @property
    def issuer_name(self) -> str:
        return f"https://idp.{self.firm}"

    def init(self, firm: str = DEFAULT_FIRM, *, ca_ttl_s: int = DEFAULT_CA_TTL_S,
             operator: str = "operator") -> list[tuple[str, bool]]:
        """Create the CAs of ``prod.<firm>``, ``test.<firm>``, ``dev.<firm>`` (existing ones are kept).

        Returns ``(trust_domain, created)`` pairs. Also makes the first token signing key.
        """
        validate_trust_domain(firm)
        now = self.clock.now()
        result = []
        for env in ENVIRONMENTS:
            domain = f"{env}.{firm}"
            if self.store.ca_directory(domain) is not None:
                result.append((domain, False))
                continue
            ca = CertificateAuthority.create(domain, now, ca_ttl_s)
            self.save_ca(ca)
            self.emitter.emit(Kind.ADMIN_ACTION, principal=operator, action="ca.init", resource=domain,
                              decision="allow", trust_domain=domain)
            result.append((domain, True))
        self.store.set_meta("firm", firm)
        self.keys.ensure(now)
        return result

    def save_ca(self, ca: CertificateAuthority) -> None:
        if self.store.holds_ca_keys:  # PostgreSQL: sealed in the store, shared by every replica
            self.store.put_ca_material(ca.trust_domain, ca.to_files())  # type: ignore[attr-defined]
        else:
            directory = self.home / "ca" / ca.trust_domain
            ca.save(directory)
            self.store.put_ca(ca.trust_domain, str(directory))
        self._cas[ca.trust_domain] = ca

    def ca(self, trust_domain: str) -> CertificateAuthority:
        if trust_domain not in self._cas:
            if self.store.holds_ca_keys:
                files = self.store.ca_material(trust_domain)  # type: ignore[attr-defined]
                if files is None:
                    raise CaError(f"no CA for {trust_domain}; run `trustfabric ca init`", reason="ca.unknown_domain")
                self._cas[trust_domain] = CertificateAuthority.from_files(files, f"the store ({trust_domain})")
            else:
                directory = self.store.ca_directory(trust_domain)
                if directory is None:
                    raise CaError(f"no CA for {trust_domain}; run `trustfabric ca init`",
                                  reason="ca.unknown_domain")
                self._cas[trust_domain] = CertificateAuthority.load(directory)
        return self._cas[trust_domain]

    def cas(self) -> dict[str, CertificateAuthority]:
        return {domain: self.ca(domain) for domain, _ in self.store.list_cas()}

    def rotate_ca(self, trust_domain: str, overlap_s: float, operator: str = "operator") -> CertificateAuthority:
        ca = self.ca(trust_domain)
        ca.rotate(self.clock.now(), overlap_s)
        self.save_ca(ca)
        self.emitter.emit(Kind.CA_ROTATED, principal=operator, resource=trust_domain, trust_domain=trust_domain,
                          decision="allow", detail={"generation": ca.current.number, "overlap_s": overlap_s})
        return ca

    # -- attestation -----------------------------------------------------------------------

    def register_host(self, host: str, public_key: Ed25519PublicKey) -> None:
        raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self.store.put_host_key(host, raw)

    def host_keys(self) -> HostKeyRegistry:
        registry = HostKeyRegistry()
        for host, raw in self.store.list_host_keys():
            registry.register(host, Ed25519PublicKey.from_public_bytes(raw))
        return registry

    def attesting_issuer(self) -> AttestingIssuer:
        return AttestingIssuer(self.cas(), self.releases, self.host_keys(), self.emitter,
                               record=self.record_certificate)

    def record_certificate(self, cert: x509.Certificate, spiffe_id: SpiffeId, attested: bool) -> None:
        """Put an issued workload certificate in the store's inventory (``trustfabric ca certs``); a store that
        cannot take it refuses the issuance (a certificate nobody can find is not handed out)."""
        self.store.add_certificate(CertificateRow(
            format(cert.serial_number, "x"), str(spiffe_id), cert.not_valid_after_utc.timestamp(),
            fingerprint_sha256(cert), self.clock.now(), attested))

    # -- tokens and people -----------------------------------------------------------------

    def token_issuer(self) -> TokenIssuer:
        self.keys.ensure(self.clock.now())
        return TokenIssuer(self.keys, self.issuer_name, emitter=self.emitter)

    def token_verifier(self, replay_cache: ReplayCache | None = None) -> TokenVerifier:
        return TokenVerifier(self.keys, self.issuer_name, clock=self.clock, replay_cache=replay_cache,
                             revocations=self.revocations, emitter=self.emitter)

    def rotate_token_key(self, operator: str = "operator") -> SigningKey:
        """A new active signing key; the previous one verifies for its retain window, then is removed."""
        key = self.keys.rotate(self.clock.now())
        self.emitter.emit(Kind.ADMIN_ACTION, principal=operator, action="token.rotate_key", resource=key.kid,
                          decision="allow", detail={"retain_s": self.keys.retain_s})
        return key

    def revoke_token_key(self, kid: str, operator: str = "operator") -> RevocationEntry:
        """Remove the retired signing key ``kid`` now (store, ring, JWKS) and record the revocation, which
        the revocation set pushes to every subscriber: enforcement points close the sessions its tokens
        admitted, verifiers drop it. The active key is refused (``token.key_active``): rotate first."""
        now = self.clock.now()
        try:
            self.keys.revoke(kid, now)
        except TokenError as exc:
            self.emitter.emit(Kind.ADMIN_ACTION, principal=operator, action="token.revoke_key",
                              resource=str(kid)[:200], decision="deny", reason=exc.reason)
            raise
        entry = self.revocations.revoke_token_key(kid, now)
        self.emitter.emit(Kind.ADMIN_ACTION, principal=operator, action="token.revoke_key", resource=kid,
                          decision="allow", detail={"version": entry.version})
        return entry

    def users(self, **kwargs) -> UserDirectory:
        return UserDirectory(self.store, self.emitter, **kwargs)
