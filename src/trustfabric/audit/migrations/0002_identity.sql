-- trustfabric identity store on PostgreSQL, version 2: CAs (key material sealed under the KEK),
-- promoted releases, people (password hashes, TOTP replay step, lockouts), revocations in order,
-- token signing keys (private halves sealed), removed keys (public halves), host keys, settings.
CREATE TABLE identity_cas (
    trust_domain TEXT PRIMARY KEY,
    material BYTEA NOT NULL
);
CREATE TABLE identity_releases (
    trust_domain TEXT NOT NULL,
    digest TEXT NOT NULL,
    name TEXT NOT NULL,
    promoted_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (trust_domain, digest)
);
CREATE TABLE identity_users (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    totp_secret BYTEA NOT NULL,
    failed_attempts INTEGER NOT NULL DEFAULT 0,
    locked_until DOUBLE PRECISION NOT NULL DEFAULT 0,
    totp_last_step BIGINT NOT NULL DEFAULT -1,
    last_mfa_at DOUBLE PRECISION NOT NULL DEFAULT 0
);
CREATE TABLE identity_revocations (
    version BIGSERIAL PRIMARY KEY,
    kind TEXT NOT NULL,
    value TEXT NOT NULL,
    revoked_at DOUBLE PRECISION NOT NULL,
    reason TEXT NOT NULL
);
CREATE TABLE identity_signing_keys (
    kid TEXT PRIMARY KEY,
    private_sealed BYTEA NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    retired_at DOUBLE PRECISION,
    retain_s DOUBLE PRECISION NOT NULL DEFAULT 630
);
CREATE TABLE identity_removed_signing_keys (
    kid TEXT PRIMARY KEY,
    public_pem BYTEA NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    retired_at DOUBLE PRECISION,
    removed_at DOUBLE PRECISION NOT NULL,
    reason TEXT NOT NULL
);
CREATE TABLE identity_host_keys (
    host TEXT PRIMARY KEY,
    public_raw BYTEA NOT NULL
);
CREATE TABLE identity_meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
