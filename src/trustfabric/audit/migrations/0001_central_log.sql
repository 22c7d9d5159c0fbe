-- trustfabric central audit log on PostgreSQL, version 1: records (the Merkle leaves), signed tree heads.
CREATE TABLE records (
    idx BIGINT PRIMARY KEY,
    source TEXT NOT NULL,
    seq BIGINT NOT NULL,
    leaf_hash BYTEA NOT NULL,
    data BYTEA NOT NULL,
    time_ns BIGINT NOT NULL,
    kind TEXT NOT NULL,
    principal TEXT NOT NULL,
    action TEXT NOT NULL,
    resource TEXT NOT NULL,
    decision TEXT NOT NULL,
    trace_id TEXT NOT NULL,
    UNIQUE (source, seq)
);
CREATE INDEX records_principal ON records (principal, time_ns);
CREATE INDEX records_trace ON records (trace_id);
CREATE INDEX records_time ON records (time_ns);
CREATE TABLE tree_heads (
    tree_size BIGINT NOT NULL,
    timestamp_ns BIGINT NOT NULL,
    root_hash TEXT NOT NULL,
    log_id TEXT NOT NULL,
    signature TEXT NOT NULL,
    PRIMARY KEY (tree_size, timestamp_ns)
);
