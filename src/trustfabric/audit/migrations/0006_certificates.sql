-- trustfabric beyond one machine, version 6: every workload certificate issued, whichever replica issued it
-- (the public facts only: serial, identity, lifetime, fingerprint), for `trustfabric ca certs` and revocation.
CREATE TABLE identity_certificates (
    serial TEXT PRIMARY KEY,
    spiffe_id TEXT NOT NULL,
    not_after DOUBLE PRECISION NOT NULL,
    fingerprint TEXT NOT NULL,
    issued_at DOUBLE PRECISION NOT NULL,
    attested BOOLEAN NOT NULL
);
CREATE INDEX identity_certificates_id ON identity_certificates (spiffe_id, issued_at);
