-- trustfabric control plane lease, version 3: the one row naming the active control plane of the floor,
-- renewed by it, claimed by a standby once expired (times from the database's clock), epoch a fencing token.
CREATE TABLE control_lease (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    holder TEXT NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL,
    epoch BIGINT NOT NULL
);
