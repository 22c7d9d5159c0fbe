"""Identity: PKI and ID management (NIST 800-207).

One CA per trust domain (prod, test, dev), short-lived X.509 workload certificates
carrying a SPIFFE ID and issued only after attestation, human users with argon2id
passwords and TOTP MFA, and signed, short-lived, certificate-bound access tokens.

Modules (pure unless noted):

    spiffe        SpiffeId: strict parse/format of spiffe://<trust-domain>/<path>
    ca            CertificateAuthority: root + issuing generations, issue, rotate, bundle
    certs         peer_spiffe_id, x5t_s256, verify_chain (the enforcement point's check)
    workload      new_key_and_csr, WorkloadCredentials (cert/key/bundle files), issue_for_test
    attestation   AttestingIssuer: promoted code digest + signed fresh posture, else refused
    rotation      CertificateRenewer: renew at half TTL on an injected clock, fail closed
    revocation    RevocationSet: versioned serials, quarantined IDs, revoked token keys, pushed
    users         UserDirectory: roles, argon2id, TOTP (replay refused), lockout, step-up
    operators     OperatorAuthority: a person behind every change of security state (password+TOTP
                  or a session bound to the machine key, proof per request), step-up, Cedar on the
                  role, audited; SessionIssuer (login/logout); OperatorCache (machine key, 0600)
    tokens        KeyRing/JWKS (key lifecycle: retain window, removal, revocation), TokenIssuer,
                  TokenVerifier (alg pinned per key, every token bound), ReplayCache
    store         IdentityStore protocol + SQLite implementation (I/O)
    plane         IdentityPlane: everything wired to $TRUSTFABRIC_HOME (I/O shell for CLI/demo)
    errors        the exception tree and reason codes
"""
