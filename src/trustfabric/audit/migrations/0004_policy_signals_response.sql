-- trustfabric beyond one machine, version 4: the signed policy versions (bundles and the version record),
-- the signal state (one row), and the response plane's incidents and alerts, shared by every control plane.
CREATE TABLE policy_bundles (
    version BIGINT PRIMARY KEY,
    data BYTEA NOT NULL
);
CREATE TABLE policy_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    data BYTEA NOT NULL
);
CREATE TABLE signal_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    data BYTEA NOT NULL,
    version BIGINT NOT NULL
);
CREATE TABLE incident (
    incident_id TEXT PRIMARY KEY,
    principal TEXT NOT NULL,
    opened_at DOUBLE PRECISION NOT NULL,
    released INTEGER NOT NULL,
    body BYTEA NOT NULL
);
CREATE INDEX incident_principal ON incident (principal, opened_at);
CREATE TABLE alert (
    alert_id TEXT PRIMARY KEY,
    principal TEXT NOT NULL,
    detected_at DOUBLE PRECISION NOT NULL,
    action TEXT NOT NULL,
    body BYTEA NOT NULL
);
CREATE INDEX alert_time ON alert (detected_at);
