-- trustfabric beyond one machine, version 5: one-time join tokens in the shared store, so that any control-plane
-- replica redeems a token another issued. Only the token's SHA-256 is kept; a redeemed row keeps when it was used.
CREATE TABLE identity_join_tokens (
    token_sha256 TEXT PRIMARY KEY,
    spiffe_id TEXT NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL,
    used_at DOUBLE PRECISION
);
CREATE INDEX identity_join_tokens_expiry ON identity_join_tokens (expires_at);
