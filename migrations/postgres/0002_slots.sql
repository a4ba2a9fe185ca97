-- Slots: one row per run that ever claimed one (scheduled, manual, API). The key is unique, so
-- a slot is claimed once; the lease (seconds since the epoch, on the database's clock) and the
-- fencing token decide who may commit. Rows are never pruned.
CREATE TABLE slots (
    key           TEXT PRIMARY KEY,
    status        TEXT NOT NULL,
    owner         TEXT NOT NULL,
    token         BIGINT NOT NULL,
    lease_expires DOUBLE PRECISION NOT NULL,
    takeovers     BIGINT NOT NULL DEFAULT 0,
    claimed_at    DOUBLE PRECISION NOT NULL,
    finished_at   DOUBLE PRECISION,
    run_id        TEXT,
    reason        TEXT
);
CREATE INDEX slots_running ON slots (status, lease_expires);
